// The races of the cache core, each forced through a CacheHooks seam: the
// test parks one side of the race inside a hook (a Gate, always with a
// deadline) and drives the other side from another thread, then checks what
// the design promises for that interleaving. No sleeps decide an
// interleaving; the few bounded waits that expect nothing to happen only
// make a wrong order visible, never a right one pass.
// The fixture is private to this file on purpose (a shared one is being
// made elsewhere).
#include "overcache/cache/caching_path.hpp"
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/schema.hpp"
#include "overcache/store/cache_device.hpp"
#include "data_path_support.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache;
using namespace overcache::cache;
using test::attr_change;
using test::MemSource;
using test::random_bytes;
using test::write_file;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;
// Every wait for something that must happen.
constexpr auto kDeadline = 10s;
// How long a wait for something that must NOT happen (yet) looks.
constexpr auto kQuiet = 300ms;

std::string read_backing(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    std::string s(static_cast<std::size_t>(st.st_size), '\0');
    REQUIRE(::pread(fd, s.data(), s.size(), 0) == static_cast<ssize_t>(s.size()));
    ::close(fd);
    return s;
}

bool same_time(const struct timespec& a, const struct timespec& b) {
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

// Changes the backing file behind the mount the sneaky way: same size, and
// the mtime put back with utimensat, so only the ctime tells. Retries until
// the ctime really moved (it has the kernel's coarse clock). Returns the
// backing's attributes afterwards.
struct stat change_behind(const std::string& path, const std::string& data) {
    struct stat old {};
    REQUIRE(::stat(path.c_str(), &old) == 0);
    REQUIRE(static_cast<std::size_t>(old.st_size) == data.size());
    struct stat now {};
    for (int i = 0;; ++i) {
        int fd = ::open(path.c_str(), O_WRONLY);
        REQUIRE(fd >= 0);
        REQUIRE(::pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
        ::close(fd);
        const struct timespec ts[2] = {old.st_atim, old.st_mtim};
        REQUIRE(::utimensat(AT_FDCWD, path.c_str(), ts, 0) == 0);
        REQUIRE(::stat(path.c_str(), &now) == 0);
        REQUIRE(same_time(now.st_mtim, old.st_mtim));
        REQUIRE(now.st_size == old.st_size);
        if (!same_time(now.st_ctim, old.st_ctim))
            return now;
        REQUIRE(i < 200);
        std::this_thread::sleep_for(5ms); // the coarse clock has not ticked yet
    }
}

// A one-shot signal with deadlines.
class Gate {
public:
    void open() {
        std::call_once(once_, [this] { p_.set_value(); });
    }
    bool wait(std::chrono::milliseconds d = kDeadline) const {
        return f_.wait_for(d) == std::future_status::ready;
    }
    bool is_open() const { return wait(0ms); }

private:
    std::once_flag once_;
    std::promise<void> p_;
    std::shared_future<void> f_ = p_.get_future().share();
};

// Reads and writes through the DataPath without doctest assertions, so they
// may run on any thread (hooks, helpers).
std::optional<std::string> try_read(DataPath& dp, OpenFile& of, std::uint64_t off,
                                    std::size_t len) {
    std::string buf(len, '\0');
    auto r = dp.read(of, buf.data(), len, static_cast<off_t>(off));
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

bool try_write(DataPath& dp, OpenFile& of, std::uint64_t off, const std::string& data) {
    MemSource src(data);
    std::optional<Result<std::size_t>> got;
    dp.write(of, src, static_cast<off_t>(off),
             [&](Result<std::size_t> r) { got.emplace(std::move(r)); });
    return got.has_value() && *got && **got == data.size();
}

// A stat, from any thread; UINT64_MAX when there is none.
std::uint64_t stat_of(const DataPath& dp, const std::string& key) {
    for (auto& [k, v] : dp.stats())
        if (k == key)
            return std::stoull(v);
    return UINT64_MAX;
}

struct Fx {
    bg::Executors ex;
    test::TmpDir tmp;
    std::string backing = tmp / "backing";
    store::DeviceConfig dc;
    CachingParams cp;
    CacheHooks hooks;                  // handed to the DataPath at start()
    store::CacheDevice* dev = nullptr; // owned by dp
    std::unique_ptr<DataPath> dp;

    Fx() {
        ::mkdir(backing.c_str(), 0755);
        dc.dir = tmp / "cache";
        dc.cache_size = 16 * MiB; // 63 buckets
        dc.bucket_size = 256 * KiB;
        dc.backing = store::BackingIdentity{backing, 1, 2};
        cp.fill_size = 64 * KiB;
        cp.sequential_cutoff = 0;
        cp.backing_root = backing;
        ex.start();
    }
    ~Fx() { stop(); }
    void start() {
        auto d = store::open_cache_device(dc);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        dev = d->get();
        dp = make_caching_path(std::move(*d), cp, ex, hooks);
    }
    void stop() {
        if (dp) {
            dp->stop();
            dp.reset();
            dev = nullptr;
        }
    }
    CacheControl& ctl() { return dynamic_cast<CacheControl&>(*dp); }
    std::uint64_t stat(const std::string& key) {
        const auto v = stat_of(*dp, key);
        REQUIRE_MESSAGE(v != UINT64_MAX, "no stat " << key);
        return v;
    }
    std::string stat_str(const std::string& key) {
        for (auto& [k, v] : dp->stats())
            if (k == key)
                return v;
        FAIL("no stat " << key);
        return {};
    }
    std::string path(const std::string& name) const { return backing + "/" + name; }
    // The bucket record on disk (the DataPath must be stopped).
    meta::BucketRecord bucket_on_disk(std::uint32_t b) {
        REQUIRE_FALSE(dp);
        auto d = store::open_cache_device(dc);
        REQUIRE(d);
        auto v = (*d)->meta().get(meta::Cf::buckets, meta::bucket_key(b));
        REQUIRE(v);
        if (!v->has_value())
            return meta::BucketRecord{}; // never written: free at gen 0
        auto r = meta::decode_bucket(**v);
        REQUIRE(r);
        return *r;
    }
};

// One open file as the adapter holds it.
struct Handle {
    int fd = -1;
    OpenOut out;
    Handle(DataPath& dp, const std::string& path, int flags = O_RDWR) {
        fd = ::open(path.c_str(), flags);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        auto r = dp.open(fd, st, flags);
        REQUIRE(r);
        out = std::move(*r);
    }
    Handle(const Handle&) = delete;
    ~Handle() {
        out.file.reset();
        ::close(fd);
    }
    OpenFile& of() { return *out.file; }
    std::string read(DataPath& dp, std::uint64_t off, std::size_t len) {
        auto r = try_read(dp, *out.file, off, len);
        REQUIRE(r);
        return *r;
    }
    void write(DataPath& dp, std::uint64_t off, const std::string& data) {
        REQUIRE(try_write(dp, *out.file, off, data));
    }
    struct stat fstat() const {
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        return st;
    }
};

// Where two byte strings first differ (doctest would print them whole).
std::string first_diff(const std::string& a, const std::string& b) {
    const auto m = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size()) +
           ", first difference at byte " + std::to_string(m.first - a.begin());
}
#define CHECK_BYTES(a, b)                                                                          \
    do {                                                                                           \
        const std::string a_ = (a), b_ = (b);                                                      \
        CHECK_MESSAGE((a_ == b_), first_diff(a_, b_));                                             \
    } while (0)
#define REQUIRE_BYTES(a, b)                                                                        \
    do {                                                                                           \
        const std::string a_ = (a), b_ = (b);                                                      \
        REQUIRE_MESSAGE((a_ == b_), first_diff(a_, b_));                                           \
    } while (0)

// Every byte the cache serves for `name` equals the backing's.
void check_all_bytes(Fx& fx, const std::string& name) {
    const std::string truth = read_backing(fx.path(name));
    Handle h(*fx.dp, fx.path(name), O_RDONLY);
    for (std::uint64_t off = 0; off < truth.size(); off += 64 * KiB) {
        const auto len = std::min<std::uint64_t>(64 * KiB, truth.size() - off);
        INFO(name << " at " << off);
        REQUIRE_BYTES(h.read(*fx.dp, off, len), truth.substr(off, len));
    }
}

} // namespace

TEST_SUITE("cache races") {

    // 1. A change found by comparing the record with the backing (open,
    // getattr, attrs_changed) holds the owner lock from the compare to the
    // commit: an open of the same file in between waits, and then sees the
    // new bytes.
    TEST_CASE("race 1: an open during a change's compare waits and never serves old extents" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            std::atomic<bool> hook_returned{false};
            Gate t2_started, t2_opened, t2_done;
            std::atomic<bool> t2_blocked{false};
            std::atomic<bool> t2_opened_after_hook{false};
            std::atomic<bool> t2_keep{true};
            std::atomic<int> failures{0};
            std::optional<std::string> t2_bytes; // written by t2 before t2_done
        } s;
        Fx fx;
        std::jthread t2; // joined before fx goes
        const auto one = random_bytes(128 * KiB, 1), two = random_bytes(128 * KiB, 2);
        const std::string f = fx.path("f");
        fx.hooks.after_compare = [&] {
            if (!s.armed.exchange(false))
                return;
            // The owner lock is held: another thread opens and reads the file.
            t2 = std::jthread([&] {
                s.t2_started.open();
                int fd = ::open(f.c_str(), O_RDONLY);
                struct stat st {};
                if (fd < 0 || ::fstat(fd, &st) != 0) {
                    ++s.failures;
                    s.t2_done.open();
                    return;
                }
                auto r = fx.dp->open(fd, st, O_RDONLY);
                s.t2_opened_after_hook = s.hook_returned.load();
                s.t2_opened.open();
                if (!r) {
                    ++s.failures;
                } else {
                    s.t2_keep = r->keep_page_cache;
                    s.t2_bytes = try_read(*fx.dp, *r->file, 0, 128 * KiB);
                    r->file.reset();
                }
                ::close(fd);
                s.t2_done.open();
            });
            if (!s.t2_started.wait())
                ++s.failures;
            // It must be parked on the owner lock, not done.
            s.t2_blocked = !s.t2_opened.wait(kQuiet);
            s.hook_returned = true;
        };
        fx.start();
        write_file(f, one);
        Handle h0(*fx.dp, f, O_RDONLY);
        CHECK_BYTES(h0.read(*fx.dp, 0, 128 * KiB), one);
        fx.ctl().drain_fills();
        CHECK_BYTES(h0.read(*fx.dp, 0, 128 * KiB), one);
        REQUIRE(fx.stat("cache_hits") == 1);

        const struct stat now = change_behind(f, two);
        s.armed = true;
        bool t2_must_drop_pages = true;
        SUBCASE("the change is an open (close-to-open)") {
            Handle h1(*fx.dp, f, O_RDONLY);
            CHECK_FALSE(h1.out.keep_page_cache); // this open tells the kernel
            CHECK_BYTES(h1.read(*fx.dp, 0, 128 * KiB), two);
            t2_must_drop_pages = false; // the flag was consumed by h1's open
        }
        SUBCASE("the change is a getattr") {
            struct stat st = now;
            CHECK(fx.dp->getattr(FileRef{h0.fd, now}, st).backing_changed);
        }
        SUBCASE("the change is attrs_changed (chmod through the mount)") {
            CHECK(attr_change(*fx.dp, h0.fd, [&] { REQUIRE(::fchmod(h0.fd, 0600) == 0); })
                      .backing_changed);
        }
        REQUIRE(s.t2_done.wait());
        t2.join();
        CHECK(s.failures == 0);
        CHECK(s.t2_blocked);           // it waited for the owner lock...
        CHECK(s.t2_opened_after_hook); // ...until the change was done
        if (t2_must_drop_pages)
            CHECK_FALSE(s.t2_keep); // the kernel must drop its pages
        REQUIRE(s.t2_bytes.has_value());
        CHECK_BYTES(*s.t2_bytes, two); // never the old extents
        // An open from before the change reads the new bytes too.
        CHECK_BYTES(h0.read(*fx.dp, 0, 128 * KiB), two);
        CHECK(fx.stat("files_invalidated") == 1);
        fx.ctl().drain_fills();
        CHECK_BYTES(h0.read(*fx.dp, 0, 128 * KiB), two);
        CHECK(fx.stat("cache_read_errors") == 0);
    }

    // 2. A fill read its bytes before the file's extents were dropped: it must
    // stand down, whatever dropped them.
    TEST_CASE("race 2: a fill never commits after the file's extents were dropped" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            std::function<void()> action; // set before the read that posts the fill
            Gate acted;
        } s;
        Fx fx;
        fx.hooks.before_fill_commit = [&] {
            if (!s.armed.exchange(false))
                return;
            s.action();
            s.acted.open();
        };
        fx.start();
        const auto one = random_bytes(64 * KiB, 3), two = random_bytes(64 * KiB, 4);
        const std::string f = fx.path("f");
        write_file(f, one);
        Handle h(*fx.dp, f);

        SUBCASE("unlink") {
            s.action = [&] {
                struct stat st {};
                ::fstat(h.fd, &st);
                fx.dp->removed(FileRef{h.fd, st});
                ::unlink(f.c_str());
            };
            s.armed = true;
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), one);
            REQUIRE(s.acted.wait());
            fx.ctl().drain_fills();
            CHECK(fx.stat("cache_miss_collisions") == 1);
            CHECK(fx.stat("fills") == 0);
            CHECK(fx.stat("cache_live_bytes") == 0);
            // The open file still reads, from the backing.
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), one);
            fx.ctl().drain_fills();
            CHECK(fx.stat("cache_hits") == 0);
            CHECK(fx.stat("cache_live_bytes") == 0);
        }
        SUBCASE("truncate through the mount") {
            std::atomic<bool> ok{false};
            s.action = [&] {
                auto r = fx.dp->truncate(h.fd, true, 10 * KiB);
                ok = r && !r->backing_changed;
            };
            s.armed = true;
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), one);
            REQUIRE(s.acted.wait());
            fx.ctl().drain_fills();
            CHECK(ok);
            CHECK(fx.stat("cache_miss_collisions") == 1);
            CHECK(fx.stat("fills") == 0);
            CHECK(fx.stat("cache_live_bytes") == 0);
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), one.substr(0, 10 * KiB));
            fx.ctl().drain_fills();
            CHECK(fx.stat("fills") == 1); // the truncated file's own fill
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), one.substr(0, 10 * KiB));
            CHECK(fx.stat("cache_hits") == 1);
            CHECK(fx.stat("cache_live_bytes") == 10 * KiB);
        }
        SUBCASE("a backing change seen by attrs_changed") {
            std::atomic<bool> changed{false};
            s.action = [&] {
                struct stat before {};
                struct stat after {};
                // change_behind() asserts; do it by hand on this thread.
                ::fstat(h.fd, &before);
                for (int i = 0; i < 200; ++i) {
                    ::pwrite(h.fd, two.data(), two.size(), 0);
                    const struct timespec ts[2] = {before.st_atim, before.st_mtim};
                    ::futimens(h.fd, ts);
                    ::fstat(h.fd, &after);
                    if (!same_time(after.st_ctim, before.st_ctim))
                        break;
                    std::this_thread::sleep_for(5ms);
                }
                changed = attr_change(*fx.dp, h.fd, [&] { ::fchmod(h.fd, 0600); }).backing_changed;
            };
            s.armed = true;
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), one);
            REQUIRE(s.acted.wait());
            fx.ctl().drain_fills();
            CHECK(changed);
            CHECK(fx.stat("cache_miss_collisions") == 1);
            CHECK(fx.stat("fills") == 0);
            CHECK(fx.stat("cache_live_bytes") == 0);
            Handle h2(*fx.dp, f, O_RDONLY);
            CHECK_BYTES(h2.read(*fx.dp, 0, 64 * KiB), two);
            fx.ctl().drain_fills();
            CHECK_BYTES(h2.read(*fx.dp, 0, 64 * KiB), two);
            CHECK(fx.stat("cache_hits") == 1);
        }
        SUBCASE("a backing change seen by getattr") {
            std::atomic<bool> changed{false};
            s.action = [&] {
                struct stat before {};
                struct stat after {};
                ::fstat(h.fd, &before);
                for (int i = 0; i < 200; ++i) {
                    ::pwrite(h.fd, two.data(), two.size(), 0);
                    const struct timespec ts[2] = {before.st_atim, before.st_mtim};
                    ::futimens(h.fd, ts);
                    ::fstat(h.fd, &after);
                    if (!same_time(after.st_ctim, before.st_ctim))
                        break;
                    std::this_thread::sleep_for(5ms);
                }
                struct stat st = after;
                changed = fx.dp->getattr(FileRef{h.fd, after}, st).backing_changed;
            };
            s.armed = true;
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), one);
            REQUIRE(s.acted.wait());
            fx.ctl().drain_fills();
            CHECK(changed);
            CHECK(fx.stat("cache_miss_collisions") == 1);
            CHECK(fx.stat("fills") == 0);
            CHECK(fx.stat("cache_live_bytes") == 0);
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), two);
            fx.ctl().drain_fills();
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), two);
            CHECK(fx.stat("cache_hits") == 1);
        }
        SUBCASE("an O_TRUNC open through the mount") {
            std::atomic<bool> ok{false};
            s.action = [&] {
                int fd = ::open(f.c_str(), O_RDWR | O_TRUNC);
                struct stat st {};
                if (fd >= 0 && ::fstat(fd, &st) == 0) {
                    auto r = fx.dp->open(fd, st, O_RDWR | O_TRUNC);
                    ok = r.has_value();
                }
                if (fd >= 0)
                    ::close(fd);
            };
            s.armed = true;
            CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), one);
            REQUIRE(s.acted.wait());
            fx.ctl().drain_fills();
            CHECK(ok);
            CHECK(fx.stat("cache_miss_collisions") == 1);
            CHECK(fx.stat("fills") == 0);
            CHECK(fx.stat("cache_live_bytes") == 0);
            // Grown back on the backing by someone else: zeros, and a change.
            REQUIRE(::truncate(f.c_str(), 64 * KiB) == 0);
            Handle h2(*fx.dp, f, O_RDONLY);
            CHECK_BYTES(h2.read(*fx.dp, 0, 64 * KiB), std::string(64 * KiB, '\0'));
        }
        CHECK(fx.stat("cache_read_errors") == 0);
    }

    // 2b. An open with O_TRUNC through the mount empties the backing file in
    // the adapter, before DataPath::open. If that lands while our own write is
    // between the backing and the cache, the write must not leave its bytes
    // cached past the new end of file, where a later truncate up (or a write
    // further out) would turn them into hits on bytes the backing never had.
    TEST_CASE("race 2b: an O_TRUNC open during our own write leaves nothing past the end" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            Gate t_done;
            std::atomic<bool> t_ok{false};
        } s;
        Fx fx;
        const std::string f = fx.path("f");
        std::jthread t;
        fx.hooks.after_backing_write = [&] {
            if (!s.armed.exchange(false))
                return;
            // Our write is on the backing, the cache not updated yet: another
            // process opens the file with O_TRUNC through the mount.
            t = std::jthread([&] {
                int fd = ::open(f.c_str(), O_RDWR | O_TRUNC);
                struct stat st {};
                if (fd >= 0 && ::fstat(fd, &st) == 0) {
                    auto r = fx.dp->open(fd, st, O_RDWR | O_TRUNC);
                    s.t_ok = r.has_value();
                    if (r)
                        r->file.reset();
                }
                if (fd >= 0)
                    ::close(fd);
                s.t_done.open();
            });
            // It may wait for the write (a fix may serialise them): look only.
            (void)s.t_done.wait(1s);
        };
        fx.start();
        write_file(f, random_bytes(128 * KiB, 42));
        Handle h(*fx.dp, f);
        const auto patch = random_bytes(4 * KiB, 43);
        s.armed = true;
        h.write(*fx.dp, 64 * KiB, patch);
        REQUIRE(s.t_done.wait());
        t.join();
        CHECK(s.t_ok);
        // The truncate came last on the backing: the file is empty.
        CHECK(h.fstat().st_size == 0);
        CHECK(fx.stat("cache_live_bytes") == 0); // nothing cached past the end
        // Grown back through the mount: zeros, never the old write.
        auto r = fx.dp->truncate(h.fd, true, 128 * KiB);
        REQUIRE(r);
        CHECK_FALSE(r->backing_changed);
        CHECK_BYTES(h.read(*fx.dp, 64 * KiB, 4 * KiB), std::string(4 * KiB, '\0'));
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), std::string(128 * KiB, '\0'));
        CHECK_BYTES(read_backing(f), std::string(128 * KiB, '\0'));
        CHECK(fx.stat("cache_read_errors") == 0);
    }

    // 3. GC used to sweep stale keys from an earlier snapshot and delete fresh
    // fills of the same key. Here a stale extent is refilled while GC is in the
    // middle of a reclaim (between picking victims and bumping gens), and again
    // after it; GC runs once more, and the fresh extents must survive and hit.
    TEST_CASE("race 3: GC never removes a fresh fill of a key that was stale" *
              doctest::timeout(30)) {
        struct S {
            std::mutex mu;
            std::vector<std::uint32_t> written;              // buckets, in write order
            std::vector<std::vector<std::uint32_t>> victims; // per reclaim
            std::atomic<bool> refill_in_reclaim{false};
            std::atomic<bool> await_fill_write{false};
            Gate fill_written;
            std::atomic<int> failures{0};
            std::optional<std::string> hook_read;
        } s;
        Fx fx;
        const auto data = random_bytes(9 * 64 * KiB, 5);
        const std::string f = fx.path("f");
        std::unique_ptr<Handle> h;
        fx.hooks.after_device_write = [&](std::uint32_t b) {
            {
                std::lock_guard lk(s.mu);
                s.written.push_back(b);
            }
            if (s.await_fill_write.exchange(false))
                s.fill_written.open();
        };
        fx.hooks.before_reclaim = [&](const std::vector<std::uint32_t>& v) {
            {
                std::lock_guard lk(s.mu);
                s.victims.push_back(v);
            }
            if (!s.refill_in_reclaim.exchange(false))
                return;
            // GC has picked its victims and holds the commit lock: a reader
            // misses on the stale chunk 0 and its fill gets as far as it can
            // (bytes written, pinned, staged) before GC goes on.
            s.await_fill_write = true;
            s.hook_read = try_read(*fx.dp, h->of(), 0, 64 * KiB);
            if (!s.fill_written.wait())
                ++s.failures;
        };
        fx.start();
        write_file(f, data);
        h = std::make_unique<Handle>(*fx.dp, f, O_RDONLY);
        // Chunks 0-3 in the first bucket, 4-7 in the second, 8 in the third.
        CHECK(h->read(*fx.dp, 0, data.size()) == data);
        fx.ctl().drain_fills();
        REQUIRE(fx.stat("fills") == 9);
        std::vector<std::uint32_t> b;
        {
            std::lock_guard lk(s.mu);
            b = s.written;
        }
        REQUIRE(b.size() == 9);
        REQUIRE(b[0] == b[3]);
        REQUIRE(b[4] == b[7]);
        REQUIRE(b[0] != b[4]);
        REQUIRE(b[8] != b[4]);

        // Pass 1 reclaims the first bucket: chunks 0-3 are stale.
        fx.ctl().gc_now();
        REQUIRE(fx.stat("gc_buckets_reclaimed") == 1);
        {
            std::lock_guard lk(s.mu);
            REQUIRE(s.victims.size() == 1);
            CHECK(s.victims[0] == std::vector<std::uint32_t>{b[0]});
        }
        // Pass 2 picks the second bucket; chunk 0 is refilled inside it.
        s.refill_in_reclaim = true;
        fx.ctl().gc_now();
        fx.ctl().drain_fills();
        CHECK(s.failures == 0);
        REQUIRE(s.hook_read.has_value());
        CHECK_BYTES(*s.hook_read, data.substr(0, 64 * KiB));
        REQUIRE(fx.stat("gc_buckets_reclaimed") == 2);
        {
            std::lock_guard lk(s.mu);
            REQUIRE(s.victims.size() == 2);
            CHECK(s.victims[1] == std::vector<std::uint32_t>{b[4]});
        }
        CHECK(fx.stat("fills") == 10);
        // ...and chunk 4 after it, by plain ordering.
        CHECK(h->read(*fx.dp, 4 * 64 * KiB, 64 * KiB) == data.substr(4 * 64 * KiB, 64 * KiB));
        fx.ctl().drain_fills();
        CHECK(fx.stat("fills") == 11);
        // Pass 3, and any stale keys left: the fresh extents stay.
        fx.ctl().gc_now();
        const auto hits = fx.stat("cache_hits"), stale = fx.stat("cache_stale_reads");
        CHECK(h->read(*fx.dp, 0, 64 * KiB) == data.substr(0, 64 * KiB));
        CHECK(h->read(*fx.dp, 4 * 64 * KiB, 64 * KiB) == data.substr(4 * 64 * KiB, 64 * KiB));
        CHECK(h->read(*fx.dp, 8 * 64 * KiB, 64 * KiB) == data.substr(8 * 64 * KiB, 64 * KiB));
        CHECK(fx.stat("cache_hits") == hits + 3);
        CHECK(fx.stat("cache_stale_reads") == stale);
        // Live bytes: chunks 0, 4 and 8, nothing of the reclaimed buckets.
        CHECK(fx.stat("cache_live_bytes") == 3 * 64 * KiB);
        CHECK(fx.stat("buckets_pinned") == 0);
        CHECK(fx.stat("cache_read_errors") == 0);
        h.reset();
    }

    // 4 and 5. A fill's bucket is pinned from its device write to its commit:
    // GC passes that run meanwhile never reclaim it (its gen does not move, so
    // the commit is not stale and no later allocation reuses the space under
    // it), gens only grow on disk across a restart, and every cached byte is
    // the backing's.
    TEST_CASE("race 4: a GC pass while a fill is between device write and commit" *
              doctest::timeout(30)) {
        struct S {
            std::mutex mu;
            std::vector<std::uint32_t> written;
            std::vector<std::vector<std::uint32_t>> victims;
            std::atomic<bool> armed{false};
            std::atomic<std::uint32_t> held{UINT32_MAX};
            Gate in_hook, release;
            std::atomic<int> failures{0};
        } s;
        Fx fx;
        fx.dc.cache_size = 4 * MiB; // 15 buckets
        // GC starts when fewer than 13 buckets are free and then wants them all.
        const std::uint32_t total = 15;
        fx.cp.gc_low_percent = 0;
        for (unsigned pct = 1; pct <= 100; ++pct)
            if (total * pct / 100 == total - 2) {
                fx.cp.gc_low_percent = pct;
                break;
            }
        REQUIRE(fx.cp.gc_low_percent != 0);
        fx.cp.gc_high_percent = 100;
        fx.hooks.after_device_write = [&](std::uint32_t b) {
            {
                std::lock_guard lk(s.mu);
                s.written.push_back(b);
            }
            if (!s.armed.exchange(false))
                return;
            s.held = b;
            s.in_hook.open();
            if (!s.release.wait())
                ++s.failures;
        };
        fx.hooks.before_reclaim = [&](const std::vector<std::uint32_t>& v) {
            std::lock_guard lk(s.mu);
            s.victims.push_back(v);
        };
        fx.start();
        REQUIRE(fx.stat("buckets_total") == total);
        REQUIRE(fx.stat("buckets_reserve") == 1);
        auto fdata = random_bytes(256 * KiB, 6);
        const auto odata = random_bytes(256 * KiB, 7);
        const auto gdata = random_bytes(4 * KiB, 8);
        write_file(fx.path("f"), fdata);
        write_file(fx.path("old"), odata);
        write_file(fx.path("g"), gdata);
        std::uint32_t bx = 0, b0 = 0;
        {
            Handle hf(*fx.dp, fx.path("f"));
            Handle hg(*fx.dp, fx.path("g"));
            // Bucket X: a 4K write at the start of f's chunk 3, then old's chunks
            // 0-2; old's chunk 3 no longer fits and opens bucket 0.
            const auto patch = random_bytes(4 * KiB, 9);
            hf.write(*fx.dp, 3 * 64 * KiB, patch);
            fdata.replace(3 * 64 * KiB, patch.size(), patch);
            {
                Handle ho(*fx.dp, fx.path("old"), O_RDONLY);
                CHECK_BYTES(ho.read(*fx.dp, 0, 256 * KiB), odata);
                fx.ctl().drain_fills();
            }
            // f's chunks 0 and 1 go to bucket 0 too, which then has 64K left.
            CHECK_BYTES(hf.read(*fx.dp, 0, 128 * KiB), fdata.substr(0, 128 * KiB));
            fx.ctl().drain_fills();
            {
                std::lock_guard lk(s.mu);
                REQUIRE(s.written.size() == 7);
                bx = s.written[0];
                b0 = s.written[4];
                REQUIRE(s.written[3] == bx);
                REQUIRE(b0 != bx);
                REQUIRE(s.written[6] == b0);
            }
            REQUIRE(fx.stat("buckets_free") == total - 2);
            REQUIRE(fx.stat("gc_runs") == 0);

            // f's chunk 3 has a hole: a miss, and its fill takes bucket 0's last
            // 64K and parks between the device write and the commit.
            s.armed = true;
            CHECK_BYTES(hf.read(*fx.dp, 3 * 64 * KiB, 64 * KiB),
                        fdata.substr(3 * 64 * KiB, 64 * KiB));
            REQUIRE(s.in_hook.wait());
            CHECK(s.held == b0);
            CHECK(fx.stat("buckets_pinned") == 1); // race 5: the fill's bucket is pinned
            // A write elsewhere finds bucket 0 full (it is now a full, clean,
            // pinned bucket) and takes a new one: GC is kicked below its low mark
            // and wants every bucket it may take.
            hg.write(*fx.dp, 0, gdata);
            const auto deadline = std::chrono::steady_clock::now() + kDeadline;
            while (fx.stat("gc_runs") < 1 && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(1ms);
            REQUIRE(fx.stat("gc_runs") == 1);
            {
                std::lock_guard lk(s.mu);
                REQUIRE(s.victims.size() == 1);
                CHECK(s.victims[0] == std::vector<std::uint32_t>{bx}); // not bucket 0
            }
            CHECK(fx.stat("gc_buckets_reclaimed") == 1);
            CHECK(fx.stat("buckets_pinned") == 1);
            CHECK(fx.stat("buckets_free") == total - 2);
            s.release.open();
            fx.ctl().drain_fills();
            CHECK(s.failures == 0);
            CHECK(fx.stat("fills") == 7);
            CHECK(fx.stat("cache_miss_collisions") == 0);
            CHECK(fx.stat("fill_errors") == 0);
            CHECK(fx.stat("buckets_pinned") == 0);
            CHECK(fx.stat("gc_runs") == 1); // back at the low mark: no more passes
            // The fill committed, at bucket 0's unchanged gen: it hits.
            const auto hits = fx.stat("cache_hits");
            CHECK_BYTES(hf.read(*fx.dp, 3 * 64 * KiB, 64 * KiB),
                        fdata.substr(3 * 64 * KiB, 64 * KiB));
            CHECK_BYTES(hf.read(*fx.dp, 0, 128 * KiB), fdata.substr(0, 128 * KiB));
            CHECK(fx.stat("cache_hits") == hits + 2);
            CHECK(fx.stat("cache_stale_reads") == 0);
            // Live: f 0, 1, 3 and old 3 in bucket 0, g's 4K in the new one.
            CHECK(fx.stat("cache_live_bytes") == 4 * 64 * KiB + 4 * KiB);
        }
        fx.stop();
        const auto rx = fx.bucket_on_disk(bx), r0 = fx.bucket_on_disk(b0);
        CHECK(rx.gen == 1); // reclaimed once, never back to 0
        CHECK(rx.state == meta::BucketState::free);
        CHECK(r0.gen == 0); // never reclaimed
        CHECK(r0.live_bytes == 4 * 64 * KiB);
        fx.start();
        {
            Handle hf(*fx.dp, fx.path("f"), O_RDONLY);
            CHECK(hf.out.keep_page_cache);
            CHECK_BYTES(hf.read(*fx.dp, 3 * 64 * KiB, 64 * KiB),
                        fdata.substr(3 * 64 * KiB, 64 * KiB));
            CHECK(fx.stat("cache_hits") == 1);
        }
        check_all_bytes(fx, "f");
        check_all_bytes(fx, "old");
        check_all_bytes(fx, "g");
        fx.ctl().drain_fills();
        check_all_bytes(fx, "f");
        check_all_bytes(fx, "old");
        CHECK(fx.stat("cache_read_errors") == 0);
    }

    TEST_CASE("race 5: a gc_now while a write's bucket is pinned, then every byte checked" *
              doctest::timeout(30)) {
        struct S {
            std::mutex mu;
            std::vector<std::uint32_t> written;
            std::atomic<bool> armed{false};
            std::atomic<std::uint32_t> held{UINT32_MAX};
            Gate in_hook, release, w1_done;
            std::atomic<bool> w1_ok{false};
            std::atomic<int> failures{0};
        } s;
        Fx fx;
        fx.cp.gc_high_percent = 100; // a forced pass takes every bucket it may
        fx.hooks.after_device_write = [&](std::uint32_t b) {
            {
                std::lock_guard lk(s.mu);
                s.written.push_back(b);
            }
            if (!s.armed.exchange(false))
                return;
            s.held = b;
            s.in_hook.open();
            if (!s.release.wait())
                ++s.failures;
        };
        fx.start();
        auto fdata = random_bytes(256 * KiB, 10);
        const auto gdata = random_bytes(4 * KiB, 11);
        write_file(fx.path("f"), fdata);
        write_file(fx.path("g"), gdata);
        {
            Handle hf(*fx.dp, fx.path("f"));
            Handle hg(*fx.dp, fx.path("g"));
            CHECK_BYTES(hf.read(*fx.dp, 0, 192 * KiB), fdata.substr(0, 192 * KiB));
            fx.ctl().drain_fills();
            std::uint32_t b0 = 0;
            {
                std::lock_guard lk(s.mu);
                REQUIRE(s.written.size() == 3);
                b0 = s.written[0];
            }
            // W1 fills bucket 0's last 64K and parks before its commit.
            const auto w1 = random_bytes(64 * KiB, 12);
            s.armed = true;
            std::jthread writer([&] {
                s.w1_ok = try_write(*fx.dp, hf.of(), 192 * KiB, w1);
                s.w1_done.open();
            });
            REQUIRE(s.in_hook.wait());
            CHECK(s.held == b0);
            CHECK(fx.stat("buckets_pinned") == 1);
            // Bucket 0 is full now, and GC is asked for everything it can take.
            hg.write(*fx.dp, 0, gdata);
            fx.ctl().gc_now();
            CHECK(fx.stat("gc_runs") >= 1);
            CHECK(fx.stat("gc_buckets_reclaimed") == 0);
            CHECK(fx.stat("buckets_pinned") == 1);
            CHECK_FALSE(s.w1_done.is_open());
            s.release.open();
            REQUIRE(s.w1_done.wait());
            writer.join();
            CHECK(s.w1_ok);
            CHECK(s.failures == 0);
            fdata.replace(192 * KiB, w1.size(), w1);
            CHECK(fx.stat("buckets_pinned") == 0);
            auto hits = fx.stat("cache_hits");
            CHECK_BYTES(hf.read(*fx.dp, 0, 256 * KiB), fdata);
            CHECK(fx.stat("cache_hits") == hits + 1);
            // Unpinned, bucket 0 goes at the next pass; new writes may reuse it.
            fx.ctl().gc_now();
            CHECK(fx.stat("gc_buckets_reclaimed") == 1);
            hits = fx.stat("cache_hits");
            CHECK_BYTES(hf.read(*fx.dp, 0, 256 * KiB), fdata);
            CHECK(fx.stat("cache_hits") == hits);
        }
    }

    // The same seam under load: fills and writes of several files while GC
    // keeps reclaiming a tiny cache; every device write in flight is pinned, and
    // every byte served is the backing's.
    TEST_CASE("race 5: fills and writes under constant reclaim serve only right bytes" *
              doctest::timeout(30)) {
        {
            std::atomic<bool> done{false};
            std::atomic<int> unpinned{0};
            std::atomic<int> seen{0};
            Fx fx;
            fx.dc.cache_size = 2 * MiB; // 7 buckets
            fx.cp.gc_low_percent = 60;
            fx.cp.fill_size = 16 * KiB;
            fx.hooks.after_device_write = [&](std::uint32_t) {
                if (done)
                    return;
                ++seen;
                if (stat_of(*fx.dp, "buckets_pinned") < 1)
                    ++unpinned;
            };
            fx.start();
            constexpr int kFiles = 4;
            for (int i = 0; i < kFiles; ++i)
                write_file(fx.path("l" + std::to_string(i)), random_bytes(512 * KiB, 20 + i));
            {
                std::vector<std::unique_ptr<Handle>> hs;
                for (int i = 0; i < kFiles; ++i)
                    hs.push_back(
                        std::make_unique<Handle>(*fx.dp, fx.path("l" + std::to_string(i))));
                std::atomic<int> thread_failures{0};
                std::vector<std::jthread> ts;
                for (int t = 0; t < 2; ++t)
                    ts.emplace_back([&, t] {
                        std::mt19937 rng(static_cast<unsigned>(t));
                        for (int i = 0; i < 150; ++i) {
                            auto& h = *hs[rng() % kFiles];
                            const std::uint64_t off = (rng() % 32) * 16 * KiB;
                            if (t == 1 && i % 3 == 0) {
                                const std::string w(4 * KiB, static_cast<char>('a' + i % 26));
                                if (!try_write(*fx.dp, h.of(), off + (rng() % 4) * 4 * KiB, w))
                                    ++thread_failures;
                            } else if (!try_read(*fx.dp, h.of(), off, 16 * KiB)) {
                                ++thread_failures;
                            }
                            if (i % 50 == 49)
                                fx.ctl().gc_now();
                        }
                    });
                ts.clear(); // joins
                CHECK(thread_failures == 0);
            }
            fx.ctl().drain_fills();
            done = true;
            CHECK(seen > 0);
            CHECK(unpinned == 0);
            CHECK(fx.stat("gc_buckets_reclaimed") > 0);
            CHECK(fx.stat("buckets_pinned") == 0);
            for (int i = 0; i < kFiles; ++i)
                check_all_bytes(fx, "l" + std::to_string(i));
            fx.ctl().drain_fills();
            for (int i = 0; i < kFiles; ++i)
                check_all_bytes(fx, "l" + std::to_string(i));
            CHECK(fx.stat("cache_read_errors") == 0);
        }
    }

    // 6. mmap writeback and write(2) of one range are not serialised by the
    // kernel: the second write must not reach the backing before the first
    // one's cache update is done, so the cache ends with the backing's bytes.
    TEST_CASE("race 6: overlapping writes reach the backing and the cache in one order" *
              doctest::timeout(30)) {
        for (auto mode : {config::CacheMode::writethrough, config::CacheMode::writearound}) {
            CAPTURE(config::to_string(mode));
            struct S {
                std::atomic<bool> armed{false};
                Gate w2_started, w2_done;
                std::atomic<bool> w2_ok{false};
                std::atomic<bool> w2_waited{false};
                std::atomic<bool> backing_had_w1{false};
                std::atomic<int> failures{0};
            } s;
            Fx fx;
            fx.cp.mode = mode;
            std::unique_ptr<Handle> h;
            std::jthread w2_thread;
            const auto base = random_bytes(128 * KiB, 13);
            const auto w1 = random_bytes(16 * KiB, 14), w2 = random_bytes(16 * KiB, 15);
            const std::uint64_t at = 60 * KiB; // across the first chunk boundary
            fx.hooks.after_backing_write = [&] {
                if (!s.armed.exchange(false))
                    return;
                // W1 is on the backing, its cache update not done: W2 starts.
                w2_thread = std::jthread([&] {
                    s.w2_started.open();
                    s.w2_ok = try_write(*fx.dp, h->of(), at, w2);
                    s.w2_done.open();
                });
                if (!s.w2_started.wait())
                    ++s.failures;
                s.w2_waited = !s.w2_done.wait(kQuiet);
                std::string got(w1.size(), '\0');
                s.backing_had_w1 = ::pread(h->fd, got.data(), got.size(), at) ==
                                       static_cast<ssize_t>(got.size()) &&
                                   got == w1;
            };
            fx.start();
            write_file(fx.path("f"), base);
            h = std::make_unique<Handle>(*fx.dp, fx.path("f"));
            CHECK(h->read(*fx.dp, 0, 128 * KiB) == base);
            fx.ctl().drain_fills();
            s.armed = true;
            h->write(*fx.dp, at, w1);
            REQUIRE(s.w2_done.wait());
            w2_thread.join();
            CHECK(s.failures == 0);
            CHECK(s.w2_ok);
            CHECK(s.w2_waited);      // W2 queued behind W1...
            CHECK(s.backing_had_w1); // ...and had not touched the backing
            auto truth = base;
            truth.replace(at, w2.size(), w2);
            CHECK_BYTES(read_backing(fx.path("f")), truth);
            fx.ctl().drain_fills();
            auto hits = fx.stat("cache_hits");
            // The written range alone first: in writethrough it is the cache's
            // own bytes (a hit), and they must be W2's.
            CHECK(h->read(*fx.dp, at, w2.size()) == w2);
            if (mode == config::CacheMode::writethrough)
                CHECK(fx.stat("cache_hits") == hits + 1);
            fx.ctl().drain_fills();
            hits = fx.stat("cache_hits");
            CHECK(h->read(*fx.dp, 0, 128 * KiB) == truth);
            if (mode == config::CacheMode::writethrough)
                CHECK(fx.stat("cache_hits") == hits + 1); // filled around the write
            fx.ctl().drain_fills();
            CHECK(h->read(*fx.dp, 0, 128 * KiB) == truth);
            CHECK(fx.stat("cache_read_errors") == 0);
            h.reset();
        }
    }

    // 7. A local operation that finds the backing changed behind the mount
    // (same size and mtime; only the ctime tells) reports it and drops the
    // file's extents before it does its own work.
    TEST_CASE("race 7: a local op after a backing change never leaves stale extents" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const auto one = random_bytes(128 * KiB, 16), two = random_bytes(128 * KiB, 17);
        const std::string f = fx.path("f");
        write_file(f, one);
        Handle h(*fx.dp, f);
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), one);
        fx.ctl().drain_fills();
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), one);
        REQUIRE(fx.stat("cache_hits") == 1);
        const struct stat now = change_behind(f, two);
        std::string truth = two;

        SUBCASE("attrs_changed") {
            CHECK(attr_change(*fx.dp, h.fd, [&] { REQUIRE(::fchmod(h.fd, 0600) == 0); })
                      .backing_changed);
        }
        SUBCASE("truncate to the same size") {
            auto r = fx.dp->truncate(h.fd, true, 128 * KiB);
            REQUIRE(r);
            CHECK(r->backing_changed);
        }
        SUBCASE("truncate by path to the same size") {
            int opath = ::open(f.c_str(), O_PATH);
            REQUIRE(opath >= 0);
            auto r = fx.dp->truncate(opath, false, 128 * KiB);
            ::close(opath);
            REQUIRE(r);
            CHECK(r->backing_changed);
        }
        SUBCASE("getattr") {
            struct stat st = now;
            CHECK(fx.dp->getattr(FileRef{h.fd, now}, st).backing_changed);
        }
        SUBCASE("a write elsewhere") {
            const auto patch = random_bytes(4 * KiB, 18);
            h.write(*fx.dp, 100 * KiB, patch);
            truth.replace(100 * KiB, patch.size(), patch);
        }
        CHECK(fx.stat("backing_changes_seen") == 1);
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), truth);
        fx.ctl().drain_fills();
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), truth);
        Handle h2(*fx.dp, f, O_RDONLY);
        CHECK_BYTES(h2.read(*fx.dp, 0, 128 * KiB), truth);
        CHECK(fx.stat("cache_read_errors") == 0);
    }

    // 7b. The reverse of race 7: our own write is not a change behind the
    // mount, even when a metadata change through the mount (chmod: the adapter
    // reports it with attrs_changed) lands while the write is between the
    // backing and the cache (mmap writeback is not serialised with setattr).
    TEST_CASE("race 7b: attrs_changed during our own write is not a backing change" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            Gate t_done;
            std::atomic<bool> t_changed{false};
            std::atomic<int> failures{0};
        } s;
        Fx fx;
        std::unique_ptr<Handle> h;
        std::jthread t;
        fx.hooks.after_backing_write = [&] {
            if (!s.armed.exchange(false))
                return;
            // The write is on the backing; the cache and the record follow it
            // after this hook. Another thread chmods the file through the mount.
            t = std::jthread([&] {
                s.t_changed = attr_change(*fx.dp, h->fd, [&] {
                                  if (::fchmod(h->fd, 0600) != 0)
                                      ++s.failures;
                              }).backing_changed;
                s.t_done.open();
            });
            // It may wait for the write (a fix may serialise them): look only.
            (void)s.t_done.wait(kQuiet);
        };
        fx.start();
        auto data = random_bytes(128 * KiB, 40);
        write_file(fx.path("f"), data);
        h = std::make_unique<Handle>(*fx.dp, fx.path("f"));
        CHECK_BYTES(h->read(*fx.dp, 0, 128 * KiB), data);
        fx.ctl().drain_fills();
        const auto patch = random_bytes(4 * KiB, 41);
        s.armed = true;
        h->write(*fx.dp, 100 * KiB, patch);
        data.replace(100 * KiB, patch.size(), patch);
        REQUIRE(s.t_done.wait());
        t.join();
        CHECK(s.failures == 0);
        CHECK_FALSE(s.t_changed);
        CHECK(fx.stat("backing_changes_seen") == 0);
        CHECK(fx.stat("files_invalidated") == 0);
        // The file's cache survived: the untouched chunk and the write hit.
        const auto hits = fx.stat("cache_hits");
        CHECK_BYTES(h->read(*fx.dp, 0, 64 * KiB), data.substr(0, 64 * KiB));
        CHECK_BYTES(h->read(*fx.dp, 100 * KiB, 4 * KiB), patch);
        CHECK(fx.stat("cache_hits") == hits + 2);
        // And the next open may keep the kernel's pages.
        Handle h2(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK(h2.out.keep_page_cache);
        CHECK_BYTES(h2.read(*fx.dp, 0, 128 * KiB), data);
        h.reset();
    }

    // 8. Cache device errors: reads fall back to the backing and count against
    // the error budget; past it the mount degrades to a passthrough that stays
    // correct. Failed writes during fills leave nothing pinned or accounted.
    TEST_CASE("race 8: cache device read errors, then degraded" * doctest::timeout(30)) {
        Fx fx;
        fx.cp.io_error_limit = 2;
        fx.cp.io_error_halflife_s = 3600;
        fx.start();
        auto data = random_bytes(512 * KiB, 19);
        write_file(fx.path("f"), data);
        Handle h(*fx.dp, fx.path("f"));
        CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), data.substr(0, 256 * KiB));
        fx.ctl().drain_fills();
        REQUIRE(fx.stat("fills") == 4);
        std::atomic<int> read_faults{0};
        fx.dev->set_fault([&](store::DataOp op, std::uint64_t, std::size_t) {
            if (op != store::DataOp::read)
                return 0;
            ++read_faults;
            return EIO;
        });
        // Within the budget: hits turn into misses, the data is right.
        for (std::uint64_t c = 0; c < 2; ++c) {
            CHECK_BYTES(h.read(*fx.dp, c * 64 * KiB, 64 * KiB),
                        data.substr(c * 64 * KiB, 64 * KiB));
            CHECK(fx.stat("cache_io_errors") == c + 1);
            CHECK(fx.stat_str("cache_state") == "running");
        }
        CHECK(fx.stat("cache_hits") == 0);
        // Past it: degraded.
        CHECK_BYTES(h.read(*fx.dp, 2 * 64 * KiB, 64 * KiB), data.substr(2 * 64 * KiB, 64 * KiB));
        CHECK(fx.stat("cache_io_errors") == 3);
        CHECK(fx.stat_str("cache_state") == "degraded");
        fx.ctl().drain_fills();
        const auto fills = fx.stat("fills");
        const auto faults = read_faults.load();
        // Reads and writes keep working, from and to the backing, and stay right.
        CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), data);
        const auto patch = random_bytes(8 * KiB, 20);
        h.write(*fx.dp, 300 * KiB, patch);
        data.replace(300 * KiB, patch.size(), patch);
        CHECK_BYTES(read_backing(fx.path("f")), data);
        CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), data);
        Handle h2(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK_BYTES(h2.read(*fx.dp, 256 * KiB, 256 * KiB), data.substr(256 * KiB));
        fx.ctl().drain_fills();
        CHECK(fx.stat("fills") == fills);    // nothing committed while degraded
        CHECK(read_faults.load() == faults); // and the device is not read
        CHECK(fx.stat_str("cache_state") == "degraded");
        fx.dev->set_fault({});
        CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), data);
        fx.ctl().drain_fills();
        CHECK(fx.stat("fills") == fills);
    }

    TEST_CASE("race 8: cache device write errors during fills leave no bucket behind" *
              doctest::timeout(30)) {
        for (int err : {EIO, ENOSPC}) {
            CAPTURE(err);
            Fx fx;
            fx.cp.io_error_limit = 1000; // this test is about accounting, not the budget
            fx.cp.gc_high_percent = 100;
            fx.start();
            const auto total = fx.stat("buckets_total");
            auto data = random_bytes(512 * KiB, 21);
            write_file(fx.path("f"), data);
            Handle h(*fx.dp, fx.path("f"));
            std::atomic<int> write_faults{0};
            fx.dev->set_fault([&](store::DataOp op, std::uint64_t, std::size_t) {
                if (op != store::DataOp::write)
                    return 0;
                ++write_faults;
                return err;
            });
            // Eight fills of 64K: all fail after taking their space.
            CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), data);
            fx.ctl().drain_fills();
            CHECK(fx.stat("fill_errors") == 8);
            CHECK(fx.stat("fills") == 0);
            CHECK(fx.stat("cache_io_errors") == 8);
            CHECK(write_faults == 8);
            CHECK(fx.stat("buckets_pinned") == 0);
            CHECK(fx.stat("cache_live_bytes") == 0);
            // A writethrough write that cannot be cached is punched, and right.
            const auto patch = random_bytes(8 * KiB, 22);
            h.write(*fx.dp, 10 * KiB, patch);
            data.replace(10 * KiB, patch.size(), patch);
            CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), data);
            fx.ctl().drain_fills();
            CHECK(fx.stat("fills") == 0);
            CHECK(fx.stat_str("cache_state") == "running");
            CHECK(fx.stat("buckets_pinned") == 0);
            CHECK(fx.stat("cache_live_bytes") == 0);
            // Fault cleared: GC takes back every bucket but the one foreground
            // write point still has open; the dead bytes go with them.
            fx.dev->set_fault({});
            // 17 failed allocations (8 fills of 64K, the write's 4K, 8 more
            // fills) filled 4 buckets and left 64K in a fifth, still the
            // foreground write point's.
            fx.ctl().gc_now();
            CHECK(fx.stat("gc_buckets_reclaimed") == 4);
            CHECK(fx.stat("buckets_free") == total - 1);
            CHECK(fx.stat("buckets_pinned") == 0);
            CHECK(fx.stat("cache_live_bytes") == 0);
            CHECK(fx.stat("cache_used_bytes") == 64 * KiB); // the open bucket's dead bytes
            // And the cache works again.
            CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), data);
            fx.ctl().drain_fills();
            CHECK(fx.stat("fills") == 8);
            CHECK(fx.stat("cache_live_bytes") == 512 * KiB);
            const auto hits = fx.stat("cache_hits");
            CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), data);
            CHECK(fx.stat("cache_hits") == hits + 1);
            CHECK(fx.stat("cache_read_errors") == 0);
        }
    }

    // 9. The file table holds files in use, never history.
    TEST_CASE("race 9: files_tracked returns to the files still open" * doctest::timeout(30)) {
        Fx fx;
        fx.start();
        constexpr int kFiles = 8;
        std::vector<std::string> datas;
        for (int i = 0; i < kFiles; ++i) {
            datas.push_back(random_bytes(128 * KiB, 30 + static_cast<unsigned>(i)));
            write_file(fx.path("f" + std::to_string(i)), datas.back());
        }
        CHECK(fx.stat("files_tracked") == 0);
        {
            std::vector<std::unique_ptr<Handle>> hs;
            for (int i = 0; i < kFiles; ++i)
                hs.push_back(std::make_unique<Handle>(*fx.dp, fx.path("f" + std::to_string(i))));
            // A second open of the same file is the same entry.
            Handle again(*fx.dp, fx.path("f0"), O_RDONLY);
            CHECK(fx.stat("files_tracked") == kFiles);
            for (int i = 0; i < kFiles; ++i)
                CHECK(hs[i]->read(*fx.dp, 0, 128 * KiB) == datas[i]);
            // Fills in flight hold their file; closing does not wait for them.
            hs.clear();
            CHECK(fx.stat("files_tracked") >= 1);
            fx.ctl().drain_fills();
            CHECK(fx.stat("files_tracked") == 1);
        }
        fx.ctl().drain_fills();
        CHECK(fx.stat("files_tracked") == 0);
        CHECK(fx.stat("fills") == 2 * kFiles);

        // Calls on files that are not open leave nothing behind.
        {
            int fd = ::open(fx.path("f1").c_str(), O_RDWR);
            REQUIRE(fd >= 0);
            struct stat st {};
            REQUIRE(::fstat(fd, &st) == 0);
            fx.dp->getattr(FileRef{fd, st}, st);
            attr_change(*fx.dp, fd, [&] { REQUIRE(::fchmod(fd, 0600) == 0); });
            REQUIRE(fx.dp->truncate(fd, true, 64 * KiB));
            ::close(fd);
            CHECK(fx.stat("files_tracked") == 0);
        }
        // Hits, and the unlink of an open file.
        {
            Handle h(*fx.dp, fx.path("f2"), O_RDONLY);
            CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), datas[2]);
            CHECK(fx.stat("files_tracked") == 1);
            fx.dp->removed(FileRef{h.fd, h.fstat()});
            REQUIRE(::unlink(fx.path("f2").c_str()) == 0);
            CHECK(fx.stat("files_tracked") == 1);
            CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), datas[2]);
            fx.ctl().drain_fills();
            CHECK(fx.stat("files_tracked") == 1);
        }
        fx.ctl().drain_fills();
        CHECK(fx.stat("files_tracked") == 0);
        // Fills in flight when the file is unlinked and closed.
        write_file(fx.path("n"), datas[4]);
        {
            Handle h(*fx.dp, fx.path("n"), O_RDONLY);
            CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), datas[4]);
            fx.dp->removed(FileRef{h.fd, h.fstat()});
            REQUIRE(::unlink(fx.path("n").c_str()) == 0);
        }
        fx.ctl().drain_fills();
        CHECK(fx.stat("files_tracked") == 0);
        CHECK(fx.stat("cache_read_errors") == 0);
    }

} // TEST_SUITE
