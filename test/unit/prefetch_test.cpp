// The prefetcher through the caching DataPath, without FUSE: a file ends
// up whole in the cache and its reads are hits; a write that overtakes a
// prefetch's fill wins (the fill stands down, the chunk is fetched again);
// a cache too small fails "full" with what was fetched; a stop cancels a
// prefetch in flight (ESHUTDOWN) instead of hanging.
#include "data_path_support.hpp"
#include "overcache/cache/caching_path.hpp"
#include "overcache/store/cache_device.hpp"
#include "tmp_dir.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <future>
#include <mutex>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace overcache;
using namespace overcache::cache;
using test::MemSource;
using test::random_bytes;
using test::write_file;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;
constexpr auto kDeadline = 20s;

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
        dc.cache_size = 16 * MiB;
        dc.bucket_size = 256 * KiB;
        dc.backing = store::BackingIdentity{backing, 1, 2};
        cp.fill_size = 64 * KiB;
        cp.sequential_cutoff = 64 * KiB; // a prefetch ignores it
        cp.promote_after_hits = 4u;      // and this
        cp.backing_root = backing;
        ex.start();
    }
    ~Fx() {
        if (dp)
            dp->stop();
    }
    void start() {
        auto d = store::open_cache_device(dc);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        dp = make_caching_path(std::move(*d), cp, ex, hooks);
    }
    std::string path(const std::string& name) const { return backing + "/" + name; }
    std::uint64_t stat(const std::string& key) const {
        for (auto& [k, v] : dp->stats())
            if (k == key)
                return std::stoull(v);
        FAIL("no stat " << key);
        return 0;
    }
    // Starts a prefetch of `name`; the future gets its result.
    std::future<Result<void>> prefetch(const std::string& name) {
        auto p = std::make_shared<std::promise<Result<void>>>();
        auto fut = p->get_future();
        const int fd = ::open(path(name).c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        dp->prefetch(FileRef{fd, st}, [p](Result<void> r) { p->set_value(std::move(r)); });
        ::close(fd); // the DataPath keeps its own
        return fut;
    }
    Result<void> prefetch_wait(const std::string& name) {
        auto f = prefetch(name);
        REQUIRE(f.wait_for(kDeadline) == std::future_status::ready);
        return f.get();
    }
    std::uint64_t cached(const std::string& name) {
        const int fd = ::open(path(name).c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        auto info = dp->file_info(FileRef{fd, st});
        ::close(fd);
        REQUIRE(info);
        return info->cached_bytes;
    }
};

struct Handle {
    int fd = -1;
    OpenOut out;
    Handle(DataPath& dp, const std::string& path, int flags) {
        fd = ::open(path.c_str(), flags);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        auto r = dp.open(fd, st, flags);
        REQUIRE(r);
        out = std::move(*r);
    }
    ~Handle() {
        out.file.reset();
        ::close(fd);
    }
    Handle(const Handle&) = delete;
    std::string read_all(DataPath& dp, std::uint64_t size) {
        std::string buf(size, '\0');
        std::uint64_t at = 0;
        while (at < size) {
            auto r = dp.read(*out.file, buf.data() + at,
                             std::min<std::uint64_t>(128 * KiB, size - at), static_cast<off_t>(at));
            REQUIRE(r);
            REQUIRE(r->fd < 0); // a hit or a miss, never spliced for a cached file
            REQUIRE(r->len > 0);
            at += r->len;
        }
        return buf;
    }
};

} // namespace

TEST_SUITE("prefetch") {
    TEST_CASE("Prefetcher: a file is cached whole and then read with no miss" *
              doctest::timeout(60)) {
        Fx fx;
        fx.start();
        const auto data = random_bytes(2 * MiB + 1000, 1);
        write_file(fx.path("f"), data);
        auto r = fx.prefetch_wait("f");
        REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
        CHECK(fx.cached("f") == data.size());
        CHECK(fx.stat("prefetch_bytes") == data.size());
        Handle h(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK(h.read_all(*fx.dp, data.size()) == data);
        CHECK(fx.stat("cache_misses") == 0);
        CHECK(fx.stat("cache_bypass_misses") == 0);
        // Again: nothing left to fetch.
        REQUIRE(fx.prefetch_wait("f"));
        CHECK(fx.stat("prefetch_bytes") == data.size());
    }

    TEST_CASE("Prefetcher: a write that overtakes a fill wins" * doctest::timeout(60)) {
        Fx fx;
        std::atomic<int> fills{0};
        std::function<void()> write_once;
        fx.hooks.before_fill_commit = [&] {
            if (fills++ == 1 && write_once)
                write_once(); // between the second chunk's backing read and its commit
        };
        fx.start();
        auto data = random_bytes(512 * KiB, 2);
        write_file(fx.path("f"), data);
        Handle w(*fx.dp, fx.path("f"), O_RDWR);
        const auto patch = random_bytes(1000, 3);
        std::atomic<bool> wrote{false};
        write_once = [&] {
            MemSource src(patch);
            fx.dp->write(*w.out.file, src, 70 * KiB,
                         [&](Result<std::size_t> r) { wrote = r.has_value(); });
        };
        auto r = fx.prefetch_wait("f");
        REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
        CHECK(wrote);
        data.replace(70 * KiB, patch.size(), patch);
        CHECK(fx.stat("cache_miss_collisions") >= 1);
        CHECK(fx.cached("f") == data.size());
        Handle h(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK(h.read_all(*fx.dp, data.size()) == data);
        CHECK(fx.stat("cache_misses") == 0);
    }

    TEST_CASE("Prefetcher: a cache too small fails 'full' and says how much was fetched" *
              doctest::timeout(60)) {
        Fx fx;
        fx.start();
        const auto data = random_bytes(20 * MiB, 4);
        write_file(fx.path("big"), data);
        auto r = fx.prefetch_wait("big");
        REQUIRE_FALSE(r);
        CHECK(to_errno(r.error()) == ENOSPC);
        CHECK_MESSAGE(r.error().message.find("full") != std::string::npos, r.error().message);
        CHECK_MESSAGE(r.error().message.find("fetching") != std::string::npos, r.error().message);
        CHECK(fx.stat("prefetch_bytes") > 0);
        CHECK(fx.cached("big") == fx.stat("prefetch_bytes")); // nothing of its own evicted
        // Every byte still reads right.
        Handle h(*fx.dp, fx.path("big"), O_RDONLY);
        CHECK(h.read_all(*fx.dp, data.size()) == data);
    }

    TEST_CASE("Prefetcher: a stop cancels a prefetch in flight" * doctest::timeout(60)) {
        Fx fx;
        std::promise<void> started_p, go_p;
        auto started = started_p.get_future();
        auto go = go_p.get_future().share();
        std::atomic<bool> first{true};
        fx.hooks.before_fill_commit = [&] {
            if (!first.exchange(false))
                return;
            started_p.set_value();
            (void)go.wait_for(kDeadline);
        };
        fx.start();
        write_file(fx.path("f"), random_bytes(8 * MiB, 5));
        auto fut = fx.prefetch("f");
        REQUIRE(started.wait_for(kDeadline) == std::future_status::ready);
        std::thread stopper([&] { fx.dp->stop(); });
        // stop() cancels first, then waits for the prefetcher's thread,
        // which is parked in the hook until `go`.
        std::this_thread::sleep_for(200ms);
        go_p.set_value();
        stopper.join();
        REQUIRE(fut.wait_for(kDeadline) == std::future_status::ready);
        auto r = fut.get();
        REQUIRE_FALSE(r);
        CHECK(to_errno(r.error()) == ESHUTDOWN);
        // A prefetch asked for after the stop is refused at once.
        auto late = fx.prefetch("f");
        REQUIRE(late.wait_for(kDeadline) == std::future_status::ready);
        CHECK_FALSE(late.get());
    }
}
