// The overcache command line: refusals (bad options, missing or wrong
// directories) print a message naming the problem, exit non-zero and mount
// nothing; a background mount returns 0 once usable and is unmountable with
// fusermount3 -u and umount; SIGTERM, SIGINT and SIGHUP unmount cleanly
// (every child starts with default signal actions and nothing blocked, so
// this holds under nohup too); the daemon's inode table holds no more than
// the kernel looked up, at least what it must keep, and shrinks back to the
// root when the kernel forgets. Commands written to MOUNT/.overcache (a
// line a command, a bad one refused with EINVAL and its reason readable as
// last_error) and the subcommands that write them (`overcache flush`, `gc`,
// `stats`) work, and refuse what is not an overcache mount without touching
// it. Nothing here drops the machine's caches.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "overcache/config/config.hpp"
#include "tmp_dir.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <grp.h>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache::test;
using Clock = std::chrono::steady_clock;

namespace {

struct RunResult {
    int status = -1; // exit status, or -1 if killed or timed out
    std::string out; // stdout and stderr together
};

std::string bin() {
    return std::getenv("OVERCACHE_BIN");
}

// Whole file through read(2) ("" when it cannot be opened).
// Runs `args` (argv[0] included) with a deadline; output is collected from a
// pipe until every writer has closed it: the command exited and, for a
// background mount, the daemon it left redirected its stdio to /dev/null
// once mounted. No guess from a quiet pipe; past the deadline the output so
// far is returned (and a command still running is killed, status -1).
RunResult run(const std::vector<std::string>& args,
              std::chrono::seconds timeout = std::chrono::seconds(20)) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        reset_signals_in_child();
        ::dup2(p[1], STDOUT_FILENO);
        ::dup2(p[1], STDERR_FILENO);
        std::vector<char*> argv;
        for (const auto& a : args)
            argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execvp(argv[0], argv.data());
        std::_Exit(127);
    }
    ::close(p[1]);
    RunResult r;
    const auto deadline = Clock::now() + timeout;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    bool exited = false;
    bool pipe_open = true;
    while (Clock::now() < deadline && (!exited || pipe_open)) {
        pollfd fds[2] = {{p[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
        const int left = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
        if (::poll(fds, exited ? 1 : 2, std::max(left, 1)) < 0 && errno != EINTR)
            break;
        if ((fds[0].revents & (POLLIN | POLLHUP)) != 0) {
            char buf[4096];
            const ssize_t n = ::read(p[0], buf, sizeof buf);
            if (n > 0)
                r.out.append(buf, static_cast<std::size_t>(n));
            else
                pipe_open = false;
        }
        if (!exited && (fds[1].revents & POLLIN) != 0) {
            int ws = 0;
            if (::waitpid(pid, &ws, WNOHANG) == pid) {
                exited = true;
                r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
            }
        }
    }
    if (!exited) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        r.status = -1;
    }
    ::close(pidfd);
    ::close(p[0]);
    return r;
}

// Waits (deadline) until `pred` holds, re-checking whenever the mount table changes.
template <typename Pred> bool wait_for_mounts(Pred pred, std::chrono::seconds timeout) {
    const int fd = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    const auto deadline = Clock::now() + timeout;
    bool ok = pred();
    while (!ok && Clock::now() < deadline) {
        pollfd f{fd, POLLPRI, 0};
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        ::poll(&f, 1, static_cast<int>(std::max<long>(left.count(), 1)));
        // Re-arm: the event fires once per change until the table is read.
        char buf[4096];
        ::lseek(fd, 0, SEEK_SET);
        while (::read(fd, buf, sizeof buf) > 0) {
        }
        ok = pred();
    }
    ::close(fd);
    return ok;
}

// The daemon serving `mnt`, found by its command line.
pid_t daemon_of(const std::string& mnt) {
    DIR* d = ::opendir("/proc");
    pid_t found = -1;
    while (dirent* e = ::readdir(d)) {
        const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
        if (pid <= 0)
            continue;
        const std::string cmd = read_file("/proc/" + std::string(e->d_name) + "/cmdline");
        if (cmd.find(bin()) == 0 && cmd.find(mnt) != std::string::npos)
            found = pid;
    }
    ::closedir(d);
    return found;
}

bool process_gone(pid_t pid, std::chrono::seconds timeout) {
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0)
        return errno == ESRCH;
    pollfd f{pidfd, POLLIN, 0};
    const int r = ::poll(&f, 1, static_cast<int>(timeout.count() * 1000));
    ::close(pidfd);
    return r == 1;
}

struct Dirs {
    TmpDir tmp{"oc-cli"};
    std::string backing = tmp / "backing";
    std::string mnt = tmp / "mnt";
    std::string cache_opts = "cache=" + (tmp / "cache") + ",cache_size=64M";
    Dirs() {
        require_fuse();
        REQUIRE(::mkdir(backing.c_str(), 0755) == 0);
        REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
    }
    ~Dirs() {
        if (is_mountpoint(mnt)) {
            ::umount2(mnt.c_str(), MNT_DETACH);
        }
    }
};

bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

// One write(2) of `text` to a fresh open of `path` with `flags`: the bytes
// written, or -errno.
long write_once(const std::string& path, const std::string& text, int flags = O_WRONLY | O_TRUNC) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    const ssize_t n = ::write(fd, text.data(), text.size());
    const long out = n < 0 ? -errno : static_cast<long>(n);
    ::close(fd);
    return out;
}

// The value of `key` in the control file's text ("" if missing).
std::string control_value(const std::string& text, const std::string& key) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (line.rfind(key + " ", 0) == 0)
            return line.substr(key.size() + 1);
    return "";
}

} // namespace

TEST_SUITE("mount") {
    TEST_CASE("cli: refusals name the problem, exit non-zero, mount nothing" *
              doctest::timeout(120)) {
        Dirs d;
        struct Case {
            std::vector<std::string> args;
            std::string names;
        };
        const std::string file = d.tmp / "file";
        std::ofstream(file) << "x";
        const std::vector<Case> cases = {
            {{bin(), d.backing, d.mnt, "-o", "nosuchopt"}, "nosuchopt"},
            {{bin(), d.backing, d.mnt, "-o", "attr_timeout=abc"}, "attr_timeout"},
            {{bin(), d.backing, d.mnt, "-o", "max_threads=0"}, "max_threads"},
            {{bin(), d.tmp / "missing", d.mnt}, d.tmp / "missing"},
            {{bin(), file, d.mnt}, file},
            {{bin(), d.backing, d.tmp / "nomnt"}, d.tmp / "nomnt"},
            {{bin(), d.backing, file}, file},
            {{bin(), d.backing, d.mnt, "--bogus"}, "--bogus"},
            {{bin(), d.backing}, "MOUNTPOINT"},
            {{bin(), d.backing, d.mnt, "extra"}, "extra"},
        };
        for (const auto& c : cases) {
            for (bool foreground : {false, true}) {
                auto args = c.args;
                if (foreground)
                    args.emplace_back("-f");
                const RunResult r = run(args);
                INFO("args: " << args[1] << " ... output: " << r.out);
                CHECK(r.status > 0);
                CHECK(contains(r.out, c.names));
                CHECK_FALSE(is_mountpoint(d.mnt));
            }
        }
    }

    TEST_CASE("cli: --help lists every option, --version names the program" *
              doctest::timeout(120)) {
        require_fuse();
        const RunResult h = run({bin(), "--help"});
        CHECK(h.status == 0);
        for (const auto& o : overcache::config::option_table()) {
            INFO("option " << o.name);
            CHECK(contains(h.out, o.name));
        }
        const RunResult v = run({bin(), "--version"});
        CHECK(v.status == 0);
        CHECK(contains(v.out, "overcache"));
    }

    TEST_CASE("cli: a background mount returns once usable; fusermount3 -u and umount end it" *
              doctest::timeout(120)) {
        Dirs d;
        std::ofstream(d.backing + "/hello") << "hello\n";
        for (const char* how : {"fusermount3", "umount"}) {
            const RunResult r = run({bin(), d.backing, d.mnt, "-o", d.cache_opts});
            INFO("output: " << r.out);
            REQUIRE(r.status == 0);
            REQUIRE(is_mountpoint(d.mnt));
            // Usable as soon as the command returned.
            CHECK(read_file(d.mnt + "/hello") == "hello\n");
            CHECK(contains(read_file(d.mnt + "/.overcache"), "inodes "));

            const pid_t daemon = daemon_of(d.mnt);
            CHECK(daemon > 0);
            const RunResult u = std::string(how) == "umount" ? run({"umount", d.mnt})
                                                             : run({"fusermount3", "-u", d.mnt});
            INFO(how << " output: " << u.out);
            CHECK(u.status == 0);
            CHECK(wait_for_mounts([&] { return !is_mountpoint(d.mnt); }, std::chrono::seconds(10)));
            if (daemon > 0)
                CHECK(process_gone(daemon, std::chrono::seconds(10)));
        }
    }

    TEST_CASE("cli: SIGTERM, SIGINT and SIGHUP unmount cleanly, whatever the runner ignores" *
              doctest::timeout(120)) {
        for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
            Dirs d;
            const RunResult r = run({bin(), d.backing, d.mnt, "-o", d.cache_opts});
            REQUIRE(r.status == 0);
            REQUIRE(is_mountpoint(d.mnt));
            const pid_t daemon = daemon_of(d.mnt);
            REQUIRE(daemon > 0);
            INFO("signal " << sig);
            REQUIRE(::kill(daemon, sig) == 0);
            CHECK(process_gone(daemon, std::chrono::seconds(15)));
            CHECK(wait_for_mounts([&] { return !is_mountpoint(d.mnt); }, std::chrono::seconds(5)));
        }
    }

    TEST_CASE("cli: the inode table follows what the kernel holds" * doctest::timeout(120)) {
        // The kernel decides which inodes it keeps; overcache guarantees its
        // table holds exactly the ones the kernel has not forgotten. So: no
        // more than were looked up, at least those the kernel must keep (open
        // files and their directories), and exactly those once the kernel has
        // forgotten the rest. Unlinking through the mount makes the kernel
        // forget an inode as soon as nothing holds it, on this mount only.
        Mount m(MountOptions{.twin = false});
        if (!m.has_daemon())
            return; // the bind stand-in has no inode table
        constexpr long kDirs = 20, kFiles = 100;
        for (long i = 0; i < kDirs; ++i) {
            const std::string dir = m.backing("d" + std::to_string(i));
            REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
            for (long j = 0; j < kFiles; ++j)
                std::ofstream(dir + "/f" + std::to_string(j)) << j;
        }
        auto name = [](long i, long j) {
            return "d" + std::to_string(i) + "/f" + std::to_string(j);
        };
        auto inodes = [&] { return static_cast<long>(m.stat("inodes")); };
        // Forgets reach the daemon after the syscall that caused them has
        // returned, and nothing announces them: read the table size until it
        // is the exact value expected. Below it is a bug at once.
        auto wait_inodes = [&](long expect) {
            const auto deadline = Clock::now() + std::chrono::seconds(30);
            long n = inodes();
            while (n > expect && Clock::now() < deadline) {
                ::poll(nullptr, 0, 5);
                n = inodes();
            }
            return n;
        };
        CHECK(inodes() == 1); // the root; the control file is not in the table

        struct stat st {};
        for (long i = 0; i < kDirs; ++i)
            for (long j = 0; j < kFiles; ++j)
                REQUIRE(::stat(m.mnt(name(i, j)).c_str(), &st) == 0);
        // File 0 of each directory stays open: the kernel cannot forget it,
        // nor its directory.
        std::vector<int> held;
        for (long i = 0; i < kDirs; ++i) {
            held.push_back(::open(m.mnt(name(i, 0)).c_str(), O_RDONLY | O_CLOEXEC));
            REQUIRE(held.back() >= 0);
        }
        const long walked = inodes();
        MESSAGE("inodes after the walk: " << walked << " (the kernel kept the rest)");
        CHECK(walked <= 1 + kDirs + kDirs * kFiles);
        CHECK(walked >= 1 + kDirs + kDirs);

        // Unlink everything through the mount, the open files included.
        for (long i = 0; i < kDirs; ++i) {
            for (long j = 0; j < kFiles; ++j)
                REQUIRE(::unlink(m.mnt(name(i, j)).c_str()) == 0);
            REQUIRE(::rmdir(m.mnt("d" + std::to_string(i)).c_str()) == 0);
        }
        // What is left: the root, the open files and their (removed) directories.
        const long expect_open = 1 + kDirs + kDirs;
        const long after_unlink = wait_inodes(expect_open);
        CHECK_MESSAGE(after_unlink == expect_open, "the kernel holds " << expect_open);
        // The open files still read right, from the daemon.
        for (long i = 0; i < kDirs; ++i) {
            char c = 0;
            CHECK(::pread(held[static_cast<std::size_t>(i)], &c, 1, 0) == 1);
            CHECK(c == '0');
        }
        for (int fd : held)
            ::close(fd);
        const long end = wait_inodes(1);
        CHECK_MESSAGE(end == 1, "the kernel holds only the root");
    }

    TEST_CASE("cli: the control file survives readers closing while their reads are answered" *
              doctest::timeout(120)) {
        // Each reader reads MOUNT/.overcache in small pieces and closes at
        // once, from several threads: RELEASE of one handle arrives while the
        // reply to its last read is still being written. The daemon must
        // answer from memory no RELEASE can free (under ASan a reply from the
        // handle's own text is a use-after-free), and every reader must get
        // a whole, well-formed text.
        Mount m(MountOptions{.twin = false});
        if (!m.has_daemon())
            return;
        const std::string path = m.mnt(".overcache");
        std::atomic<int> bad{0};
        std::vector<std::thread> readers;
        for (int t = 0; t < 4; ++t)
            readers.emplace_back([&] {
                for (int i = 0; i < 400; ++i) {
                    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
                    if (fd < 0) {
                        ++bad;
                        return;
                    }
                    std::string text;
                    char piece[61];
                    ssize_t n = 0;
                    while ((n = ::read(fd, piece, sizeof piece)) > 0)
                        text.append(piece, static_cast<std::size_t>(n));
                    ::close(fd);
                    if (n < 0 || ("\n" + text).find("\ninodes ") == std::string::npos ||
                        text.back() != '\n')
                        ++bad;
                }
            });
        for (auto& r : readers)
            r.join();
        CHECK(bad.load() == 0);
        CHECK(m.stat("inodes") >= 1); // the daemon is still there
    }

    TEST_CASE("control: command lines written to .overcache run, one write(2) each" *
              doctest::timeout(120)) {
        Mount m(MountOptions{.twin = false});
        if (!m.has_daemon())
            return; // the bind stand-in has no control file
        const std::string ctl = m.mnt(".overcache");
        // What `echo flush > .overcache` does: O_WRONLY|O_TRUNC, one line.
        CHECK(write_once(ctl, "flush\n") == 6);
        // A last line without its newline counts; several lines run in order.
        CHECK(write_once(ctl, "flush") == 5);
        CHECK(write_once(ctl, "flush\ngc\n", O_WRONLY | O_APPEND) == 9);
        CHECK(write_once(ctl, "gc\r\n", O_RDWR) == 4);
        CHECK(m.stats().at("last_error") == "-"); // nothing failed
    }

    TEST_CASE("control: gc runs a pass; a bad line changes nothing and shows why" *
              doctest::timeout(120)) {
        Mount m(MountOptions{.twin = false});
        if (!m.has_daemon())
            return; // the bind stand-in has no control file
        const std::string ctl = m.mnt(".overcache");
        const std::uint64_t runs = m.stat("gc_runs");
        CHECK(write_once(ctl, "gc\n") == 3);
        // gc_now() waits for its pass: the count has moved when the write returns.
        const std::uint64_t after_gc = m.stat("gc_runs");
        CHECK(after_gc > runs);

        struct Bad {
            std::string text;
            std::string reason;
        };
        const std::vector<Bad> bad = {
            {"frob\n", "unknown command 'frob'"},
            {"gc\nfrob now\n", "line 2: unknown command 'frob'"},
            {"gc extra\n", "'gc' takes no arguments"},
            {"\n", "empty command line"},
            {"gc\n\ngc\n", "line 2: empty command line"},
        };
        for (const auto& b : bad) {
            INFO("write: " << b.text);
            CHECK(write_once(ctl, b.text) == -EINVAL);
            const std::string text = read_file(ctl);
            CHECK(contains(control_value(text, "last_error"), b.reason));
        }
        // Not even the good lines before a bad one ran.
        CHECK(m.stat("gc_runs") == after_gc);
        // A success clears nothing: the last failure stays readable.
        CHECK(write_once(ctl, "gc\n") == 3);
        CHECK(contains(m.stats().at("last_error"), "line 2: empty command line"));

        // A write the kernel could split is refused whole.
        std::string big;
        while (big.size() <= 64 * 1024)
            big += "gc\n";
        const std::uint64_t before_big = m.stat("gc_runs");
        CHECK(write_once(ctl, big) == -EINVAL);
        CHECK(contains(m.stats().at("last_error"), "bytes a write"));
        CHECK(m.stat("gc_runs") == before_big);
    }

    TEST_CASE("control: readable by everyone, commands only for the mount's owner" *
              doctest::timeout(120)) {
        Mount m(MountOptions{.twin = false});
        if (!m.has_daemon())
            return; // the bind stand-in has no control file
        struct stat st {};
        REQUIRE(::stat(m.mnt(".overcache").c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0644);
        CHECK(st.st_uid == ::geteuid());
        CHECK(st.st_gid == ::getegid());
        CHECK(S_ISREG(st.st_mode));
        // Another user (the root mount allows others): reads, cannot write.
        // The mount's root is opened first, as root, since the test's
        // temporary directory need not be searchable by that user.
        const int root = ::open(m.mountpoint().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
        REQUIRE(root >= 0);
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
                ::setresuid(65534, 65534, 65534) != 0)
                std::_Exit(10);
            const int r = ::openat(root, ".overcache", O_RDONLY | O_CLOEXEC);
            if (r < 0)
                std::_Exit(11);
            char c = 0;
            if (::read(r, &c, 1) != 1)
                std::_Exit(12);
            if (::openat(root, ".overcache", O_WRONLY | O_CLOEXEC) >= 0 || errno != EACCES)
                std::_Exit(13);
            if (::openat(root, ".overcache", O_RDWR | O_CLOEXEC) >= 0 || errno != EACCES)
                std::_Exit(14);
            std::_Exit(0);
        }
        int ws = 0;
        REQUIRE(::waitpid(pid, &ws, 0) == pid);
        ::close(root);
        CHECK(WIFEXITED(ws));
        CHECK_MESSAGE(WEXITSTATUS(ws) == 0, "child step " << WEXITSTATUS(ws) << " failed");
    }

    TEST_CASE("cli: overcache flush, gc and stats talk to a mount" * doctest::timeout(120)) {
        Mount m(MountOptions{.twin = false});
        if (!m.has_daemon())
            return; // the bind stand-in has no control file
        const RunResult f = run({bin(), "flush", m.mountpoint()});
        INFO("flush output: " << f.out);
        CHECK(f.status == 0);
        CHECK(f.out.empty()); // no terminal: no progress line

        const std::uint64_t runs = m.stat("gc_runs");
        const RunResult g = run({bin(), "gc", m.mountpoint()});
        INFO("gc output: " << g.out);
        CHECK(g.status == 0);
        CHECK(m.stat("gc_runs") > runs);

        // A table for people; scripts read the control file's lines.
        const RunResult s = run({bin(), "stats", m.mountpoint()});
        INFO("stats output: " << s.out);
        CHECK(s.status == 0);
        CHECK(contains(s.out, m.mountpoint() + ": "));
        CHECK(contains(s.out, "hit ratio"));
        const std::string raw = read_file(m.mnt(".overcache"));
        CHECK(contains(raw, "\ninodes "));
        CHECK(contains(raw, "\nlast_error "));

        // Usage errors exit 2 and say what is wrong.
        const RunResult none = run({bin(), "flush"});
        CHECK(none.status == 2);
        CHECK(contains(none.out, "missing MOUNTPOINT"));
        const RunResult two = run({bin(), "flush", m.mountpoint(), "extra"});
        CHECK(two.status == 2);
        CHECK(contains(two.out, "extra"));
    }

    TEST_CASE("cli: a mount without a cache answers gc with a clear error" *
              doctest::timeout(120)) {
        Mount m(MountOptions{.options = "cache_mode=none", .twin = false});
        if (!m.has_daemon())
            return; // the bind stand-in has no control file
        CHECK(write_once(m.mnt(".overcache"), "flush\n") == 6);
        CHECK(write_once(m.mnt(".overcache"), "gc\n") == -ENOTSUP);
        CHECK(contains(m.stats().at("last_error"), "no cache"));
        const RunResult g = run({bin(), "gc", m.mountpoint()});
        INFO("output: " << g.out);
        CHECK(g.status == 1);
        CHECK(contains(g.out, "overcache: gc of " + m.mountpoint() + " failed: "));
        CHECK(contains(g.out, "no cache"));
        CHECK(run({bin(), "flush", m.mountpoint()}).status == 0);
    }

    TEST_CASE("cli: flush refuses what is not an overcache mount, and writes nothing there" *
              doctest::timeout(120)) {
        require_fuse();
        const RunResult tmp = run({bin(), "flush", "/tmp"});
        INFO("output: " << tmp.out);
        CHECK(tmp.status == 1);
        CHECK(contains(tmp.out, "overcache: flush of /tmp failed: "));
        CHECK(contains(tmp.out, "not an overcache mount"));

        // A directory holding an ordinary file of the control file's name.
        TmpDir d{"oc-cli"};
        const std::string fake = d / ".overcache";
        std::ofstream(fake) << "inodes 1\n";
        const RunResult r = run({bin(), "flush", d.path()});
        INFO("output: " << r.out);
        CHECK(r.status == 1);
        CHECK(contains(r.out, "not an overcache mount"));
        CHECK(read_file(fake) == "inodes 1\n");

        const RunResult missing = run({bin(), "stats", d / "missing"});
        CHECK(missing.status == 1);
        CHECK(contains(missing.out, d / "missing"));
    }

    TEST_CASE("cli: show-super reads a mounted cache without disturbing it, and after" *
              doctest::timeout(120)) {
        Dirs d;
        const std::string opts = d.cache_opts + ",cache_mode=writeback,writeback_delay=3600";
        RunResult r = run({bin(), d.backing, d.mnt, "-o", opts});
        INFO("mount output: " << r.out);
        REQUIRE(r.status == 0);
        const pid_t daemon = daemon_of(d.mnt);
        std::ofstream(d.mnt + "/dirty") << std::string(8192, 'd');
        const std::string cache_dir = d.tmp / "cache";

        const RunResult mounted = run({bin(), "show-super", cache_dir});
        INFO("show-super while mounted: " << mounted.out);
        CHECK(mounted.status == 0);
        CHECK(control_value(mounted.out, "backing_path") == d.backing);
        CHECK(control_value(mounted.out, "cache_size") == "64M");
        CHECK(control_value(mounted.out, "bucket_size") == "1M");
        CHECK(control_value(mounted.out, "dirty_data") == "8K");
        CHECK(control_value(mounted.out, "in_use_by").rfind(std::to_string(daemon) + " (", 0) == 0);
        // The mount goes on as if nothing had looked.
        CHECK(read_file(d.mnt + "/dirty") == std::string(8192, 'd'));
        CHECK(run({bin(), "flush", d.mnt}).status == 0);

        REQUIRE(run({"fusermount3", "-u", d.mnt}).status == 0);
        CHECK(wait_for_mounts([&] { return !is_mountpoint(d.mnt); }, std::chrono::seconds(10)));
        if (daemon > 0)
            CHECK(process_gone(daemon, std::chrono::seconds(10)));
        const RunResult after = run({bin(), "show-super", cache_dir});
        INFO("show-super after unmount: " << after.out);
        CHECK(after.status == 0);
        CHECK(control_value(after.out, "uuid") == control_value(mounted.out, "uuid"));
        CHECK(control_value(after.out, "dirty_data") == "0");
        CHECK(control_value(after.out, "in_use_by") == "none");

        const RunResult none = run({bin(), "show-super", d.backing});
        CHECK(none.status == 1);
        CHECK(contains(none.out, "is not an overcache cache"));
    }

    TEST_CASE("cli: resize and format an unmounted cache; a mount with another size resizes" *
              doctest::timeout(300)) {
        Dirs d;
        const std::string cache_dir = d.tmp / "cache";
        const std::string wb = ",cache_mode=writeback,writeback_delay=3600";
        auto mount_with = [&](const std::string& size) {
            const RunResult r = run(
                {bin(), d.backing, d.mnt, "-o", "cache=" + cache_dir + ",cache_size=" + size + wb});
            INFO("mount output: " << r.out);
            REQUIRE(r.status == 0);
            return r;
        };
        auto unmount = [&] {
            const pid_t daemon = daemon_of(d.mnt);
            REQUIRE(run({"fusermount3", "-u", d.mnt}).status == 0);
            CHECK(wait_for_mounts([&] { return !is_mountpoint(d.mnt); }, std::chrono::seconds(10)));
            if (daemon > 0)
                CHECK(process_gone(daemon, std::chrono::seconds(10)));
        };
        auto content = [](int i) {
            std::string s(300000 + 4096 * i, '\0');
            for (std::size_t j = 0; j < s.size(); ++j)
                s[j] = static_cast<char>('a' + (i * 7 + j / 1000 + j) % 26);
            return s;
        };
        constexpr int kFiles = 16;
        auto all_read_back = [&] {
            for (int i = 0; i < kFiles; ++i) {
                INFO("file " << i);
                CHECK(read_file(d.mnt + "/f" + std::to_string(i)) == content(i));
            }
        };

        mount_with("64M");
        for (int i = 0; i < kFiles; ++i)
            std::ofstream(d.mnt + "/f" + std::to_string(i)) << content(i);
        all_read_back();
        const RunResult busy = run({bin(), "resize", cache_dir, "32M"});
        CHECK(busy.status == 1);
        CHECK(contains(busy.out, "in use by a mount"));
        unmount();
        const RunResult sup = run({bin(), "show-super", cache_dir});
        const std::string dirty = control_value(sup.out, "dirty_data");
        INFO("dirty after unmount: " << dirty);
        CHECK(dirty != "0"); // writeback_delay keeps it dirty across the unmount

        // format refuses to throw dirty data away, naming how much.
        const RunResult fmt = run({bin(), "format", cache_dir});
        INFO("format: " << fmt.out);
        CHECK(fmt.status == 1);
        CHECK(contains(fmt.out, "dirty data"));
        CHECK(contains(fmt.out, "bytes)"));
        CHECK(contains(fmt.out, "overcache flush"));

        // Shrinking below what the dirty data needs changes nothing.
        const RunResult tiny = run({bin(), "resize", cache_dir, "4M"});
        INFO("resize 4M: " << tiny.out);
        CHECK(tiny.status == 1);
        CHECK(contains(tiny.out, "dirty data"));
        CHECK(control_value(run({bin(), "show-super", cache_dir}).out, "cache_size") == "64M");
        CHECK(run({bin(), "resize", cache_dir, "1M"}).status == 1); // fewer than 3 buckets
        CHECK(run({bin(), "resize", cache_dir, "lots"}).status == 2);

        const RunResult smaller = run({bin(), "resize", cache_dir, "16M"});
        INFO("resize 16M: " << smaller.out);
        CHECK(smaller.status == 0);
        CHECK(contains(smaller.out, "cache_size 64M -> 16M"));
        const RunResult larger = run({bin(), "resize", cache_dir, "32M"});
        INFO("resize 32M: " << larger.out);
        CHECK(larger.status == 0);
        CHECK(contains(larger.out, "cache_size 16M -> 32M"));
        const RunResult s2 = run({bin(), "show-super", cache_dir});
        CHECK(control_value(s2.out, "cache_size") == "32M");
        CHECK(control_value(s2.out, "dirty_data") == dirty);

        mount_with("32M");
        all_read_back();
        unmount();

        // A mount with another cache_size resizes instead of refusing.
        mount_with("48M");
        CHECK(control_value(run({bin(), "show-super", cache_dir}).out, "cache_size") == "48M");
        all_read_back();
        CHECK(run({bin(), "flush", d.mnt}).status == 0);
        unmount();
        for (int i = 0; i < kFiles; ++i) // flushed: the backing has every byte
            CHECK(read_file(d.backing + "/f" + std::to_string(i)) == content(i));

        // Clean now: format starts an empty cache that stays this backing's.
        const RunResult fmt2 = run({bin(), "format", cache_dir, "--size=16M"});
        INFO("format again: " << fmt2.out);
        CHECK(fmt2.status == 0);
        const RunResult s3 = run({bin(), "show-super", cache_dir});
        CHECK(control_value(s3.out, "cache_size") == "16M");
        CHECK(control_value(s3.out, "buckets_in_use") == "0");
        mount_with("16M");
        all_read_back();
        unmount();

        // A new cache in an empty directory; a directory of other files is refused.
        const RunResult fresh =
            run({bin(), "format", d.tmp / "fresh", "--size=8M", "--bucket-size=64K"});
        INFO("format fresh: " << fresh.out);
        CHECK(fresh.status == 0);
        CHECK(control_value(run({bin(), "show-super", d.tmp / "fresh"}).out, "bucket_size") ==
              "64K");
        const RunResult other = run({bin(), "format", d.backing});
        CHECK(other.status == 1);
        CHECK(contains(other.out, "other files"));
    }

    TEST_CASE("cli: resize moves dirty data from the buckets it cuts into freed ones below" *
              doctest::timeout(180)) {
        Dirs d;
        const std::string cache_dir = d.tmp / "cache";
        const std::string opts =
            "cache=" + cache_dir + ",cache_size=64M,cache_mode=writeback,writeback_delay=3600";
        auto content = [](int i) {
            std::string s(400000, '\0');
            for (std::size_t j = 0; j < s.size(); ++j)
                s[j] = static_cast<char>((i * 131 + j * 7 + j / 4096) & 0xff);
            return s;
        };
        RunResult r = run({bin(), d.backing, d.mnt, "-o", opts});
        INFO("mount output: " << r.out);
        REQUIRE(r.status == 0);
        for (int i = 0; i < 12; ++i)
            std::ofstream(d.mnt + "/f" + std::to_string(i)) << content(i);
        // Dropping the first files empties the first buckets; gc frees them.
        for (int i = 0; i < 5; ++i)
            REQUIRE(::unlink((d.mnt + "/f" + std::to_string(i)).c_str()) == 0);
        CHECK(run({bin(), "gc", d.mnt}).status == 0);
        pid_t daemon = daemon_of(d.mnt);
        REQUIRE(run({"fusermount3", "-u", d.mnt}).status == 0);
        if (daemon > 0)
            CHECK(process_gone(daemon, std::chrono::seconds(10)));

        // Where the allocator put each file is its business: the resize
        // either moves what it cuts, or refuses and changes nothing.
        const RunResult rs = run({bin(), "resize", cache_dir, "6M"});
        MESSAGE("resize 6M: " << rs.out);
        const std::string size =
            control_value(run({bin(), "show-super", cache_dir}).out, "cache_size");
        if (rs.status == 0) {
            CHECK(size == "6M");
        } else {
            CHECK(rs.status == 1);
            CHECK(contains(rs.out, "dirty data"));
            CHECK(size == "64M");
        }
        r = run({bin(), d.backing, d.mnt, "-o",
                 "cache=" + cache_dir + ",cache_mode=writeback,writeback_delay=3600"});
        REQUIRE(r.status == 0);
        for (int i = 5; i < 12; ++i)
            CHECK(read_file(d.mnt + "/f" + std::to_string(i)) == content(i));
        CHECK(run({bin(), "flush", d.mnt}).status == 0);
        daemon = daemon_of(d.mnt);
        REQUIRE(run({"fusermount3", "-u", d.mnt}).status == 0);
        if (daemon > 0)
            CHECK(process_gone(daemon, std::chrono::seconds(10)));
        for (int i = 5; i < 12; ++i) // written back from where the resize put it
            CHECK(read_file(d.backing + "/f" + std::to_string(i)) == content(i));
    }

    TEST_CASE("cli: fsck finds a cache with dirty data clean, refuses it mounted, changes nothing" *
              doctest::timeout(180)) {
        Dirs d;
        const std::string cache_dir = d.tmp / "cache";
        const std::string opts =
            "cache=" + cache_dir + ",cache_size=32M,cache_mode=writeback,writeback_delay=3600";
        auto content = [](int i) {
            std::string s(200000 + 5000 * i, '\0');
            for (std::size_t j = 0; j < s.size(); ++j)
                s[j] = static_cast<char>((i * 17 + j * 3 + j / 4096) & 0xff);
            return s;
        };
        auto unmount = [&] {
            const pid_t daemon = daemon_of(d.mnt);
            REQUIRE(run({"fusermount3", "-u", d.mnt}).status == 0);
            CHECK(wait_for_mounts([&] { return !is_mountpoint(d.mnt); }, std::chrono::seconds(10)));
            if (daemon > 0)
                CHECK(process_gone(daemon, std::chrono::seconds(10)));
        };
        RunResult r = run({bin(), d.backing, d.mnt, "-o", opts});
        INFO("mount output: " << r.out);
        REQUIRE(r.status == 0);
        for (int i = 0; i < 6; ++i)
            std::ofstream(d.mnt + "/f" + std::to_string(i)) << content(i);

        const pid_t daemon = daemon_of(d.mnt);
        const RunResult busy = run({bin(), "fsck", cache_dir});
        INFO("fsck while mounted: " << busy.out);
        CHECK(busy.status == 8);
        CHECK(contains(busy.out, "in use by a mount"));
        if (daemon > 0)
            CHECK(contains(busy.out, "process " + std::to_string(daemon)));
        unmount();
        CHECK(control_value(run({bin(), "show-super", cache_dir}).out, "dirty_data") != "0");

        const RunResult ok = run({bin(), "fsck", cache_dir});
        INFO("fsck: " << ok.out);
        CHECK(ok.status == 0);
        CHECK(contains(ok.out, "\nclean\n"));
        CHECK(contains(ok.out, "dirty data failing checksums"));
        const RunResult rep = run({bin(), "fsck", "--repair", cache_dir});
        INFO("fsck --repair: " << rep.out);
        CHECK(rep.status == 0);
        CHECK(run({bin(), "fsck"}).status == 2);
        CHECK(run({bin(), "fsck", d.tmp / "nothing"}).status == 8);
        const RunResult help = run({bin(), "fsck", "--help"});
        CHECK(help.status == 0);
        CHECK(contains(help.out, "--repair"));

        r = run({bin(), d.backing, d.mnt, "-o", opts});
        REQUIRE(r.status == 0);
        for (int i = 0; i < 6; ++i)
            CHECK(read_file(d.mnt + "/f" + std::to_string(i)) == content(i));
        CHECK(run({bin(), "flush", d.mnt}).status == 0);
        unmount();
        for (int i = 0; i < 6; ++i)
            CHECK(read_file(d.backing + "/f" + std::to_string(i)) == content(i));
    }

    TEST_CASE("cli: --help lists the subcommands" * doctest::timeout(60)) {
        require_fuse();
        const RunResult h = run({bin(), "--help"});
        CHECK(h.status == 0);
        for (const char* sc :
             {"flush MOUNTPOINT", "gc MOUNTPOINT", "stats MOUNTPOINT", "show-super CACHEDIR",
              "resize CACHEDIR SIZE", "format CACHEDIR", "fsck CACHEDIR"})
            CHECK(contains(h.out, sc));
        const RunResult f = run({bin(), "flush", "--help"});
        CHECK(f.status == 0);
        CHECK(contains(f.out, "usage: overcache flush MOUNTPOINT"));
    }
}
