// Backing faults under cache_mode=writeback, through faultfs: while the
// backing fails writes or syncs (EIO, ENOSPC, EACCES, EROFS), writes
// through the mount still succeed, the data stays dirty, the failure shows
// in `.overcache` (writeback_errors, last_writeback_error) and in the log
// at a rate that does not flood it, and `overcache flush` fails saying why;
// once the fault clears, a flush succeeds and the backing holds exactly what
// was written. A file deleted from the backing behind the mount keeps its
// dirty data as a conflict copy; a throttled backing only makes things
// slower, and `overcache flush` on a terminal says meanwhile how much is
// left (nothing on a pipe). The first cases check faultfs itself.
#include "fault_backing.hpp"
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"
#include "tmp_dir.hpp"
#include "wait_until.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <functional>
#include <poll.h>
#include <pty.h>
#include <random>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache::test;
using Clock = std::chrono::steady_clock;

namespace {

// 0 or the errno of a pwrite that did not write everything.
int pwrite_all(int fd, const std::string& data, off_t off) {
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n =
            ::pwrite(fd, data.data() + done, data.size() - done, off + static_cast<off_t>(done));
        if (n < 0)
            return errno;
        done += static_cast<std::size_t>(n);
    }
    return 0;
}

CommandResult overcache_flush(const Mount& m) {
    return run_command({std::getenv("OVERCACHE_BIN"), "flush", m.mountpoint()},
                       std::chrono::seconds(120));
}

// `overcache flush` with its stdout and stderr on a terminal (a pty), as a
// user at a shell runs it: everything it printed, and its exit status (-1:
// killed at the deadline).
CommandResult overcache_flush_on_terminal(const Mount& m, std::chrono::seconds timeout) {
    int master = -1;
    const pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
    REQUIRE(pid >= 0);
    if (pid == 0) {
        reset_signals_in_child();
        const std::string bin = std::getenv("OVERCACHE_BIN");
        ::execl(bin.c_str(), bin.c_str(), "flush", m.mountpoint().c_str(), nullptr);
        std::_Exit(127);
    }
    CommandResult r;
    const auto deadline = Clock::now() + timeout;
    char buf[4096];
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            r.timed_out = true;
            ::kill(pid, SIGKILL);
            break;
        }
        struct pollfd pfd {
            master, POLLIN, 0
        };
        if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
            continue;
        const ssize_t n = ::read(master, buf, sizeof buf);
        if (n <= 0)
            break; // EIO: every holder of the terminal's other side is gone
        r.out.append(buf, static_cast<std::size_t>(n));
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(master);
    r.status = !r.timed_out && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

std::size_t count_lines_with(const std::string& text, const std::string& part) {
    std::size_t n = 0, at = 0;
    while (at < text.size()) {
        std::size_t end = text.find('\n', at);
        if (end == std::string::npos)
            end = text.size();
        if (text.substr(at, end - at).find(part) != std::string::npos)
            ++n;
        at = end + 1;
    }
    return n;
}

// Files written at random offsets with random data, and what each must
// hold afterwards.
struct Model {
    std::vector<std::string> names;
    std::vector<std::string> data;
};

// `writes` random writes (4 KiB to 256 KiB, anywhere in the first 4 MiB)
// into each of `fds`, then an fsync of each; everything must succeed.
void write_randomly(std::mt19937_64& rng, const std::vector<int>& fds, Model& model, int writes) {
    for (std::size_t f = 0; f < fds.size(); ++f) {
        for (int i = 0; i < writes; ++i) {
            const std::size_t len = 4096 + rng() % (256 << 10);
            const std::size_t off = rng() % (4 << 20);
            const std::string bytes = random_bytes(rng, len);
            REQUIRE_MESSAGE(pwrite_all(fds[f], bytes, static_cast<off_t>(off)) == 0,
                            "write through the mount: " << std::strerror(errno));
            std::string& d = model.data[f];
            if (d.size() < off + len)
                d.resize(off + len, '\0');
            d.replace(off, len, bytes);
        }
        CHECK_MESSAGE(::fsync(fds[f]) == 0, "fsync through the mount: " << std::strerror(errno));
    }
}

struct FaultCase {
    const char* name;
    const char* classes; // faultfs operation classes that fail
    int err;
};

} // namespace

TEST_SUITE("faultfs") {
    TEST_CASE("faultfs: passes through, fails chosen calls with the chosen errno, and recovers" *
              doctest::timeout(60)) {
        require_faultfs();
        TmpDir dir("faultfs-self");
        const std::string mnt = dir / "mnt";
        REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
        FaultBacking b(mnt);
        const std::string f = mnt + "/f";

        int fd = ::open(f.c_str(), O_RDWR | O_CREAT, 0640);
        REQUIRE(fd >= 0);
        REQUIRE(pwrite_all(fd, "hello", 0) == 0);
        CHECK(read_file(b.lower("f")) == "hello");
        struct stat st {};
        REQUIRE(::stat(b.lower("f").c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0640);

        b.fail("write", EIO);
        CHECK(::pwrite(fd, "x", 1, 0) == -1);
        CHECK(errno == EIO);
        CHECK(::fsync(fd) == 0); // only writes fail
        b.fail("write", 0);
        b.fail("fsync", ENOSPC);
        CHECK(pwrite_all(fd, "H", 0) == 0);
        CHECK(::fsync(fd) == -1);
        CHECK(errno == ENOSPC);
        b.fail("truncate", EROFS);
        CHECK(::ftruncate(fd, 1) == -1);
        CHECK(errno == EROFS);
        CHECK(::truncate(f.c_str(), 1) == -1);
        b.fail("open", EACCES);
        CHECK(::open(f.c_str(), O_WRONLY) == -1);
        CHECK(errno == EACCES);
        CHECK(::open((mnt + "/g").c_str(), O_WRONLY | O_CREAT, 0644) == -1);
        CHECK(errno == EACCES);
        const int rd = ::open(f.c_str(), O_RDONLY);
        CHECK(rd >= 0); // opening for reading is a lookup, not an open-for-write
        if (rd >= 0)
            ::close(rd);
        b.fail("all", ESTALE);
        CHECK(::stat(f.c_str(), &st) == -1);
        CHECK(errno == ESTALE);
        b.clear();
        CHECK(::fsync(fd) == 0);
        CHECK(::ftruncate(fd, 5) == 0);
        CHECK(read_file(f) == "Hello");
        ::close(fd);

        // A stopped faultfs blocks calls; they finish once it runs again.
        b.pause();
        std::string seen;
        std::thread reader([&] { seen = read_file(f); });
        b.resume();
        reader.join();
        CHECK(seen == "Hello");
        b.stop();
    }

    TEST_CASE("faultfs: a throttled backing moves no more bytes a second than asked" *
              doctest::timeout(60)) {
        require_faultfs();
        TmpDir dir("faultfs-self");
        const std::string mnt = dir / "mnt";
        REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
        FaultBacking b(mnt);
        b.throttle_writes(1 << 20);
        const int fd = ::open((mnt + "/f").c_str(), O_RDWR | O_CREAT, 0644);
        REQUIRE(fd >= 0);
        const std::string data(2 << 20, 'x');
        const auto t0 = Clock::now();
        REQUIRE(pwrite_all(fd, data, 0) == 0);
        // A lower bound is what a throttle guarantees: 2 MiB at 1 MiB/s
        // cannot take much under 2 s (the first write's slot ends after it).
        CHECK(Clock::now() - t0 >= std::chrono::milliseconds(1500));
        ::close(fd);
        CHECK(read_file(b.lower("f")) == data);
    }
}

TEST_SUITE("writeback_fault") {
    TEST_CASE("writeback: a failing backing keeps the data dirty until the fault clears" *
              doctest::timeout(300)) {
        require_faultfs();
        const FaultCase cases[] = {
            {"EIO on writes", "write", EIO},
            {"ENOSPC on writes", "write", ENOSPC},
            {"EIO on fsync only", "fsync", EIO},
            {"EACCES on opens for writing and writes", "open,write", EACCES},
            {"EROFS on every change", "open,write,truncate,fsync,meta", EROFS},
        };
        // Each also with the kernel's writeback cache, where the mtime of
        // the writes comes in a setattr that must not go to the failing
        // backing either (else fsync fails with the data safe in the cache).
        std::vector<std::pair<FaultCase, bool>> variants;
        for (const bool kcache : {false, true})
            for (const FaultCase& c : cases)
                variants.emplace_back(c, kcache);
        for (const auto& [c, kcache] : variants) {
            const std::string name =
                std::string(c.name) + (kcache ? ", kernel_writeback_cache=1" : "");
            SUBCASE(name.c_str()) {
                // writeback_delay=0: writeback tries at once, so errors show soon.
                FaultMount fm(std::string("cache_mode=writeback,writeback_delay=0,cache_size=64M") +
                              (kcache ? ",kernel_writeback_cache=1" : ""));
                Mount& m = fm.mount();
                FaultBacking& b = fm.backing();
                std::mt19937_64 rng(42);
                Model model;
                std::vector<int> fds;
                // Made before the fault: metadata goes to the backing first.
                for (int i = 0; i < 3; ++i) {
                    model.names.push_back("f" + std::to_string(i));
                    model.data.emplace_back();
                    const int fd = ::open(m.mnt(model.names.back()).c_str(),
                                          O_RDWR | O_CREAT | O_CLOEXEC, 0644);
                    REQUIRE(fd >= 0);
                    fds.push_back(fd);
                }
                b.fail(c.classes, c.err);
                write_randomly(rng, fds, model, 24);
                for (int fd : fds)
                    CHECK(::close(fd) == 0);
                for (std::size_t i = 0; i < model.names.size(); ++i)
                    CHECK_MESSAGE(read_file(m.mnt(model.names[i])) == model.data[i],
                                  model.names[i] << " through the mount");

                const std::string why = std::strerror(c.err);
                REQUIRE_MESSAGE(wait_until([&] { return m.stat("writeback_errors") >= 1; },
                                           std::chrono::seconds(60)),
                                "no writeback error counted while the backing fails with " << why);
                CHECK(m.stat("dirty_data") > 0);
                CHECK_MESSAGE(contains(m.stats()["last_writeback_error"], why),
                              "last_writeback_error: " << m.stats()["last_writeback_error"]);

                // Each flush tries every dirty file at once (no backoff) and fails.
                const std::uint64_t errors_before = m.stat("writeback_errors");
                for (int i = 0; i < 4; ++i) {
                    const CommandResult r = overcache_flush(m);
                    INFO("overcache flush said: " << r.out);
                    CHECK(r.status == 1);
                    CHECK(contains(r.out, "flush of " + m.mountpoint() + " failed"));
                    CHECK(contains(r.out, why));
                }
                CHECK(m.stat("writeback_errors") >= errors_before + 4);
                CHECK(m.stat("dirty_data") > 0);
                // Errors are counted each time but logged at most once a
                // minute (a second line may name the ones in between).
                const std::string log = fm.log();
                INFO("log:\n" << log);
                CHECK(count_lines_with(log, "writeback: ") <= 2);

                b.clear();
                const CommandResult r = overcache_flush(m);
                INFO("overcache flush said: " << r.out);
                CHECK(r.status == 0);
                CHECK(m.stat("dirty_data") == 0);
                for (std::size_t i = 0; i < model.names.size(); ++i)
                    CHECK_MESSAGE(read_file(b.lower(model.names[i])) == model.data[i],
                                  model.names[i] << " on the backing");
            }
        }
    }

    TEST_CASE("writeback: a throttled backing holds everything after a flush" *
              doctest::timeout(300)) {
        require_faultfs();
        FaultMount fm("cache_mode=writeback,writeback_delay=0,cache_size=64M");
        Mount& m = fm.mount();
        FaultBacking& b = fm.backing();
        b.throttle_writes(2 << 20);
        b.delay("write,fsync", 5);
        std::mt19937_64 rng(7);
        Model model;
        std::vector<int> fds;
        for (int i = 0; i < 3; ++i) {
            model.names.push_back("slow" + std::to_string(i));
            model.data.emplace_back();
            const int fd =
                ::open(m.mnt(model.names.back()).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            REQUIRE(fd >= 0);
            fds.push_back(fd);
        }
        write_randomly(rng, fds, model, 16);
        for (int fd : fds)
            CHECK(::close(fd) == 0);
        const CommandResult r = overcache_flush(m);
        INFO("overcache flush said: " << r.out);
        CHECK(r.status == 0);
        CHECK(m.stat("dirty_data") == 0);
        CHECK(m.stat("writeback_errors") == 0);
        for (std::size_t i = 0; i < model.names.size(); ++i)
            CHECK_MESSAGE(read_file(b.lower(model.names[i])) == model.data[i],
                          model.names[i] << " on the backing");
    }

    TEST_CASE("writeback: overcache flush on a terminal shows the dirty data left and the time, "
              "then clears its line" *
              doctest::timeout(300)) {
        require_faultfs();
        FaultMount fm("cache_mode=writeback,writeback_delay=0,cache_size=64M");
        Mount& m = fm.mount();
        FaultBacking& b = fm.backing();
        // Too little to time anything, but the flush lasts some seconds,
        // and the line is drawn once a second.
        b.throttle_writes(1 << 20);
        const std::string data(6 << 20, 'p');
        const int fd = ::open(m.mnt("big").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        REQUIRE(pwrite_all(fd, data, 0) == 0);
        REQUIRE(::close(fd) == 0);
        REQUIRE(m.stat("dirty_data") > 0);

        const CommandResult r = overcache_flush_on_terminal(m, std::chrono::seconds(120));
        INFO("overcache flush on a terminal printed: " << r.out);
        CHECK(r.status == 0);
        CHECK(m.stat("dirty_data") == 0);
        CHECK(read_file(b.lower("big")) == data);
        // Drawn at least once, with what the mount still held: a line
        // "overcache: flushing MNT: N MiB dirty, S s", redrawn in place.
        const std::string line = "overcache: flushing " + m.mountpoint() + ": ";
        const std::size_t first = r.out.find("\r\033[K" + line);
        REQUIRE(first != std::string::npos);
        CHECK(contains(r.out.substr(first), " MiB dirty, 1 s"));
        // Once done the line is erased, and nothing follows: a flush that
        // succeeded leaves the terminal as it found it.
        const std::string erase = "\r\033[K";
        REQUIRE(r.out.size() >= erase.size());
        CHECK(r.out.substr(r.out.size() - erase.size()) == erase);
        CHECK(r.out.find('\n') == std::string::npos);

        // Not on a terminal (a pipe, a log): no progress line at all.
        const int fd2 = ::open(m.mnt("small").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        REQUIRE(fd2 >= 0);
        REQUIRE(pwrite_all(fd2, std::string(3 << 20, 'q'), 0) == 0);
        REQUIRE(::close(fd2) == 0);
        const CommandResult piped = overcache_flush(m);
        CHECK(piped.status == 0);
        CHECK(piped.out.empty());
        CHECK(m.stat("dirty_data") == 0);
    }

    TEST_CASE("writeback: a file deleted from the backing keeps its dirty data as a conflict copy" *
              doctest::timeout(120)) {
        require_faultfs();
        // writeback_running=0: nothing goes out before the file is deleted.
        FaultMount fm("cache_mode=writeback,writeback_running=0,cache_size=64M");
        Mount& m = fm.mount();
        FaultBacking& b = fm.backing();
        const std::string data(300000, 'd');
        {
            const int fd = ::open(m.mnt("gone").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            REQUIRE(fd >= 0);
            REQUIRE(pwrite_all(fd, data, 0) == 0);
            CHECK(::fsync(fd) == 0);
            CHECK(::close(fd) == 0);
        }
        REQUIRE(m.stat("dirty_data") > 0);
        REQUIRE(::unlink(b.lower("gone").c_str()) == 0);
        const CommandResult r = overcache_flush(m);
        INFO("overcache flush said: " << r.out);
        CHECK(r.status == 0);
        CHECK(m.stat("dirty_data") == 0);
        CHECK(m.stat("writeback_conflicts") == 1);
        // The copy is under the cache's lost+found, holding what was written.
        const std::string lf = m.cache_dir() + "/lost+found";
        std::vector<std::string> copies;
        if (DIR* d = ::opendir(lf.c_str())) {
            while (const dirent* e = ::readdir(d))
                if (e->d_name[0] != '.')
                    copies.emplace_back(lf + "/" + e->d_name);
            ::closedir(d);
        }
        REQUIRE(copies.size() == 1);
        CHECK(read_file(copies[0]) == data);
        CHECK(contains(fm.log(), "saved as"));
    }
}
