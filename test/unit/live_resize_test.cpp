// Live resize through the caching DataPath (no FUSE), on threaded
// executors, over a real cache device and index: grow and shrink while
// another thread reads and writes (every byte checked; run under TSan), and
// the shrink's wait for a write in flight forced at the fill's seam
// (after_device_write: the bytes are on the device, the bucket pinned,
// nothing committed): released while the shrink retries, the shrink
// completes; held past its stall limit, the shrink gives up and its buckets
// go back to use, and the parked fill still commits; data to keep that
// stops fitting midway (a pin set between two rounds) stops the shrink the
// same way; the mount stopping ends it with ESHUTDOWN. And a shrink then a
// grow back: the entries the shrink left past its end (at gen 0 in a fresh
// cache) never read as current in the buckets the grow brings back.
#include "data_path_support.hpp"
#include "overcache/cache/caching_path.hpp"
#include "tmp_dir.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <future>
#include <mutex>
#include <optional>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace overcache;
using namespace overcache::cache;
using test::MemSource;
using test::random_bytes;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;
constexpr std::uint64_t kBucket = 256 * KiB;

// A one-shot signal with a deadline.
class Gate {
public:
    void open() {
        std::call_once(once_, [this] { p_.set_value(); });
    }
    bool wait(std::chrono::milliseconds d = 10s) const {
        return f_.wait_for(d) == std::future_status::ready;
    }

private:
    std::once_flag once_;
    std::promise<void> p_;
    std::shared_future<void> f_ = p_.get_future().share();
};

struct Fx {
    bg::Executors ex;
    test::TmpDir tmp;
    std::string backing = tmp / "backing";
    store::DeviceConfig dc;
    CachingParams cp;
    CacheHooks hooks;
    std::unique_ptr<DataPath> dp;

    Fx() {
        ::mkdir(backing.c_str(), 0755);
        dc.dir = tmp / "cache";
        dc.cache_size = 16 * kBucket; // 15 buckets
        dc.bucket_size = kBucket;
        dc.backing = store::BackingIdentity{backing, 1, 2};
        cp.mode = config::CacheMode::writeback;
        cp.fill_size = 64 * KiB;
        cp.sequential_cutoff = 0;
        cp.backing_root = backing;
        cp.lost_found_dir = tmp / "lost+found";
        cp.writeback_delay_s = 3600;
        cp.writeback_running = false; // dirty data stays dirty
        cp.writeback_wait_max_s = 0;
        ex.start();
    }
    ~Fx() {
        if (dp)
            dp->stop();
        dp.reset();
        ex.stop();
    }
    void start() {
        auto d = store::open_cache_device(dc);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        dp = make_caching_path(std::move(*d), cp, ex, hooks);
    }
    std::uint64_t stat(const std::string& key) {
        for (auto& [k, v] : dp->stats())
            if (k == key)
                return std::stoull(v);
        FAIL("no stat " << key);
        return 0;
    }
    // Runs a resize and waits for its answer (bounded).
    Result<std::uint64_t> resize(std::uint64_t size) {
        std::promise<Result<std::uint64_t>> p;
        auto f = p.get_future();
        dp->resize(size, [&p](Result<std::uint64_t> r) { p.set_value(std::move(r)); });
        REQUIRE(f.wait_for(60s) == std::future_status::ready);
        return f.get();
    }
    std::string path(const std::string& name) const { return backing + "/" + name; }
};

struct Handle {
    int fd = -1;
    OpenOut out;
    Handle(DataPath& dp, const std::string& path) {
        fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        auto r = dp.open(fd, st, O_RDWR);
        REQUIRE(r);
        out = std::move(*r);
    }
    Handle(const Handle&) = delete;
    ~Handle() {
        out.file.reset();
        ::close(fd);
    }
    // Without doctest assertions: callable from any thread.
    std::optional<std::string> read(DataPath& dp, std::uint64_t off, std::size_t len) {
        std::string buf(len, '\0');
        auto r = dp.read(*out.file, buf.data(), len, static_cast<off_t>(off));
        if (!r)
            return std::nullopt;
        if (r->fd >= 0) {
            const ssize_t n = ::pread(r->fd, buf.data(), r->len, r->fd_offset);
            if (n < 0)
                return std::nullopt;
            buf.resize(static_cast<std::size_t>(n));
        } else {
            buf.resize(r->len);
        }
        return buf;
    }
    bool write(DataPath& dp, std::uint64_t off, const std::string& data) {
        MemSource src(data);
        std::promise<bool> ok;
        auto f = ok.get_future();
        dp.write(*out.file, src, static_cast<off_t>(off),
                 [&](Result<std::size_t> r) { ok.set_value(r && *r == data.size()); });
        return f.wait_for(30s) == std::future_status::ready && f.get();
    }
};

} // namespace

TEST_SUITE("cache") {
    TEST_CASE("live resize: grow and shrink while another thread reads and writes" *
              doctest::timeout(120)) {
        Fx fx;
        const std::string clean = random_bytes(MiB, 1);
        test::write_file(fx.path("clean"), clean);
        fx.start();
        Handle c(*fx.dp, fx.path("clean"));
        Handle d(*fx.dp, fx.path("dirty"));
        std::string model = random_bytes(512 * KiB, 2);
        REQUIRE(d.write(*fx.dp, 0, model));
        REQUIRE(c.read(*fx.dp, 0, clean.size()) == clean); // fills
        dynamic_cast<CacheControl&>(*fx.dp).drain_fills();
        const std::uint64_t dirty = fx.stat("dirty_data");
        REQUIRE(dirty == model.size());

        std::atomic<bool> stop{false};
        std::atomic<int> bad{0}, rounds{0};
        // Reads of both files, and rewrites of the dirty one with the same
        // bytes (dirty writes racing the evacuation), all along.
        std::thread other([&] {
            while (!stop.load()) {
                if (c.read(*fx.dp, 0, clean.size()) != clean)
                    ++bad;
                if (d.read(*fx.dp, 0, model.size()) != model)
                    ++bad;
                const std::uint64_t off =
                    (static_cast<std::uint64_t>(rounds.load()) * 64 * KiB) % model.size();
                if (!d.write(*fx.dp, off, model.substr(off, 64 * KiB)))
                    ++bad;
                ++rounds;
            }
        });
        auto grown = fx.resize(32 * kBucket);
        REQUIRE_MESSAGE(grown, (grown ? "" : grown.error().message));
        CHECK(*grown == 32 * kBucket);
        CHECK(fx.stat("buckets_total") == 31);
        CHECK(fx.stat("cache_size") == 32 * kBucket);
        auto shrunk = fx.resize(12 * kBucket + 1000); // rounded down to whole buckets
        REQUIRE_MESSAGE(shrunk, (shrunk ? "" : shrunk.error().message));
        CHECK(*shrunk == 12 * kBucket);
        CHECK(fx.stat("buckets_total") == 11);
        while (rounds.load() < 20)
            std::this_thread::sleep_for(1ms);
        stop.store(true);
        other.join();
        CHECK(bad.load() == 0);
        CHECK(d.read(*fx.dp, 0, model.size()) == model);
        CHECK(c.read(*fx.dp, 0, clean.size()) == clean);

        // Too small for the dirty data: refused, nothing changed.
        auto tiny = fx.resize(3 * kBucket);
        REQUIRE_FALSE(tiny);
        CHECK(tiny.error().code == Errc::CacheFull);
        CHECK(fx.stat("buckets_total") == 11);
        CHECK(d.read(*fx.dp, 0, model.size()) == model);
    }

    TEST_CASE("live resize: entries left past a shrink's end stay stale after a grow back" *
              doctest::timeout(120)) {
        Fx fx;
        const std::string data = random_bytes(2 * MiB, 5); // buckets 0..7, all at gen 0
        test::write_file(fx.path("f"), data);
        fx.start();
        auto& ctl = dynamic_cast<CacheControl&>(*fx.dp);
        Handle h(*fx.dp, fx.path("f"));
        REQUIRE(h.read(*fx.dp, 0, data.size()) == data);
        ctl.drain_fills();
        auto cached = [&] {
            struct stat st {};
            REQUIRE(::fstat(h.fd, &st) == 0);
            auto info = fx.dp->file_info(FileRef{h.fd, st});
            REQUIRE(info);
            return info->cached_bytes;
        };
        REQUIRE(cached() == data.size());

        REQUIRE(fx.resize(4 * kBucket)); // 3 buckets stay
        CHECK(cached() <= 3 * kBucket);
        REQUIRE(fx.resize(16 * kBucket));
        CHECK(fx.stat("buckets_total") == 15);
        CHECK(cached() <= 3 * kBucket); // the old entries did not come back
        CHECK(h.read(*fx.dp, 0, data.size()) == data);
        ctl.drain_fills();
        CHECK(h.read(*fx.dp, 0, data.size()) == data);
    }

    TEST_CASE("live resize: a shrink retries past a write in flight in a retiring bucket, and "
              "gives up (buckets back in use) when it stays" *
              doctest::timeout(120)) {
        Fx fx;
        fx.cp.resize_stall_limit_ms = 300;
        const std::string first = random_bytes(2 * MiB, 3); // buckets 0..7
        const std::string late = random_bytes(64 * KiB, 4);
        test::write_file(fx.path("first"), first);
        test::write_file(fx.path("late"), late);
        std::atomic<bool> park{false};
        std::atomic<std::uint32_t> parked_in{UINT32_MAX};
        Gate parked, release, retried;
        fx.hooks.after_device_write = [&](std::uint32_t bucket) {
            if (!park.exchange(false))
                return;
            parked_in.store(bucket);
            parked.open();
            (void)release.wait(60s);
        };
        // Set by a subcase: the first round that finds the pinned bucket busy
        // also pins "first" (user.overcache.pin), whose extents below the
        // cut then need more room than the smaller cache has.
        std::atomic<bool> pin_on_round{false};
        std::atomic<bool> pinned_ok{false};
        fx.hooks.between_resize_rounds = [&](std::size_t busy) {
            if (busy == 0)
                return;
            if (pin_on_round.exchange(false)) {
                const int fd = ::open(fx.path("first").c_str(), O_RDONLY);
                struct stat st {};
                pinned_ok.store(fd >= 0 && ::fstat(fd, &st) == 0 &&
                                fx.dp->repin(FileRef{fd, st}, true).has_value());
                ::close(fd);
            }
            retried.open();
        };
        fx.start();
        auto& ctl = dynamic_cast<CacheControl&>(*fx.dp);
        Handle f(*fx.dp, fx.path("first"));
        REQUIRE(f.read(*fx.dp, 0, first.size()) == first);
        ctl.drain_fills();

        SUBCASE("released while the shrink retries: it completes") {
            Handle l(*fx.dp, fx.path("late"));
            park.store(true);
            REQUIRE(l.read(*fx.dp, 0, late.size()) == late); // its fill parks
            REQUIRE(parked.wait());
            REQUIRE(parked_in.load() >= 5);
            std::promise<Result<std::uint64_t>> p;
            auto done = p.get_future();
            fx.dp->resize(6 * kBucket,
                          [&p](Result<std::uint64_t> r) { p.set_value(std::move(r)); });
            REQUIRE(retried.wait()); // a round found the pinned bucket busy
            CHECK(done.wait_for(50ms) == std::future_status::timeout); // and did not finish
            release.open();
            REQUIRE(done.wait_for(30s) == std::future_status::ready);
            auto r = done.get();
            REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
            CHECK(fx.stat("buckets_total") == 5);
            ctl.drain_fills();
            CHECK(l.read(*fx.dp, 0, late.size()) == late);
            CHECK(f.read(*fx.dp, 0, first.size()) == first);
        }
        SUBCASE("the mount stopping: the shrink ends (ESHUTDOWN), stop() does not hang") {
            Handle l(*fx.dp, fx.path("late"));
            park.store(true);
            REQUIRE(l.read(*fx.dp, 0, late.size()) == late);
            REQUIRE(parked.wait());
            std::promise<Result<std::uint64_t>> p;
            auto done = p.get_future();
            fx.dp->resize(6 * kBucket,
                          [&p](Result<std::uint64_t> r) { p.set_value(std::move(r)); });
            REQUIRE(retried.wait());
            std::thread stopper([&] { fx.dp->stop(); });
            REQUIRE(done.wait_for(30s) == std::future_status::ready);
            auto r = done.get();
            REQUIRE_FALSE(r);
            CHECK(r.error().sys_errno == ESHUTDOWN);
            release.open(); // stop() drains the parked fill next
            stopper.join();
            auto after = fx.resize(6 * kBucket);
            REQUIRE_FALSE(after);
            CHECK(after.error().sys_errno == ESHUTDOWN);
        }
        SUBCASE("data to keep that stops fitting midway: the shrink stops, buckets back in use") {
            Handle l(*fx.dp, fx.path("late"));
            park.store(true);
            REQUIRE(l.read(*fx.dp, 0, late.size()) == late);
            REQUIRE(parked.wait());
            pin_on_round.store(true);
            auto r = fx.resize(6 * kBucket); // 5 buckets: "first" keeps 5 below the cut
            REQUIRE(pinned_ok.load());
            REQUIRE_FALSE(r);
            CHECK(r.error().code == Errc::CacheFull);
            CHECK(r.error().message.find("grew past") != std::string::npos);
            CHECK(fx.stat("buckets_total") == 15);
            CHECK(fx.stat("pinned_bytes") > 0);
            release.open();
            ctl.drain_fills();
            // Back in use: unpinned, the same shrink goes through.
            struct stat st {};
            REQUIRE(::fstat(f.fd, &st) == 0);
            REQUIRE(fx.dp->repin(FileRef{f.fd, st}, false));
            auto again = fx.resize(6 * kBucket);
            REQUIRE_MESSAGE(again, (again ? "" : again.error().message));
            CHECK(fx.stat("buckets_total") == 5);
            CHECK(f.read(*fx.dp, 0, first.size()) == first);
        }
        SUBCASE("held past the stall limit: the shrink gives up, nothing changed") {
            Handle l(*fx.dp, fx.path("late"));
            park.store(true);
            REQUIRE(l.read(*fx.dp, 0, late.size()) == late);
            REQUIRE(parked.wait());
            REQUIRE(parked_in.load() >= 5);
            const std::uint64_t free_before = fx.stat("buckets_free");
            auto r = fx.resize(6 * kBucket);
            REQUIRE_FALSE(r);
            CHECK(r.error().sys_errno == EBUSY);
            CHECK(r.error().message.find("stayed in use") != std::string::npos);
            CHECK(fx.stat("buckets_total") == 15);
            CHECK(fx.stat("cache_size") == 16 * kBucket);
            // The buckets past the cut are free again (the clean ones were
            // emptied: as many or more than before).
            CHECK(fx.stat("buckets_free") >= free_before);
            release.open();
            ctl.drain_fills();
            // The fill committed into its bucket, which was never reclaimed.
            const std::uint64_t misses = fx.stat("cache_misses");
            CHECK(l.read(*fx.dp, 0, late.size()) == late);
            CHECK(fx.stat("cache_misses") == misses);
        }
        release.open();
    }
}
