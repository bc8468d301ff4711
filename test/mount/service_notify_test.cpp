// The daemon under a service manager, started the way the unit
// contrib/systemd/overcache@.service starts it (Type=notify: -f, and
// $NOTIFY_SOCKET naming a datagram socket the manager listens on; here the
// test listens): it says READY=1, with a STATUS= line, once the mount
// answers; on SIGTERM it says STOPPING=1, unmounts and exits 0. Both kinds
// of socket name systemd uses: a path, and "@name" (abstract namespace).
// Its standard error is "the journal" ($JOURNAL_STREAM names it, as systemd
// sets it): lines carry "<N>" priorities, and log_level= picks which come.
// A stop that flushes (flush_on_unmount) asks for more time while the flush
// makes progress (EXTEND_TIMEOUT_USEC), so the unit's stop timeout need not
// fit a long flush.
#include "datagrams.hpp"
#include "fault_backing.hpp"
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "tmp_dir.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <string>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache::test;

namespace {

constexpr auto kDeadline = std::chrono::seconds(20);
constexpr long kFuseMagic = 0x65735546; // FUSE_SUPER_MAGIC

bool is_fuse(const std::string& dir) {
    struct statfs sf {};
    return ::statfs(dir.c_str(), &sf) == 0 && sf.f_type == kFuseMagic;
}

int listen_at(const std::string& name) {
    return bind_datagrams(name);
}

// Datagrams until one holds `line` (as a whole line) or the deadline
// passes; every message received is appended to `seen`.
bool wait_for(int fd, const std::string& line, std::string& seen) {
    return wait_datagram(
        fd,
        [&](const std::string& msg) {
            return ("\n" + msg + "\n").find("\n" + line + "\n") != std::string::npos;
        },
        seen, kDeadline, "\n--\n");
}

// Everything readable from `fd` now (non-blocking).
std::string drain(int fd) {
    std::string out;
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        out.append(buf, static_cast<std::size_t>(n));
    return out;
}

// Waits for `pid` to exit, reading its standard error (`err`) meanwhile
// into `log` so that it never blocks on a full pipe; its exit status, or -1
// (killed, or still alive at the deadline: then it is killed).
int wait_exit(pid_t pid, int err, std::string& log) {
    const auto until = std::chrono::steady_clock::now() + kDeadline;
    int status = 0;
    while (std::chrono::steady_clock::now() < until) {
        log += drain(err);
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            log += drain(err);
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    log += drain(err);
    return -1;
}

// The daemon started as the unit starts it: -f, $NOTIFY_SOCKET naming a
// socket the test listens on, its standard error a pipe named by
// $JOURNAL_STREAM.
struct Service {
    pid_t pid = -1;
    int sock = -1;   // the notify socket
    int err = -1; // read end of the daemon's standard error
};

Service start_service(const std::string& socket_name, const std::string& back,
                      const std::string& mnt, const std::string& opts) {
    Service s;
    s.sock = listen_at(socket_name);
    // Everything the child needs is built before fork().
    const std::string bin = std::getenv("OVERCACHE_BIN");
    int err[2];
    // Only the test's end is non-blocking: the daemon's standard error
    // blocks, as a journal stream does.
    REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
    REQUIRE(::fcntl(err[0], F_SETFL, O_NONBLOCK) == 0);
    struct stat es {};
    REQUIRE(::fstat(err[1], &es) == 0);
    std::vector<std::string> env_store;
    for (char** e = environ; *e != nullptr; ++e)
        if (std::strncmp(*e, "NOTIFY_SOCKET=", 14) != 0 &&
            std::strncmp(*e, "JOURNAL_STREAM=", 15) != 0)
            env_store.emplace_back(*e);
    env_store.push_back("NOTIFY_SOCKET=" + socket_name);
    env_store.push_back("JOURNAL_STREAM=" + std::to_string(es.st_dev) + ":" +
                        std::to_string(es.st_ino));
    std::vector<char*> envp;
    for (auto& e : env_store)
        envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> args_store{bin, back, mnt, "-f", "-o", opts};
    std::vector<char*> argv;
    for (auto& a : args_store)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    s.pid = ::fork();
    REQUIRE(s.pid >= 0);
    if (s.pid == 0) {
        reset_signals_in_child();
        ::dup2(err[1], STDERR_FILENO); // dup2 clears O_CLOEXEC on the copy
        ::execve(bin.c_str(), argv.data(), envp.data());
        ::_exit(127);
    }
    ::close(err[1]);
    s.err = err[0];
    std::string seen;
    if (!wait_for(s.sock, "READY=1", seen)) {
        ::kill(s.pid, SIGKILL);
        ::waitpid(s.pid, nullptr, 0);
        ::umount2(mnt.c_str(), MNT_DETACH);
        FAIL("no READY=1 within the deadline; received: " << seen);
    }
    CHECK_MESSAGE(seen.find("STATUS=serving " + mnt) != std::string::npos, seen);
    // Ready means answering.
    CHECK(is_fuse(mnt));
    return s;
}

// SIGTERM, as systemctl stop sends it: STOPPING=1, a clean exit, no mount
// left. Returns what the daemon wrote to its standard error.
std::string stop_service(Service& s, const std::string& mnt) {
    REQUIRE(::kill(s.pid, SIGTERM) == 0);
    std::string seen;
    CHECK_MESSAGE(wait_for(s.sock, "STOPPING=1", seen), "received: " << seen);
    std::string log;
    const int rc = wait_exit(s.pid, s.err, log);
    CHECK_MESSAGE(rc == 0, "the daemon's standard error:\n" << log);
    CHECK_FALSE(is_fuse(mnt));
    ::close(s.sock);
    ::close(s.err);
    return log;
}

// Returns what the daemon wrote to its standard error.
std::string run_as_service(const std::string& socket_name, const TmpDir& t,
                           const std::string& extra_options = "") {
    const std::string back = t / "back", mnt = t / "mnt";
    REQUIRE(::mkdir(back.c_str(), 0755) == 0);
    REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
    write_file(back + "/hello", "hello\n");
    Service s = start_service(socket_name, back, mnt,
                              "cache=" + (t / "cache") + ",cache_size=64M" + extra_options);
    // The mount serves the backing's file.
    CHECK(read_file(mnt + "/hello") == "hello\n");
    write_file(mnt + "/new", "written through the mount\n");
    CHECK(read_file(back + "/new") == "written through the mount\n");
    for (int i = 0; i < 50; ++i)
        CHECK(read_file(mnt + "/hello") == "hello\n");
    const std::string log = stop_service(s, mnt);
    // Nothing is logged per request at the default level.
    CHECK_MESSAGE(log.find("hello") == std::string::npos, log);
    CHECK_MESSAGE(log.find("/new") == std::string::npos, log);
    return log;
}

} // namespace

TEST_SUITE("mount") {

    TEST_CASE("under a service manager: READY=1 once the mount answers, STOPPING=1 on SIGTERM, "
              "a clean exit" *
              doctest::timeout(120)) {
        require_daemon();
        TmpDir t;
        SUBCASE("a socket path") {
            const std::string log = run_as_service(t / "notify", t);
            CHECK_MESSAGE(log.find("<6>mounted ") != std::string::npos, log);
            CHECK_MESSAGE(log.find("<6>unmounted ") != std::string::npos, log);
            CHECK_MESSAGE(log.find("overcache: info:") == std::string::npos, log);
        }
        SUBCASE("an abstract socket name, log_level=warning") {
            const std::string log = run_as_service(
                "@overcache-test-notify-" + std::to_string(::getpid()), t, ",log_level=warning");
            CHECK_MESSAGE(log.find("<6>") == std::string::npos, log);
        }
    }

    // A file and a directory still open when the service stops: their
    // RELEASEs never reach the daemon (the mount is detached under them).
    // The daemon frees their handles itself, and with them the cache's
    // state for the open file, before the cache stops: under ASan a handle
    // left over is a leak, and the exit status says so.
    TEST_CASE("a stop with files still open frees their handles and exits cleanly" *
              doctest::timeout(120)) {
        require_daemon();
        TmpDir t;
        const std::string back = t / "back", mnt = t / "mnt";
        REQUIRE(::mkdir(back.c_str(), 0755) == 0);
        REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
        write_file(back + "/kept", "kept open\n");
        Service s = start_service(t / "notify", back, mnt,
                                  "cache=" + (t / "cache") + ",cache_size=64M");
        const int file = ::open((mnt + "/kept").c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(file >= 0);
        char buf[16];
        CHECK(::read(file, buf, sizeof buf) == 10);
        const int dir = ::open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        REQUIRE(dir >= 0);
        const std::string log = stop_service(s, mnt);
        INFO(log);
        ::close(file);
        ::close(dir);
    }

    TEST_CASE("a flush at stop asks for more time while it makes progress" *
              doctest::timeout(180)) {
        require_daemon();
        require_faultfs();
        TmpDir t;
        const std::string back = t / "back", mnt = t / "mnt";
        REQUIRE(::mkdir(back.c_str(), 0755) == 0);
        REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
        FaultBacking fb(back);
        // Dirty data stays dirty until the stop flushes it.
        Service s = start_service(t / "notify", back, mnt,
                                  "cache=" + (t / "cache") +
                                      ",cache_size=256M,cache_mode=writeback,flush_on_unmount,"
                                      "writeback_delay=3600");
        // 16 files of 1 MiB (below writeback_percent of the cache) through
        // a backing that takes 2 MiB a second: each file's batch is a step
        // of progress, two a second, for 8 seconds.
        std::vector<std::string> data;
        for (int i = 0; i < 16; ++i) {
            data.push_back(random_bytes(1u << 20, static_cast<unsigned>(i)));
            write_file(mnt + "/f" + std::to_string(i), data.back());
        }
        fb.throttle_writes(2u << 20);
        REQUIRE(::kill(s.pid, SIGTERM) == 0);
        std::string seen;
        CHECK_MESSAGE(wait_for(s.sock, "STOPPING=1", seen), "received: " << seen);
        CHECK_MESSAGE(wait_for(s.sock, "EXTEND_TIMEOUT_USEC=120000000", seen),
                      "received: " << seen);
        CHECK_MESSAGE(seen.find("STATUS=stopping " + mnt + " (writeback)") != std::string::npos,
                      seen);
        CHECK_MESSAGE(seen.find("dirty left to flush") != std::string::npos, seen);
        std::string log;
        const int rc = wait_exit(s.pid, s.err, log);
        CHECK_MESSAGE(rc == 0, "the daemon's standard error:\n" << log);
        CHECK_FALSE(is_fuse(mnt));
        for (int i = 0; i < 16; ++i)
            CHECK(read_file(fb.lower("f" + std::to_string(i))) == data[static_cast<std::size_t>(i)]);
        ::close(s.sock);
        ::close(s.err);
    }
}
