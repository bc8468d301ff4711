// The read cache through a real mount: hit after miss, bypass past the
// sequential cutoff, a backing change behind the mount, hits after an
// unmount and after kill -9, a cache smaller than the data, and corrupt bytes
// in the cache file. Stats come from MOUNT/.overcache. Each test starts its
// own daemon over one temporary tree (backing, mountpoint, cache) so it can
// mount the same cache again; every wait has a deadline.
#include "fuse_mount.hpp"
#include "tmp_dir.hpp"

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

using namespace overcache;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;

template <typename Pred> bool wait_until(Pred p, std::chrono::milliseconds limit = 15s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (p())
            return true;
        std::this_thread::sleep_for(20ms);
    }
    return p();
}

std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::string s(n, '\0');
    for (std::size_t i = 0; i + 8 <= n; i += 8) {
        const auto v = rng();
        std::memcpy(s.data() + i, &v, 8);
    }
    return s;
}

void write_file(const std::string& path, const std::string& data) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
    ::fsync(fd);
    ::close(fd);
}

// Reads a whole file through the mount with its page cache dropped before,
// so the reads reach the daemon.
std::string read_uncached(const std::string& path, std::size_t chunk = 128 * KiB) {
    int fd = ::open(path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM); // no readahead beyond what we ask
    std::string out;
    std::string buf(chunk, '\0');
    for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        REQUIRE(n >= 0);
        if (n == 0)
            break;
        out.append(buf.data(), static_cast<std::size_t>(n));
    }
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    return out;
}

// One overcache daemon over a fixed backing, mountpoint and cache, so the
// same cache can be mounted again after an unmount or a kill.
class Daemon {
public:
    Daemon(std::string backing, std::string mnt, std::string options)
        : backing_(std::move(backing)), mnt_(std::move(mnt)), options_(std::move(options)) {}
    ~Daemon() {
        stop();
        end_watchdog();
    }

    void start() {
        std::vector<std::string> args{
            std::getenv("OVERCACHE_BIN"), backing_, mnt_, "-f", "-o", options_};
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        REQUIRE(::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
        const bool up = wait_until([&] {
            int st = 0;
            if (::waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                return true; // exited: reported below
            }
            return test::is_mountpoint(mnt_, nullptr, &minor_);
        });
        REQUIRE_MESSAGE(pid_ > 0, "overcache exited before mounting");
        REQUIRE_MESSAGE(up, "overcache did not mount in time");
        // A daemon that stops answering must not hang the test: past the
        // deadline the connection is aborted and every request fails.
        end_watchdog();
        watchdog_ = std::thread([this, minor = minor_] {
            std::unique_lock lk(wd_mu_);
            if (!wd_cv_.wait_for(lk, 150s, [this] { return wd_done_; })) {
                std::fprintf(stderr, "overcache stopped answering: aborting its connection\n");
                std::ofstream("/sys/fs/fuse/connections/" + std::to_string(minor) + "/abort")
                    << "1";
            }
        });
    }
    // Clean unmount; waits for the daemon to exit (aborting it past a deadline).
    void stop() {
        if (pid_ <= 0)
            return;
        if (::umount2(mnt_.c_str(), 0) != 0)
            ::umount2(mnt_.c_str(), MNT_DETACH);
        if (!reap(15s)) {
            abort_connection();
            ::kill(pid_, SIGKILL);
            reap(5s);
        }
        pid_ = -1;
    }
    // kill -9, then takes the dead mount down.
    void kill9() {
        REQUIRE(pid_ > 0);
        ::kill(pid_, SIGKILL);
        reap(5s);
        pid_ = -1;
        abort_connection();
        ::umount2(mnt_.c_str(), MNT_DETACH);
    }
    std::map<std::string, std::string> stats() const {
        std::ifstream in(mnt_ + "/.overcache");
        std::map<std::string, std::string> m;
        std::string k, v;
        while (in >> k >> v)
            m[k] = v;
        return m;
    }
    std::uint64_t stat(const std::string& key) const {
        auto m = stats();
        auto it = m.find(key);
        REQUIRE_MESSAGE(it != m.end(), "no " << key << " in .overcache");
        return std::stoull(it->second);
    }
    // Waits until the fills queued by earlier reads have reached the cache
    // (the fill counters stop moving and at least `min_fills` happened).
    void settle(std::uint64_t min_fills = 1) const {
        std::uint64_t last = UINT64_MAX;
        wait_until([&] {
            const auto now = stat("fills") + stat("fills_skipped_full") + stat("fills_raced");
            const bool done = now >= min_fills && now == last;
            last = now;
            return done;
        });
    }

private:
    void end_watchdog() {
        if (!watchdog_.joinable())
            return;
        {
            std::lock_guard lk(wd_mu_);
            wd_done_ = true;
        }
        wd_cv_.notify_all();
        watchdog_.join();
        wd_done_ = false;
    }
    bool reap(std::chrono::milliseconds limit) {
        return wait_until(
            [&] {
                int st = 0;
                return ::waitpid(pid_, &st, WNOHANG) == pid_;
            },
            limit);
    }
    void abort_connection() {
        if (minor_ == 0)
            return;
        std::ofstream("/sys/fs/fuse/connections/" + std::to_string(minor_) + "/abort") << "1";
    }

    std::string backing_, mnt_, options_;
    pid_t pid_ = -1;
    unsigned minor_ = 0;
    std::thread watchdog_;
    std::mutex wd_mu_;
    std::condition_variable wd_cv_;
    bool wd_done_ = false; // guarded by wd_mu_
};

struct Tree {
    test::TmpDir tmp{"overcache-cache"};
    std::string backing = tmp / "backing", mnt = tmp / "mnt", cache = tmp / "cache";
    Tree() {
        ::mkdir(backing.c_str(), 0755);
        ::mkdir(mnt.c_str(), 0755);
    }
    std::string opts(const std::string& extra) const {
        return "cache=" + cache + ",cache_size=64M" + (extra.empty() ? "" : "," + extra);
    }
};

void require_daemon() {
    test::require_fuse();
    if (const char* s = std::getenv("OVERCACHE_TEST_STANDIN"); s && *s) {
        std::fprintf(stderr, "cache tests need the daemon; skipping under the stand-in\n");
        std::exit(77);
    }
}

} // namespace

TEST_SUITE("mount") {
    TEST_CASE("a second read is a hit" * doctest::timeout(120)) {
        require_daemon();
        Tree t;
        const auto data = random_bytes(4 * MiB, 1);
        write_file(t.backing + "/f", data);
        Daemon d(t.backing, t.mnt, t.opts("sequential_cutoff=0"));
        d.start();
        CHECK(read_uncached(t.mnt + "/f") == data);
        CHECK(d.stat("cache_misses") > 0);
        // (The first pass may hit already: a miss fills its whole fill_size
        // chunk, which the next read of the chunk can find.)
        CHECK(d.stat("cache_miss_bytes") > 0);
        d.settle();
        const auto misses = d.stat("cache_misses");
        CHECK(read_uncached(t.mnt + "/f") == data);
        CHECK(d.stat("cache_hits") > 0);
        CHECK(d.stat("cache_misses") == misses);
        CHECK(d.stat("cache_hit_bytes") >= 4 * MiB);
        CHECK(d.stat("cache_read_errors") == 0);
    }

    TEST_CASE("a sequential stream past the cutoff bypasses" * doctest::timeout(120)) {
        require_daemon();
        Tree t;
        const auto data = random_bytes(8 * MiB, 2);
        write_file(t.backing + "/f", data);
        Daemon d(t.backing, t.mnt, t.opts("sequential_cutoff=1M"));
        d.start();
        CHECK(read_uncached(t.mnt + "/f") == data);
        CHECK(d.stat("cache_bypass_misses") > 0);
        d.settle();
        CHECK(d.stat("cache_used_bytes") < 4 * MiB); // most of the stream was not cached
        const auto bypass = d.stat("cache_bypass_misses");
        CHECK(read_uncached(t.mnt + "/f") == data);
        CHECK(d.stat("cache_hits") > 0);               // the head of the file
        CHECK(d.stat("cache_bypass_misses") > bypass); // the rest, again
    }

    TEST_CASE("a change behind the mount is seen at the next open" * doctest::timeout(120)) {
        require_daemon();
        Tree t;
        const auto one = random_bytes(1 * MiB, 3), two = random_bytes(1 * MiB, 4);
        write_file(t.backing + "/f", one);
        Daemon d(t.backing, t.mnt, t.opts("sequential_cutoff=0"));
        d.start();
        CHECK(read_uncached(t.mnt + "/f") == one);
        d.settle();
        CHECK(read_uncached(t.mnt + "/f") == one);
        const auto hits = d.stat("cache_hits");
        CHECK(hits > 0);
        // Same size, same mtime (touch -d): only ctime tells.
        struct stat before {};
        REQUIRE(::stat((t.backing + "/f").c_str(), &before) == 0);
        write_file(t.backing + "/f", two);
        const struct timespec ts[2] = {before.st_atim, before.st_mtim};
        REQUIRE(::utimensat(AT_FDCWD, (t.backing + "/f").c_str(), ts, 0) == 0);
        const auto misses = d.stat("cache_misses");
        CHECK(read_uncached(t.mnt + "/f") == two);
        CHECK(d.stat("cache_misses") > misses);
        // A new file under the same name (perhaps the same inode number). The
        // unlink goes through the mount so that the kernel forgets the name
        // (how long it may trust a name is the adapter's business, not the
        // cache's); the new file is made behind the mount.
        struct stat old_st {};
        REQUIRE(::stat((t.backing + "/f").c_str(), &old_st) == 0);
        REQUIRE(::unlink((t.mnt + "/f").c_str()) == 0);
        write_file(t.backing + "/f", one);
        struct stat new_st {};
        REQUIRE(::stat((t.backing + "/f").c_str(), &new_st) == 0);
        const auto got = read_uncached(t.mnt + "/f");
        CHECK_MESSAGE(got == one,
                      std::string(got == two ? "read the unlinked file's bytes" : "other bytes")
                          << " size " << got.size()
                          << "; inode reused: " << (old_st.st_ino == new_st.st_ino));
    }

    TEST_CASE("cached data survives an unmount and a kill -9" * doctest::timeout(180)) {
        require_daemon();
        Tree t;
        const auto data = random_bytes(2 * MiB, 5);
        write_file(t.backing + "/f", data);
        {
            Daemon d(t.backing, t.mnt, t.opts("sequential_cutoff=0"));
            d.start();
            CHECK(read_uncached(t.mnt + "/f") == data);
            d.settle();
            d.stop();
        }
        {
            Daemon d(t.backing, t.mnt, t.opts("sequential_cutoff=0"));
            d.start();
            CHECK(read_uncached(t.mnt + "/f") == data);
            CHECK(d.stat("cache_hits") > 0);
            CHECK(d.stat("cache_misses") == 0);
            // More data, then kill -9 right after it is cached.
            write_file(t.backing + "/g", random_bytes(1 * MiB, 6));
            read_uncached(t.mnt + "/g");
            d.settle();
            d.kill9();
        }
        Daemon d(t.backing, t.mnt, t.opts("sequential_cutoff=0"));
        d.start();
        CHECK(read_uncached(t.mnt + "/f") == data);
        CHECK(read_uncached(t.mnt + "/g") == random_bytes(1 * MiB, 6));
        CHECK(d.stat("cache_hits") > 0);
        CHECK(d.stat("cache_misses") == 0);
        CHECK(d.stat("cache_read_errors") == 0);
    }

    TEST_CASE("a cache smaller than the data stays within its size" * doctest::timeout(300)) {
        require_daemon();
        Tree t;
        const auto data = random_bytes(48 * MiB, 7);
        write_file(t.backing + "/big", data);
        Daemon d(t.backing, t.mnt,
                 "cache=" + t.cache + ",cache_size=16M,bucket_size=1M,sequential_cutoff=0");
        d.start();
        for (int round = 0; round < 3; ++round) {
            CHECK(read_uncached(t.mnt + "/big") == data);
            d.settle();
        }
        CHECK(d.stat("gc_buckets_reclaimed") > 0);
        CHECK(d.stat("cache_used_bytes") <= 16 * MiB);
        CHECK(d.stat("cache_read_errors") == 0);
        struct stat st {};
        REQUIRE(::stat((t.cache + "/data").c_str(), &st) == 0);
        CHECK(static_cast<std::uint64_t>(st.st_size) == 16 * MiB);
        CHECK(static_cast<std::uint64_t>(st.st_blocks) * 512 <= 16 * MiB);
    }

    TEST_CASE("corrupt bytes in the cache file: the right data, the error counted" *
              doctest::timeout(120)) {
        require_daemon();
        Tree t;
        const auto data = random_bytes(2 * MiB, 8);
        write_file(t.backing + "/f", data);
        Daemon d(t.backing, t.mnt, t.opts("sequential_cutoff=0"));
        d.start();
        CHECK(read_uncached(t.mnt + "/f") == data);
        d.settle();
        {
            // Everything past the header bucket: wherever the extents are.
            int fd = ::open((t.cache + "/data").c_str(), O_WRONLY);
            REQUIRE(fd >= 0);
            const std::string junk(8 * MiB, '\x5a');
            REQUIRE(::pwrite(fd, junk.data(), junk.size(), 1 * MiB) ==
                    static_cast<ssize_t>(junk.size()));
            ::close(fd);
        }
        CHECK(read_uncached(t.mnt + "/f") == data);
        CHECK(d.stat("cache_read_errors") > 0);
    }
}
