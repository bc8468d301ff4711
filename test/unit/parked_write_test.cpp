// Parked writes (issue #7 item 6): in writeback mode a write that finds only
// the reserve left waits without a FUSE thread and without a lock of its
// file, until GC or writeback frees room (then it goes into the cache) or
// writeback_wait_max passes (then around the cache, to the backing). Real
// caching DataPath, real backing directory, real cache device and RocksDB,
// threaded executors.
//
// Determinism: the cache has 3 buckets of 256 KiB, one of them the reserve,
// so eight 64 KiB dirty writes fill what the foreground may take. Writeback
// never runs on its own (writeback_delay far away, writeback_percent 100):
// only flush() cleans, and gc_now() frees. Whether a write parked is seen at
// once: DataPath::write returns without having answered. Waits for answers
// have deadlines; nothing sleeps to decide an interleaving.
#include "data_path_support.hpp"
#include "overcache/cache/caching_path.hpp"
#include "overcache/store/cache_device.hpp"
#include "tmp_dir.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache;
using namespace overcache::cache;
using test::MemSource;
using test::random_bytes;
using test::write_file;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;
constexpr auto kDeadline = 10s;
constexpr std::uint64_t kChunk = 64 * KiB;
constexpr unsigned kFillWrites = 8; // 512 KiB: both buckets the foreground may take

// Runs `fn` on another thread; one that does not return in time ends the
// process with a message (a REQUIRE would unwind into the same hang).
template <class F> void run_within(const char* what, F&& fn) {
    auto done = std::make_shared<std::promise<void>>();
    auto f = done->get_future();
    std::thread t([done, &fn] {
        fn();
        done->set_value();
    });
    if (f.wait_for(kDeadline) != std::future_status::ready) {
        std::fprintf(stderr, "parked_write_test: %s did not return: a hang\n", what);
        std::fflush(stderr);
        std::_Exit(3);
    }
    t.join();
}

std::string read_backing(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    REQUIRE_MESSAGE(fd >= 0, path << ": " << std::strerror(errno));
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    std::string s(static_cast<std::size_t>(st.st_size), '\0');
    REQUIRE(::pread(fd, s.data(), s.size(), 0) == static_cast<ssize_t>(s.size()));
    ::close(fd);
    return s;
}

void put(std::string& model, std::uint64_t off, const std::string& data) {
    if (model.size() < off + data.size())
        model.resize(off + data.size(), '\0');
    model.replace(off, data.size(), data);
}

// The order in which writes were answered, by the ids the test gave them.
struct AnswerLog {
    std::mutex mu;
    std::vector<int> ids;
    std::vector<int> get() {
        std::lock_guard lk(mu);
        return ids;
    }
};

// A write handed to the DataPath; its answer whenever it comes.
struct Pending {
    std::shared_future<Result<std::size_t>> f;
    bool answered() const { return f.wait_for(0s) == std::future_status::ready; }
    // The answer, or nullopt when none came within the deadline.
    std::optional<Result<std::size_t>> wait() const {
        if (f.wait_for(kDeadline) != std::future_status::ready)
            return std::nullopt;
        return f.get();
    }
};

Pending start_write(DataPath& dp, OpenFile& of, std::uint64_t off, const std::string& data,
                    AnswerLog* log = nullptr, int id = 0) {
    MemSource src(data); // read only during the call: a parked write copies it
    auto p = std::make_shared<std::promise<Result<std::size_t>>>();
    Pending out{p->get_future().share()};
    dp.write(of, src, static_cast<off_t>(off), [p, log, id](Result<std::size_t> r) {
        if (log != nullptr) {
            std::lock_guard lk(log->mu);
            log->ids.push_back(id);
        }
        p->set_value(std::move(r));
    });
    return out;
}

void check_answer(const Pending& w, std::size_t len) {
    auto r = w.wait();
    REQUIRE_MESSAGE(r.has_value(), "a parked write was never answered");
    REQUIRE_MESSAGE(*r, (*r ? "" : to_string(r->error())));
    CHECK(**r == len);
}

struct Fx {
    bg::Executors ex;
    test::TmpDir tmp;
    std::string backing = tmp / "backing";
    store::DeviceConfig dc;
    CachingParams cp;
    std::unique_ptr<DataPath> dp;

    Fx() {
        ::mkdir(backing.c_str(), 0755);
        dc.dir = tmp / "cache";
        dc.cache_size = 1 * MiB; // 3 buckets: 2 for the foreground, 1 reserve
        dc.bucket_size = 256 * KiB;
        dc.backing = store::BackingIdentity{backing, 1, 2};
        cp.mode = config::CacheMode::writeback;
        cp.fill_size = 64 * KiB;
        cp.sequential_cutoff = 0;
        cp.backing_root = backing;
        cp.lost_found_dir = tmp / "lost+found";
        // Writeback writes only when flushed: never over its target, never
        // old enough.
        cp.writeback_delay_s = 3600;
        cp.writeback_percent = 100;
        cp.writeback_wait_max_s = 60; // longer than any test: only room ends a wait
        ex.start();
    }
    ~Fx() { stop(); }
    void start() {
        auto d = store::open_cache_device(dc);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        dp = make_caching_path(std::move(*d), cp, ex);
        REQUIRE(stat("buckets_total") == 3);
        REQUIRE(stat("buckets_reserve") == 1);
    }
    void stop() {
        if (dp) {
            dp->stop();
            dp.reset();
        }
    }
    CacheControl& ctl() { return dynamic_cast<CacheControl&>(*dp); }
    std::uint64_t stat(const std::string& key) {
        for (auto& [k, v] : dp->stats())
            if (k == key)
                return std::stoull(v);
        FAIL("no stat " << key);
        return 0;
    }
    std::string path(const std::string& name) const { return backing + "/" + name; }
    void flush() {
        auto p = std::make_shared<std::promise<Result<void>>>();
        auto f = p->get_future();
        dp->flush([p](Result<void> r) { p->set_value(std::move(r)); });
        run_within("flush", [&] { f.wait(); });
        auto r = f.get();
        REQUIRE_MESSAGE(r, (r ? "" : to_string(r.error())));
    }
};

// One open file as the adapter holds it.
struct Handle {
    int fd = -1;
    OpenOut out;
    Handle(DataPath& dp, const std::string& path, int flags = O_RDWR) {
        fd = ::open(path.c_str(), flags);
        REQUIRE_MESSAGE(fd >= 0, path << ": " << std::strerror(errno));
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        auto r = dp.open(fd, st, flags);
        REQUIRE(r);
        out = std::move(*r);
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { close(); }
    void close() {
        out.file.reset();
        if (fd >= 0)
            ::close(fd);
        fd = -1;
    }
    OpenFile& of() { return *out.file; }
    std::string read(DataPath& dp, std::uint64_t off, std::size_t len) {
        std::string buf(len, '\0');
        auto r = dp.read(*out.file, buf.data(), len, static_cast<off_t>(off));
        REQUIRE(r);
        if (r->fd >= 0) {
            const ssize_t n = ::pread(r->fd, buf.data(), r->len, r->fd_offset);
            REQUIRE(n >= 0);
            buf.resize(static_cast<std::size_t>(n));
        } else {
            buf.resize(r->len);
        }
        return buf;
    }
};

// Fills the foreground's buckets with dirty data of `h` (offsets 0..512K),
// every write answered at once; `model` follows.
void fill_cache(Fx& fx, Handle& h, std::string& model) {
    for (unsigned i = 0; i < kFillWrites; ++i) {
        const auto d = random_bytes(kChunk, 200 + i);
        auto w = start_write(*fx.dp, h.of(), i * kChunk, d);
        REQUIRE_MESSAGE(w.answered(), "a write with room in the cache waited");
        check_answer(w, kChunk);
        put(model, i * kChunk, d);
    }
    REQUIRE(fx.stat("writes_dirty") == kFillWrites);
    REQUIRE(fx.stat("dirty_data") == kFillWrites * kChunk);
    REQUIRE(fx.stat("foreground_waits") == 0);
}

} // namespace

TEST_SUITE("parked_writes") {
    TEST_CASE("parked writes: a write parks when only the reserve is left, holds no lock of its "
              "file while parked, and goes into the cache, in order with the file's newer "
              "writes, once GC frees a bucket" *
              doctest::timeout(60)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(1 * MiB, 1);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        fill_cache(fx, h, model);

        AnswerLog order;
        const auto b1 = random_bytes(kChunk, 11), b2 = random_bytes(kChunk, 12),
                   b3 = random_bytes(kChunk, 13);
        // w1 finds no room and parks.
        const Pending w1 = start_write(*fx.dp, h.of(), 512 * KiB, b1, &order, 1);
        CHECK_FALSE(w1.answered());
        CHECK(fx.stat("foreground_waits") == 1);
        CHECK(fx.stat("foreground_waiting") == 1);
        // Newer writes of the file park behind it, the last one over w1's
        // range: acknowledged after w1, it must win.
        const Pending w2 = start_write(*fx.dp, h.of(), 640 * KiB, b2, &order, 2);
        const Pending w3 = start_write(*fx.dp, h.of(), 512 * KiB, b3, &order, 3);
        CHECK_FALSE(w2.answered());
        CHECK_FALSE(w3.answered());
        CHECK(fx.stat("foreground_waiting") == 3);

        // While they wait, the file serves reads, fsync returns (parked
        // writes are not acknowledged, so it owes them nothing), and a
        // writeback of this very file runs: it takes the file's backing_mu
        // and owner lock, which a parked write must not hold.
        CHECK(h.read(*fx.dp, 0, 1 * MiB) == model);
        run_within("fsync", [&] {
            auto p = std::make_shared<std::promise<Result<void>>>();
            auto ff = p->get_future();
            fx.dp->fsync(h.of(), false, [p](Result<void> r) { p->set_value(std::move(r)); });
            ff.wait();
        });
        fx.flush();
        CHECK(read_backing(f) == model);

        // GC frees the now clean buckets (a waiter's recheck may have asked
        // it to already): the waiters go into the cache.
        run_within("gc_now", [&] { fx.ctl().gc_now(); });
        check_answer(w1, kChunk);
        check_answer(w2, kChunk);
        check_answer(w3, kChunk);
        CHECK(order.get() == std::vector<int>{1, 2, 3});
        put(model, 512 * KiB, b1);
        put(model, 640 * KiB, b2);
        put(model, 512 * KiB, b3);
        CHECK(fx.stat("foreground_waiting") == 0);
        CHECK(fx.stat("foreground_waits") == 3);
        CHECK(fx.stat("foreground_waits_around") == 0);
        CHECK(fx.stat("writes_around") == 0);
        CHECK(fx.stat("writes_dirty") == kFillWrites + 3);
        // At most their two chunks are dirty: writeback may have taken them
        // already, as it runs at once while writes waited for room lately
        // (a pass in the second after they landed: seen under TSan).
        CHECK(fx.stat("dirty_data") <= 2 * kChunk);
        CHECK(h.read(*fx.dp, 0, 1 * MiB) == model);
        fx.flush();
        CHECK(read_backing(f) == model);
    }

    TEST_CASE("parked writes: after writeback_wait_max a parked write goes around the cache, "
              "still in order with the file's newer writes" *
              doctest::timeout(60)) {
        Fx fx;
        fx.cp.writeback_wait_max_s = 0.3;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(1 * MiB, 2);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        fill_cache(fx, h, model);

        AnswerLog order;
        // One over dirty data (going around replaces it), one newer over the
        // same range, one in a clean range.
        const auto b1 = random_bytes(kChunk, 21), b2 = random_bytes(kChunk, 22),
                   b3 = random_bytes(kChunk, 23);
        const Pending w1 = start_write(*fx.dp, h.of(), 0, b1, &order, 1);
        const Pending w2 = start_write(*fx.dp, h.of(), 0, b2, &order, 2);
        const Pending w3 = start_write(*fx.dp, h.of(), 768 * KiB, b3, &order, 3);
        CHECK_FALSE(w1.answered());
        check_answer(w1, kChunk);
        check_answer(w2, kChunk);
        check_answer(w3, kChunk);
        CHECK(order.get() == std::vector<int>{1, 2, 3});
        put(model, 0, b1);
        put(model, 0, b2);
        put(model, 768 * KiB, b3);
        CHECK(fx.stat("foreground_waits") == 3);
        CHECK(fx.stat("foreground_waits_around") == 3);
        CHECK(fx.stat("writes_around") == 3);
        CHECK(fx.stat("foreground_waiting") == 0);
        // Each waited its whole writeback_wait_max (no room ever came).
        CHECK(fx.stat("foreground_wait_max_ms") >= 300);
        const std::string on_backing = read_backing(f);
        CHECK(on_backing.substr(0, kChunk) == b2);
        CHECK(on_backing.substr(768 * KiB, kChunk) == b3);
        CHECK(fx.stat("dirty_data") == (kFillWrites - 1) * kChunk);
        CHECK(h.read(*fx.dp, 0, 1 * MiB) == model);
        fx.flush();
        CHECK(read_backing(f) == model);
    }

    TEST_CASE("parked writes: with writeback paused and every bucket dirty nothing can make "
              "room, so a write goes around the cache at once" *
              doctest::timeout(60)) {
        Fx fx;
        fx.cp.writeback_running = false;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(1 * MiB, 3);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        fill_cache(fx, h, model);
        const auto b = random_bytes(kChunk, 31);
        const Pending w = start_write(*fx.dp, h.of(), 512 * KiB, b);
        CHECK(w.answered());
        check_answer(w, kChunk);
        put(model, 512 * KiB, b);
        CHECK(fx.stat("foreground_waits") == 0);
        CHECK(fx.stat("writes_around") == 1);
        CHECK(read_backing(f).substr(512 * KiB, kChunk) == b);
        CHECK(h.read(*fx.dp, 0, 1 * MiB) == model);
    }

    TEST_CASE("parked writes: stop answers every parked write, around the cache" *
              doctest::timeout(60)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f"), g = fx.path("g");
        const auto a = random_bytes(1 * MiB, 4);
        write_file(f, a);
        write_file(g, a);
        Handle hf(*fx.dp, f), hg(*fx.dp, g);
        std::string model = a;
        fill_cache(fx, hf, model);
        AnswerLog order;
        const auto b1 = random_bytes(kChunk, 41), b2 = random_bytes(kChunk, 42);
        const Pending w1 = start_write(*fx.dp, hf.of(), 0, b1, &order, 1);
        const Pending w2 = start_write(*fx.dp, hg.of(), 128 * KiB, b2, &order, 2);
        CHECK_FALSE(w1.answered());
        CHECK_FALSE(w2.answered());
        REQUIRE(fx.stat("foreground_waiting") == 2);
        hf.close();
        hg.close();
        run_within("stop", [&] { fx.stop(); });
        CHECK(w1.answered());
        CHECK(w2.answered());
        check_answer(w1, kChunk);
        check_answer(w2, kChunk);
        CHECK(order.get() == std::vector<int>{1, 2});
        CHECK(read_backing(f).substr(0, kChunk) == b1);
        CHECK(read_backing(g).substr(128 * KiB, kChunk) == b2);
    }

    TEST_CASE("parked writes: the open may be released while its write is parked" *
              doctest::timeout(60)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(1 * MiB, 5);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        fill_cache(fx, h, model);
        const auto b = random_bytes(kChunk, 51);
        Pending w;
        {
            Handle h2(*fx.dp, f);
            w = start_write(*fx.dp, h2.of(), 896 * KiB, b);
            CHECK_FALSE(w.answered());
        } // the kernel released the open: its fd is closed
        fx.flush();
        run_within("gc_now", [&] { fx.ctl().gc_now(); });
        check_answer(w, kChunk);
        put(model, 896 * KiB, b);
        CHECK(fx.stat("writes_around") == 0);
        CHECK(h.read(*fx.dp, 0, 1 * MiB) == model);
        fx.flush();
        CHECK(read_backing(f) == model);
    }
}
