// The deadlock torture test of writeback (issue #7): a cache of a few dozen
// buckets over a backing (faultfs) that takes a few MiB/s; writer threads
// write random data at random offsets, many times the cache's size in all,
// with fsyncs; readers read files the cache holds, and others stat files
// and read `.overcache`, all at once. It must finish, and after `overcache
// flush` the backing must hold exactly what was written (an in-memory model
// of every file). Variants: writeback paused (writeback_running=0: writes
// must fall back to the backing or wait for space, not hang) and a backing
// that fails (EIO) for a while and recovers; writes that fail while it
// fails are retried, and must not fail once it is back.
//
// Nothing here asserts which way a write went (cache, parked wait or around
// the cache) or how fast. A watchdog ends a hang instead: when any worker
// thread has made no progress for kStall, it prints the stacks of every
// thread of overcache and faultfs (gdb), fails the test and kills both
// daemons, which fails every call still blocked on them.
#include "file_bytes.hpp"
#include "fault_backing.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <mutex>
#include <random>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache::test;
using Clock = std::chrono::steady_clock;

namespace {

// How long a worker may go without finishing an operation before the
// watchdog calls it a hang (OVERCACHE_TORTURE_STALL_S overrides it, e.g. to
// see the watchdog at work by stopping faultfs with SIGSTOP).
std::chrono::seconds stall_limit() {
    const char* s = std::getenv("OVERCACHE_TORTURE_STALL_S");
    return std::chrono::seconds(s && *s ? std::atoi(s) : 60);
}
constexpr std::size_t kFileBytes = 6 << 20; // each writer's file at most
constexpr std::size_t kStaticBytes = 1 << 20;
constexpr int kWriters = 4, kReaders = 2, kStaticFiles = 3;

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
}

int pwrite_all(int fd, const char* data, std::size_t len, off_t off) {
    std::size_t done = 0;
    while (done < len) {
        const ssize_t n = ::pwrite(fd, data + done, len - done, off + static_cast<off_t>(done));
        if (n < 0)
            return errno;
        done += static_cast<std::size_t>(n);
    }
    return 0;
}

void fill_random(std::mt19937_64& rng, char* p, std::size_t n) {
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const std::uint64_t v = rng();
        std::memcpy(p + i, &v, 8);
    }
    for (; i < n; ++i)
        p[i] = static_cast<char>(rng());
}

// Problems seen by worker threads, reported by the test's own thread.
class Failures {
public:
    void add(std::string what) {
        std::lock_guard lk(mu_);
        if (list_.size() < 20)
            list_.push_back(std::move(what));
        any_.store(true);
    }
    bool any() const { return any_.load(); }
    std::vector<std::string> list() const {
        std::lock_guard lk(mu_);
        return list_;
    }

private:
    mutable std::mutex mu_;
    std::vector<std::string> list_;
    std::atomic<bool> any_{false};
};

// A worker's heartbeat: when it last finished an operation, and whether it
// is done (a finished worker cannot stall).
struct Beat {
    std::atomic<std::int64_t> last_ns{now_ns()};
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> ops{0};
    void tick() {
        last_ns.store(now_ns());
        ops.fetch_add(1);
    }
};

bool writers_done(const std::vector<Beat>& beats) {
    for (int w = 0; w < kWriters; ++w)
        if (!beats[static_cast<std::size_t>(w)].done)
            return false;
    return true;
}

// Every thread of `pid`: the kernel's view first (/proc, which cannot
// block), then gdb's. gdb's attach stops each thread, and a thread waiting
// in a FUSE request stops only once that request is answered, so gdb gets
// a deadline.
std::string stacks_of(pid_t pid, const char* what) {
    std::string out = std::string("=== ") + what + " (pid " + std::to_string(pid) + ") ===\n";
    const std::string task = "/proc/" + std::to_string(pid) + "/task";
    if (DIR* d = ::opendir(task.c_str())) {
        while (const dirent* e = ::readdir(d)) {
            if (e->d_name[0] == '.')
                continue;
            const std::string t = task + "/" + e->d_name;
            std::string comm = read_file(t + "/comm");
            if (!comm.empty() && comm.back() == '\n')
                comm.pop_back();
            out += "--- thread " + std::string(e->d_name) + " " + comm + " waiting in " +
                   read_file(t + "/wchan") + "\n" + read_file(t + "/stack");
        }
        ::closedir(d);
    }
    const CommandResult g = run_command(
        {"gdb", "-batch", "-nx", "-p", std::to_string(pid), "-ex", "thread apply all bt"},
        std::chrono::seconds(30));
    out += "--- gdb" + std::string(g.timed_out ? " (timed out)" : "") + ":\n" + g.out;
    return out;
}

struct Variant {
    const char* options; // beyond the common ones
    std::size_t bytes_per_writer;
    std::chrono::seconds fail_for; // the backing fails writes and fsyncs this long first
};

void torture(const Variant& v) {
    require_faultfs();
    // 16 MiB in 512 KiB buckets: 32 buckets. Clean data is reclaimed from 10%
    // free; dirty data is written back at full speed past 10% of the cache.
    FaultMount fm(std::string("cache_mode=writeback,cache_size=16M,bucket_size=512K,"
                              "fill_size=128K,writeback_delay=1,") +
                  v.options);
    Mount& m = fm.mount();
    FaultBacking& b = fm.backing();

    // Files the readers check: written, flushed, then read back once so
    // the cache holds them.
    std::vector<std::string> statics(kStaticFiles);
    {
        std::mt19937_64 rng(1);
        for (int i = 0; i < kStaticFiles; ++i) {
            statics[i].resize(kStaticBytes);
            fill_random(rng, statics[i].data(), kStaticBytes);
            const int fd = ::open(m.mnt("static" + std::to_string(i)).c_str(),
                                  O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            REQUIRE(fd >= 0);
            REQUIRE(pwrite_all(fd, statics[i].data(), kStaticBytes, 0) == 0);
            REQUIRE(::close(fd) == 0);
        }
        const CommandResult r = run_command({std::getenv("OVERCACHE_BIN"), "flush", m.mountpoint()},
                                            std::chrono::seconds(60));
        REQUIRE_MESSAGE(r.status == 0, "flush: " << r.out);
        for (int i = 0; i < kStaticFiles; ++i)
            REQUIRE(read_file(m.mnt("static" + std::to_string(i))) == statics[i]);
    }

    b.throttle_writes(4 << 20);
    b.throttle_reads(16 << 20);
    std::atomic<bool> failing{v.fail_for.count() > 0};
    if (failing)
        b.fail("write,fsync", EIO);

    Failures failures;
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> retries{0}; // calls that failed while the backing failed
    std::vector<Beat> beats(kWriters + kReaders + 1);
    std::vector<std::string> models(kWriters);
    std::vector<std::thread> threads;

    for (int w = 0; w < kWriters; ++w) {
        threads.emplace_back([&, w] {
            Beat& beat = beats[static_cast<std::size_t>(w)];
            std::string& model = models[static_cast<std::size_t>(w)];
            const std::string path = m.mnt("w" + std::to_string(w));
            std::mt19937_64 rng(100 + static_cast<unsigned>(w));
            const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0) {
                failures.add("open " + path + ": " + std::strerror(errno));
                beat.done = true;
                return;
            }
            std::string buf;
            std::size_t written = 0;
            for (int n = 0; written < v.bytes_per_writer && !stop; ++n) {
                const std::size_t len = 4096 + rng() % (512 << 10);
                const std::size_t off = rng() % (kFileBytes - len);
                buf.resize(len);
                fill_random(rng, buf.data(), len);
                // A call that fails while the backing fails is retried,
                // the same bytes at the same place, until it succeeds.
                for (;;) {
                    const bool fault_before = failing;
                    const int err = pwrite_all(fd, buf.data(), len, static_cast<off_t>(off));
                    if (err == 0)
                        break;
                    if (!fault_before && !failing) {
                        failures.add("write " + path + ": " + std::strerror(err));
                        stop = true;
                        break;
                    }
                    if (stop)
                        break;
                    ++retries;
                    std::this_thread::sleep_for(std::chrono::milliseconds(100));
                }
                if (model.size() < off + len)
                    model.resize(off + len, '\0');
                model.replace(off, len, buf);
                written += len;
                beat.tick();
                if (n % 8 == 7) {
                    for (;;) {
                        const bool fault_before = failing;
                        if (::fsync(fd) == 0)
                            break;
                        const int err = errno;
                        if (!fault_before && !failing) {
                            failures.add("fsync " + path + ": " + std::strerror(err));
                            stop = true;
                            break;
                        }
                        if (stop)
                            break;
                        ++retries;
                        std::this_thread::sleep_for(std::chrono::milliseconds(100));
                    }
                    beat.tick();
                }
            }
            if (::close(fd) != 0 && !failing)
                failures.add("close " + path + ": " + std::strerror(errno));
            beat.done = true;
        });
    }
    for (int r = 0; r < kReaders; ++r) {
        threads.emplace_back([&, r] {
            Beat& beat = beats[static_cast<std::size_t>(kWriters + r)];
            for (int n = 0; !stop && !writers_done(beats); ++n) {
                const int i = (n + r) % kStaticFiles;
                const std::string got = read_file(m.mnt("static" + std::to_string(i)));
                if (got != statics[static_cast<std::size_t>(i)]) {
                    failures.add("static" + std::to_string(i) + " read back wrong (" +
                                 std::to_string(got.size()) + " bytes: " + got.substr(0, 80) + ")");
                    stop = true;
                }
                beat.tick();
            }
            beat.done = true;
        });
    }
    threads.emplace_back([&] {
        Beat& beat = beats.back();
        while (!stop && !writers_done(beats)) {
            struct stat st {};
            for (int w = 0; w < kWriters; ++w)
                (void)::stat(m.mnt("w" + std::to_string(w)).c_str(), &st);
            for (int i = 0; i < kStaticFiles; ++i)
                if (::stat(m.mnt("static" + std::to_string(i)).c_str(), &st) != 0 ||
                    static_cast<std::size_t>(st.st_size) != kStaticBytes) {
                    failures.add("stat static" + std::to_string(i) + " wrong");
                    stop = true;
                }
            if (m.stats().count("dirty_data") == 0) {
                failures.add(".overcache has no dirty_data");
                stop = true;
            }
            beat.tick();
        }
        beat.done = true;
    });

    // The watchdog (this thread): recovers the backing on schedule, and
    // ends a hang with the stacks of everyone involved.
    const auto started = Clock::now();
    bool stalled = false;
    for (;;) {
        bool all_done = true;
        for (auto& beat : beats)
            all_done = all_done && beat.done;
        if (all_done)
            break;
        if (failing && Clock::now() - started >= v.fail_for) {
            b.clear();
            b.throttle_writes(4 << 20);
            b.throttle_reads(16 << 20);
            failing = false;
        }
        for (std::size_t i = 0; i < beats.size() && !stalled; ++i) {
            if (beats[i].done)
                continue;
            const auto idle = std::chrono::nanoseconds(now_ns() - beats[i].last_ns.load());
            if (idle < stall_limit())
                continue;
            stalled = true;
            std::fprintf(stderr, "watchdog: worker %zu made no progress for %lld s\n", i,
                         static_cast<long long>(
                             std::chrono::duration_cast<std::chrono::seconds>(idle).count()));
            // faultfs first: its threads wait on the lower filesystem, not
            // on FUSE, so gdb can always stop them.
            std::fprintf(stderr, "%s\n", stacks_of(b.pid(), "faultfs").c_str());
            std::fprintf(stderr, "%s\n", stacks_of(m.daemon_pid(), "overcache").c_str());
            std::fflush(stderr);
            failures.add("watchdog: worker " + std::to_string(i) + " stalled");
            stop = true;
            // Dead daemons fail every call still waiting on them.
            ::kill(m.daemon_pid(), SIGKILL);
            ::kill(b.pid(), SIGKILL);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    for (auto& t : threads)
        t.join();
    for (const auto& f : failures.list())
        FAIL_CHECK(f);
    REQUIRE_FALSE(stalled);
    REQUIRE_FALSE(failures.any());
    MESSAGE("workers finished in "
            << std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started).count()
            << " s; writes_dirty " << m.stat("writes_dirty") << ", writes_around "
            << m.stat("writes_around") << ", writeback_bytes " << m.stat("writeback_bytes")
            << ", writeback_errors " << m.stat("writeback_errors") << ", gc_buckets_moved "
            << m.stat("gc_buckets_moved")
            << ", calls retried while the backing failed " << retries.load());

    const CommandResult r = run_command({std::getenv("OVERCACHE_BIN"), "flush", m.mountpoint()},
                                        std::chrono::seconds(120));
    INFO("overcache flush said: " << r.out);
    REQUIRE(r.status == 0);
    INFO("dirty_files " << m.stat("dirty_files") << ", gc_buckets_moved "
                        << m.stat("gc_buckets_moved"));
    CHECK(m.stat("dirty_data") == 0);
    for (int w = 0; w < kWriters; ++w) {
        const std::string name = "w" + std::to_string(w);
        CHECK_MESSAGE(read_file(b.lower(name)) == models[static_cast<std::size_t>(w)],
                      name << " on the backing differs from what was written");
        CHECK_MESSAGE(read_file(m.mnt(name)) == models[static_cast<std::size_t>(w)],
                      name << " through the mount differs from what was written");
    }
    for (int i = 0; i < kStaticFiles; ++i)
        CHECK(read_file(b.lower("static" + std::to_string(i))) ==
              statics[static_cast<std::size_t>(i)]);
}

} // namespace

TEST_SUITE("writeback_torture") {
    TEST_CASE("torture: writers, readers and stats over a small cache and a slow backing" *
              doctest::timeout(300)) {
        torture({"", 16u << 20, std::chrono::seconds(0)});
    }

    TEST_CASE("torture: with writeback paused, writes fall back instead of hanging" *
              doctest::timeout(300)) {
        torture({"writeback_running=0,writeback_wait_max=1", 8u << 20, std::chrono::seconds(0)});
    }

    TEST_CASE("torture: a backing that fails for a while and then recovers" *
              doctest::timeout(300)) {
        torture({"", 12u << 20, std::chrono::seconds(8)});
    }
}
