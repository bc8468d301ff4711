// The congestion bypass (congested_read_threshold_us,
// congested_write_threshold_us) through a real mount whose cache directory
// is on faultfs, so that the cache device can be slowed on demand (a delay
// on faultfs' read or write calls): while it is slow, read misses go to the
// backing without filling and writes go around the cache, with the data
// always right; once it is fast again caching resumes; 0 never bypasses;
// writeback's dirty data stays in the cache and reaches the backing.
// Every wait is bounded and polls the mount's own state.
#include "fault_backing.hpp"
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "tmp_dir.hpp"
#include "wait_until.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <functional>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace overcache::test;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;
constexpr std::size_t kChunk = 64 * KiB;
// The tests' threshold is 1000 us; the device is slowed until its estimate
// is well past it, so that its decay (it halves every quarter second
// without I/O) cannot bring it back under during the next few calls.
constexpr std::uint64_t kWellPast = 20000;

// An overcache mount whose cache directory (index and data file) lives on
// a faultfs mount of its own; the backing is a plain directory.
class SlowCacheMount {
public:
    explicit SlowCacheMount(const std::string& options) : dir_("overcache-congest") {
        require_faultfs();
        const std::string fast = dir_ / "fast";
        REQUIRE(::mkdir(fast.c_str(), 0755) == 0);
        fast_ = std::make_unique<FaultBacking>(fast);
        mount_ = std::make_unique<Mount>(MountOptions{
            .options = "cache=" + fast + "/cache,cache_size=64M," + options,
            .twin = false,
            .congestion = true});
    }
    SlowCacheMount(const SlowCacheMount&) = delete;
    SlowCacheMount& operator=(const SlowCacheMount&) = delete;
    ~SlowCacheMount() {
        fast_->clear();
        mount_.reset(); // overcache first: its cache is on faultfs
        fast_.reset();
    }
    Mount& m() { return *mount_; }
    FaultBacking& cache_fs() { return *fast_; }

private:
    TmpDir dir_;
    std::unique_ptr<FaultBacking> fast_;
    std::unique_ptr<Mount> mount_;
};

// [off, off + len) of the open file, its page cache dropped before and
// after, so that the read reaches the daemon.
std::string pread_fresh(int fd, off_t off, std::size_t len) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    std::string buf(len, '\0');
    std::size_t done = 0;
    while (done < len) {
        const ssize_t n =
            ::pread(fd, buf.data() + done, len - done, off + static_cast<off_t>(done));
        REQUIRE_MESSAGE(n >= 0, "pread: " << std::strerror(errno));
        if (n == 0)
            break;
        done += static_cast<std::size_t>(n);
    }
    buf.resize(done);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return buf;
}

void pwrite_all(const std::string& path, const std::string& data, off_t off) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    REQUIRE_MESSAGE(fd >= 0, path << ": " << std::strerror(errno));
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n =
            ::pwrite(fd, data.data() + done, data.size() - done, off + static_cast<off_t>(done));
        REQUIRE_MESSAGE(n > 0, "pwrite " << path << ": " << std::strerror(errno));
        done += static_cast<std::size_t>(n);
    }
    REQUIRE(::close(fd) == 0);
}

// Repeats `step` until `done` holds, at most `tries` times; whether it held.
bool repeat_until(const std::function<bool()>& done, const std::function<void()>& step, int tries) {
    for (int i = 0; i < tries; ++i) {
        if (done())
            return true;
        step();
    }
    return done();
}

// A cached file "hot" and an uncached file "cold", 1 MiB each.
struct ReadSetup {
    std::string hot = random_bytes(1 * MiB, 11), cold = random_bytes(1 * MiB, 12);
    void make(Mount& m) {
        write_file(m.backing("hot"), hot);
        write_file(m.backing("cold"), cold);
        REQUIRE(read_uncached(m.mnt("hot")) == hot);
        m.wait_fills();
        const auto hits = m.stat("cache_hits");
        REQUIRE(read_uncached(m.mnt("hot")) == hot);
        REQUIRE(m.stat("cache_hits") > hits);
    }
};

} // namespace

TEST_SUITE("mount") {
    TEST_CASE("congestion: read misses bypass a slow cache device, then caching resumes" *
              doctest::timeout(300)) {
        SlowCacheMount s("sequential_cutoff=0,congested_read_threshold_us=1000,"
                         "congested_write_threshold_us=0");
        Mount& m = s.m();
        ReadSetup files;
        files.make(m);
        CHECK(m.stat("congested_bypasses") == 0);

        s.cache_fs().delay("read", 40);
        const int hot = ::open(m.mnt("hot").c_str(), O_RDONLY | O_CLOEXEC);
        const int cold = ::open(m.mnt("cold").c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(hot >= 0);
        REQUIRE(cold >= 0);
        // Hits read the slow device: its smoothed latency climbs past 1 ms.
        off_t at = 0;
        REQUIRE(repeat_until([&] { return m.stat("cache_read_latency_us") > 1000; },
                             [&] {
                                 CHECK(pread_fresh(hot, at, kChunk) ==
                                       files.hot.substr(static_cast<std::size_t>(at), kChunk));
                                 at = (at + static_cast<off_t>(kChunk)) % static_cast<off_t>(MiB);
                             },
                             64));
        m.wait_fills();
        const auto fills = m.stat("fills");
        const auto bypass_misses = m.stat("cache_bypass_misses");
        // Each miss of "cold" comes right after a (slow) hit of "hot", so the
        // estimate cannot decay in between: every one bypasses.
        for (std::size_t off = 0; off < MiB; off += kChunk) {
            CHECK(pread_fresh(hot, static_cast<off_t>(off), kChunk) ==
                  files.hot.substr(off, kChunk));
            CHECK(pread_fresh(cold, static_cast<off_t>(off), kChunk) ==
                  files.cold.substr(off, kChunk));
        }
        m.wait_fills();
        CHECK(m.stat("fills") == fills); // nothing new was cached
        CHECK(m.stat("cache_bypass_misses") >= bypass_misses + MiB / kChunk);
        CHECK(m.stat("congested_bypasses") >= MiB / kChunk);
        CHECK(m.stat("cache_bypass_bytes") >= MiB);

        // Fast again: the estimate decays without any I/O (everything that
        // would measure it bypassed), and misses fill again.
        s.cache_fs().clear();
        // Well under the threshold: from 100 us no single slow sample (a hit
        // of the reads below on a loaded machine) lifts the estimate past
        // it again (each sample weighs 1/8 in log space).
        CHECK(wait_until([&] { return m.stat("cache_read_latency_us") <= 100; },
                         std::chrono::seconds(30)));
        const auto congested = m.stat("congested_bypasses");
        CHECK(read_uncached(m.mnt("cold")) == files.cold);
        m.wait_fills();
        CHECK(m.stat("fills") > fills);
        CHECK(m.stat("congested_bypasses") == congested);
        const auto hits = m.stat("cache_hits");
        CHECK(read_uncached(m.mnt("cold")) == files.cold);
        CHECK(m.stat("cache_hits") > hits);
        ::close(hot);
        ::close(cold);
    }

    TEST_CASE("congestion: threshold 0 never bypasses, however slow the device" *
              doctest::timeout(300)) {
        SlowCacheMount s("sequential_cutoff=0,congested_read_threshold_us=0,"
                         "congested_write_threshold_us=0");
        Mount& m = s.m();
        ReadSetup files;
        files.make(m);
        s.cache_fs().delay("read,write", 20);
        const int hot = ::open(m.mnt("hot").c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(hot >= 0);
        for (std::size_t off = 0; off < MiB; off += kChunk)
            CHECK(pread_fresh(hot, static_cast<off_t>(off), kChunk) ==
                  files.hot.substr(off, kChunk));
        ::close(hot);
        CHECK(m.stat("cache_read_latency_us") > 1000); // measured all the same
        m.wait_fills();
        const auto fills = m.stat("fills");
        CHECK(read_uncached(m.mnt("cold")) == files.cold);
        m.wait_fills();
        CHECK(m.stat("fills") > fills);
        CHECK(m.stat("congested_bypasses") == 0);
        CHECK(m.stat("cache_bypass_misses") == 0);
    }

    TEST_CASE("congestion: the thresholds are live settings, kept across a remount" *
              doctest::timeout(300)) {
        SlowCacheMount s("");
        Mount& m = s.m();
        const auto settings = m.stats();
        CHECK(settings.at("congested_read_threshold_us") == "2000");
        CHECK(settings.at("congested_write_threshold_us") == "20000");
        CHECK(m.control("set congested_read_threshold_us 5000\n") == 0);
        CHECK(m.control("set congested_write_threshold_us 0\n") == 0);
        CHECK(m.control("set congested_read_threshold_us lots\n") == EINVAL);
        CHECK(m.control("set congested_read_threshold_us 10000001\n") == EINVAL);
        m.remount();
        const auto after = m.stats();
        CHECK(after.at("congested_read_threshold_us") == "5000");
        CHECK(after.at("congested_write_threshold_us") == "0");
    }

    TEST_CASE("congestion: writethrough writes go around a slow cache device, nothing stale" *
              doctest::timeout(300)) {
        // The write threshold is set once the device is slow: writes that
        // go around the cache do not measure it.
        SlowCacheMount s("sequential_cutoff=0,congested_read_threshold_us=0,"
                         "congested_write_threshold_us=0");
        Mount& m = s.m();
        const auto old_bytes = random_bytes(1 * MiB, 21);
        write_file(m.backing("f"), old_bytes);
        REQUIRE(read_uncached(m.mnt("f")) == old_bytes);
        m.wait_fills();
        REQUIRE(m.stat("cache_used_bytes") >= MiB); // f is cached

        s.cache_fs().delay("write", 40);
        // Writethrough writes of another file put their bytes in the cache:
        // slow device writes, until the estimate is past 1 ms.
        const auto g = random_bytes(4 * MiB, 22);
        std::size_t g_at = 0;
        REQUIRE(repeat_until([&] { return m.stat("cache_write_latency_us") > kWellPast; },
                             [&] {
                                 pwrite_all(m.mnt("g"), g.substr(g_at, kChunk),
                                            static_cast<off_t>(g_at));
                                 g_at = (g_at + kChunk) % g.size();
                             },
                             64));
        REQUIRE(m.control("set congested_write_threshold_us 1000\n") == 0);
        const auto congested = m.stat("congested_bypasses");
        const auto punched = m.stat("writes_punched");
        // Overwrite f's cached head: around the cache, its old bytes dropped.
        const auto new_head = random_bytes(256 * KiB, 23);
        pwrite_all(m.mnt("f"), new_head, 0);
        CHECK(m.stat("congested_bypasses") > congested);
        CHECK(m.stat("writes_punched") > punched);
        CHECK(m.stat("cache_write_latency_us") > 1000);
        s.cache_fs().clear();
        auto expect = old_bytes;
        expect.replace(0, new_head.size(), new_head);
        CHECK(read_uncached(m.mnt("f")) == expect); // no stale byte from the cache
        CHECK(read_file(m.backing("f")) == expect);
    }

    TEST_CASE("congestion: writeback keeps writes over dirty data, loses nothing" *
              doctest::timeout(300)) {
        SlowCacheMount s("cache_mode=writeback,writeback_running=0,sequential_cutoff=0,"
                         "congested_read_threshold_us=0,congested_write_threshold_us=1000");
        Mount& m = s.m();
        const auto w = random_bytes(1 * MiB, 31);
        pwrite_all(m.mnt("w"), w, 0);
        REQUIRE(m.stat("dirty_data") >= MiB);
        // y exists (empty, nothing dirty) before the device is slowed.
        pwrite_all(m.mnt("y"), "", 0);

        s.cache_fs().delay("write", 40);
        // Writes over x's dirty head, again and again: they stay in the
        // cache however slow it is, and measure it.
        auto x = random_bytes(1 * MiB, 32);
        pwrite_all(m.mnt("x"), x, 0);
        std::uint64_t seed = 100;
        REQUIRE(repeat_until([&] { return m.stat("cache_write_latency_us") > kWellPast; },
                             [&] {
                                 x.replace(0, kChunk, random_bytes(kChunk, ++seed));
                                 pwrite_all(m.mnt("x"), x.substr(0, kChunk), 0);
                             },
                             64));
        // A new file has no dirty data: around the cache, to the backing.
        const auto around = m.stat("writes_around");
        const auto congested = m.stat("congested_bypasses");
        const auto y = random_bytes(128 * KiB, 33);
        pwrite_all(m.mnt("y"), y, 0);
        CHECK(m.stat("writes_around") > around);
        CHECK(m.stat("congested_bypasses") > congested);
        // Over w's dirty bytes: stays in the cache, as dirty data.
        const auto dirty_writes = m.stat("writes_dirty");
        const auto congested2 = m.stat("congested_bypasses");
        const auto head = random_bytes(64 * KiB, 34);
        pwrite_all(m.mnt("w"), head, 0);
        CHECK(m.stat("writes_dirty") > dirty_writes);
        CHECK(m.stat("congested_bypasses") == congested2);
        CHECK(m.stat("cache_write_latency_us") > 1000); // it was congested all along
        // Past w's dirty bytes (w is dirty elsewhere): around the cache; the
        // backing then has w's new tail before its older dirty head.
        const auto tail = random_bytes(64 * KiB, 35);
        const auto congested3 = m.stat("congested_bypasses");
        pwrite_all(m.mnt("w"), tail, static_cast<off_t>(MiB));
        CHECK(m.stat("congested_bypasses") > congested3);

        s.cache_fs().clear();
        auto expect_w = w;
        expect_w.replace(0, head.size(), head);
        expect_w += tail;
        CHECK(read_uncached(m.mnt("w")) == expect_w);
        CHECK(read_uncached(m.mnt("y")) == y);
        CHECK(m.control("set writeback_running 1\n") == 0);
        // backing() flushes first: every dirty byte reaches the backing.
        CHECK(read_file(m.backing("w")) == expect_w);
        CHECK(read_file(m.backing("y")) == y);
        CHECK(read_file(m.backing("x")) == x);
        CHECK(m.stat("dirty_data") == 0);
    }
}
