// cache_mode=writeback (issue #7) on the caching DataPath, without FUSE: a
// real backing directory in a temporary directory, a real cache device and
// RocksDB index, threaded executors. The tests call open/read/write/fsync/
// truncate/getattr/removed/flush as the adapter would, and look at the
// backing directly.
//
// Determinism:
//  - a race is forced through a seam (CacheHooks, the cache device's fault
//    hook): one side parks in the hook on a Gate, the other side runs from
//    another thread, then the gate opens. No sleep decides an interleaving;
//    the few bounded waits that expect nothing to happen (kQuiet) only make
//    a wrong order visible.
//  - the periodic writeback pass (about once a second) must not write data
//    behind a test's back: tests that look at dirty data either run with a
//    long writeback_delay (then flush() is the pass that writes), or hold the
//    writeback executor's only thread with a PoolPause while they look.
//  - every wait has a deadline; a call that could hang (a write into a full
//    cache, a flush) runs under run_within(), which ends the process with a
//    message instead of hanging the suite.
//
// Tests whose comment starts "Regression" each forced a bug that was found
// by this suite and fixed; the comment says what the bug was.
#include "data_path_support.hpp"
#include "overcache/cache/caching_path.hpp"
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/schema.hpp"
#include "overcache/store/cache_device.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
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
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;
// Every wait for something that must happen.
constexpr auto kDeadline = 10s;
// How long a wait for something that must NOT happen (yet) looks.
constexpr auto kQuiet = 300ms;
// A writeback_delay no test outlives: only flush() writes back.
constexpr double kLongDelay = 3600;

std::int64_t ns_of(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

std::int64_t wall_ns() {
    struct timespec t {};
    ::clock_gettime(CLOCK_REALTIME, &t);
    return ns_of(t);
}

// The backing file's bytes, read directly.
std::string read_backing(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    REQUIRE_MESSAGE(fd >= 0, path << ": " << std::strerror(errno));
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    std::string s(static_cast<std::size_t>(st.st_size), '\0');
    REQUIRE(::pread(fd, s.data(), s.size(), 0) == static_cast<ssize_t>(s.size()));
    ::close(fd);
    return s;
}

struct stat stat_path(const std::string& path) {
    struct stat st {};
    REQUIRE_MESSAGE(::stat(path.c_str(), &st) == 0, path << ": " << std::strerror(errno));
    return st;
}

// `data` at `off` in the model of a file (zeros fill a gap).
void put(std::string& model, std::uint64_t off, const std::string& data) {
    if (model.size() < off + data.size())
        model.resize(off + data.size(), '\0');
    model.replace(off, data.size(), data);
}

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

// A one-shot signal with deadlines.
class Gate {
public:
    void open() {
        std::call_once(once_, [this] { p_.set_value(); });
    }
    bool wait(std::chrono::milliseconds d = kDeadline) const {
        return f_.wait_for(d) == std::future_status::ready;
    }

private:
    std::once_flag once_;
    std::promise<void> p_;
    std::shared_future<void> f_ = p_.get_future().share();
};

// A seam that holds the first call after arm(): `entered` opens, and the
// call returns once `release` opens. Later calls pass.
struct HoldOnce {
    std::atomic<bool> armed{false};
    Gate entered, release;
    void arm() { armed = true; }
    void operator()() {
        if (armed.exchange(false)) {
            entered.open();
            CHECK(release.wait());
        }
    }
};

// Runs `fn` on another thread and waits for it at most `limit`. A call that
// does not return is a hang: the process ends with a message (a REQUIRE
// would unwind into destructors that wait for the same hang).
template <class F>
void run_within(const char* what, F&& fn, std::chrono::seconds limit = kDeadline) {
    auto done = std::make_shared<Gate>();
    std::thread t([done, &fn] {
        fn();
        done->open();
    });
    if (!done->wait(limit)) {
        std::fprintf(stderr, "writeback_test: %s did not return within %lld s: a hang\n", what,
                     static_cast<long long>(limit.count()));
        std::fflush(stderr);
        std::_Exit(3);
    }
    t.join();
}

// Holds the only thread of an executor (the writeback pool has one) until
// released or destroyed: nothing posted to it runs meanwhile, neither the
// periodic pass nor a kick. Returns once the thread is held, so a pass that
// was running has finished.
class PoolPause {
public:
    explicit PoolPause(bg::IoPool& pool) : s_(std::make_shared<State>()) {
        boost::asio::post(pool.executor(), [s = s_] {
            s->entered.open();
            s->released.wait(60s);
        });
        REQUIRE_MESSAGE(s_->entered.wait(), "the pool never ran the pause");
    }
    PoolPause(const PoolPause&) = delete;
    PoolPause& operator=(const PoolPause&) = delete;
    ~PoolPause() { release(); }
    void release() { s_->released.open(); }

private:
    struct State {
        Gate entered, released;
    };
    std::shared_ptr<State> s_;
};

// Reads and writes through the DataPath without doctest assertions, so they
// may run on any thread.
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

// A write as the adapter hands it over; the result whenever `done` comes
// (nullopt: it did not come within the deadline).
std::optional<Result<std::size_t>> write_through(DataPath& dp, OpenFile& of, std::uint64_t off,
                                                 const std::string& data) {
    MemSource src(data);
    auto p = std::make_shared<std::promise<Result<std::size_t>>>();
    auto f = p->get_future();
    dp.write(of, src, static_cast<off_t>(off), [p](Result<std::size_t> r) { p->set_value(r); });
    if (f.wait_for(kDeadline) != std::future_status::ready)
        return std::nullopt;
    return f.get();
}

bool try_write(DataPath& dp, OpenFile& of, std::uint64_t off, const std::string& data) {
    auto r = write_through(dp, of, off, data);
    return r && *r && **r == data.size();
}

std::optional<Result<void>> fsync_through(DataPath& dp, OpenFile& of, bool datasync) {
    auto p = std::make_shared<std::promise<Result<void>>>();
    auto f = p->get_future();
    dp.fsync(of, datasync, [p](Result<void> r) { p->set_value(r); });
    if (f.wait_for(kDeadline) != std::future_status::ready)
        return std::nullopt;
    return f.get();
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
    std::string lost = tmp / "lost+found";
    store::DeviceConfig dc;
    CachingParams cp;
    CacheHooks hooks;                  // handed to the DataPath at start()
    store::CacheDevice* dev = nullptr; // owned by dp
    std::unique_ptr<DataPath> dp;
    int snapshots = 0;

    Fx() {
        ::mkdir(backing.c_str(), 0755);
        dc.dir = tmp / "cache";
        dc.cache_size = 16 * MiB; // 63 buckets
        dc.bucket_size = 256 * KiB;
        dc.backing = store::BackingIdentity{backing, 1, 2};
        cp.mode = config::CacheMode::writeback;
        cp.fill_size = 64 * KiB;
        cp.sequential_cutoff = 0;
        cp.backing_root = backing;
        cp.lost_found_dir = lost;
        cp.writeback_delay_s = kLongDelay;
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

    // flush() through the DataPath, waited for; `calls` counts its done.
    Result<void> flush(std::shared_ptr<std::atomic<int>> calls = {}) {
        if (!calls)
            calls = std::make_shared<std::atomic<int>>(0);
        auto p = std::make_shared<std::promise<Result<void>>>();
        auto f = p->get_future();
        dp->flush([p, calls](Result<void> r) {
            if (calls->fetch_add(1) == 0)
                p->set_value(r);
        });
        run_within("flush", [&] { f.wait(); });
        return f.get();
    }
    void writeback_now() {
        run_within("writeback_now", [&] { ctl().writeback_now(); });
    }

    // A copy of the cache directory as it is on disk now, while the mount
    // runs: what a crash at this instant would leave (the data file, the
    // index's SST files and WAL; nothing of what only memory holds). Safe to
    // call from any thread; empty on error.
    std::string snapshot() {
        const std::string to = tmp / ("snapshot-" + std::to_string(++snapshots));
        std::error_code ec;
        fs::copy(dc.dir, to, fs::copy_options::recursive, ec);
        return ec ? std::string() : to;
    }

    // The files in lost_found_dir.
    std::vector<std::string> lost_files() const {
        std::vector<std::string> out;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(lost, ec))
            out.push_back(e.path().string());
        return out;
    }

    // The flags of the only file record in the index at `dir` (the
    // DataPath must not run on it); nullopt when it does not decode.
    std::optional<std::uint32_t> record_flags_at(const std::string& dir) {
        store::DeviceConfig c = dc;
        c.dir = dir;
        auto d = store::open_cache_device(c);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        auto cur = (*d)->meta().cursor(meta::Cf::files);
        std::optional<std::uint32_t> flags;
        int n = 0;
        for (cur.seek_to_first(); cur.valid(); cur.next()) {
            if (auto r = meta::decode_file_record(cur.value()))
                flags = r->flags;
            ++n;
        }
        REQUIRE(n == 1);
        return flags;
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
        auto r = write_through(dp, *out.file, off, data);
        REQUIRE_MESSAGE(r.has_value(), "a write did not complete");
        REQUIRE_MESSAGE(*r, (*r ? "" : to_string(r->error())));
        REQUIRE(**r == data.size());
    }
    void fsync(DataPath& dp, bool datasync = false) {
        auto r = fsync_through(dp, *out.file, datasync);
        REQUIRE_MESSAGE(r.has_value(), "an fsync did not complete");
        REQUIRE_MESSAGE(*r, (*r ? "" : to_string(r->error())));
    }
    struct stat fstat() const {
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        return st;
    }
};

// getattr as the adapter calls it: the backing's fstat of `fd`, then the
// DataPath's overlay.
struct stat getattr_of(DataPath& dp, int fd) {
    struct stat backing {};
    REQUIRE(::fstat(fd, &backing) == 0);
    struct stat shown = backing;
    (void)dp.getattr(FileRef{fd, backing}, shown);
    return shown;
}

// show_attrs of a file by path (an O_PATH fd, as for a lookup).
struct stat show_attrs_of(DataPath& dp, const std::string& path) {
    const int fd = ::open(path.c_str(), O_PATH);
    REQUIRE(fd >= 0);
    struct stat backing {};
    REQUIRE(::fstat(fd, &backing) == 0);
    struct stat shown = backing;
    dp.show_attrs(FileRef{fd, backing}, shown);
    ::close(fd);
    return shown;
}

// The only conflict copy in lost_found_dir: `ranges` (offset, bytes) at
// their offsets, zeros elsewhere, `size` bytes in all, named after `name`.
void check_conflict_copy(Fx& fx, const std::string& name,
                         const std::vector<std::pair<std::uint64_t, std::string>>& ranges,
                         std::uint64_t size) {
    const auto files = fx.lost_files();
    REQUIRE(files.size() == 1);
    const std::string base = fs::path(files[0]).filename().string();
    CHECK_MESSAGE(base.rfind(name + ".overcache-conflict-", 0) == 0, base);
    std::string want(size, '\0');
    for (const auto& [off, bytes] : ranges)
        put(want, off, bytes);
    CHECK_BYTES(read_backing(files[0]), want);
}

// A flush while the backing refuses writes past `limit` bytes into a file
// (RLIMIT_FSIZE with SIGXFSZ ignored: EFBIG), as a full or failing backing
// would. The limit is the process's, for the length of the flush only: keep
// the dirty data far past it and everything else (the index's WAL) below.
template <class F> void with_backing_limit(std::uint64_t limit, F&& fn) {
    struct rlimit old {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    struct rlimit small = old;
    small.rlim_cur = limit;
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    fn();
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &old) == 0);
    std::signal(SIGXFSZ, old_handler);
}

Result<void> flush_with_backing_limit(Fx& fx, std::uint64_t limit) {
    Result<void> r;
    with_backing_limit(limit, [&] { r = fx.flush(); });
    return r;
}

} // namespace

TEST_SUITE("writeback") {

    TEST_CASE("writeback 1: dirty writes are served and shown by the mount; writeback puts exactly "
              "them, the size and the mtime on the backing" *
              doctest::timeout(30)) {
        Fx fx;
        fx.cp.writeback_delay_s = 0;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(100 * KiB, 11);
        write_file(f, a);
        const struct stat before = stat_path(f);
        std::string model = a;
        const auto x = random_bytes(20 * KiB, 12), y = random_bytes(10 * KiB, 13);

        // No writeback pass runs until the pause is released.
        std::optional<PoolPause> pause(std::in_place, fx.ex.writeback());
        Handle h(*fx.dp, f);
        const std::int64_t t0 = wall_ns();
        h.write(*fx.dp, 10 * KiB, x);
        put(model, 10 * KiB, x);
        h.write(*fx.dp, 200 * KiB, y); // past the end: [100 KiB, 200 KiB) is a hole
        put(model, 200 * KiB, y);
        const std::int64_t t1 = wall_ns();
        REQUIRE(model.size() == 210 * KiB);

        // The backing has none of it yet.
        CHECK_BYTES(read_backing(f), a);
        const struct stat untouched = stat_path(f);
        CHECK(untouched.st_size == static_cast<off_t>(100 * KiB));
        CHECK(ns_of(untouched.st_mtim) == ns_of(before.st_mtim));

        // Reads through the mount, from this open and from another.
        CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), model);
        CHECK_BYTES(h.read(*fx.dp, 100 * KiB, 100 * KiB), std::string(100 * KiB, '\0'));
        CHECK_BYTES(h.read(*fx.dp, 5 * KiB, 30 * KiB), model.substr(5 * KiB, 30 * KiB));
        CHECK(h.read(*fx.dp, 210 * KiB, 4 * KiB).empty());
        Handle h2(*fx.dp, f, O_RDONLY);
        CHECK_BYTES(h2.read(*fx.dp, 0, 256 * KiB), model);
        CHECK_BYTES(h2.read(*fx.dp, 199 * KiB, 2 * KiB), model.substr(199 * KiB, 2 * KiB));

        // Attributes show the cache's size and mtime.
        const struct stat shown = getattr_of(*fx.dp, h2.fd);
        CHECK(shown.st_size == static_cast<off_t>(210 * KiB));
        const std::int64_t mtime = ns_of(shown.st_mtim);
        CHECK(mtime >= t0);
        CHECK(mtime <= t1);
        CHECK(shown.st_blocks >= static_cast<blkcnt_t>(210 * KiB / 512));
        const struct stat looked_up = show_attrs_of(*fx.dp, f);
        CHECK(looked_up.st_size == static_cast<off_t>(210 * KiB));
        CHECK(ns_of(looked_up.st_mtim) == mtime);

        CHECK(fx.stat("dirty_files") == 1);
        CHECK(fx.stat("dirty_data") == 30 * KiB);
        CHECK(fx.stat("writes_dirty") == 2);
        CHECK(fx.stat("writes_around") == 0);
        CHECK(fx.stat("writeback_bytes") == 0);
        CHECK(fx.stat("buckets_dirty") == 1);

        pause.reset();
        fx.writeback_now();
        CHECK_BYTES(read_backing(f), model);
        const struct stat after = stat_path(f);
        CHECK(after.st_size == static_cast<off_t>(210 * KiB));
        CHECK(ns_of(after.st_mtim) == mtime); // the mtime the mount showed
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("writeback_bytes") == 30 * KiB);
        CHECK(fx.stat("buckets_dirty") == 0);
        CHECK(fx.stat("writeback_errors") == 0);
        CHECK(fx.stat("writeback_conflicts") == 0);
        // Still the same file through the mount, now from the backing's view.
        CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), model);
        CHECK_BYTES(h2.read(*fx.dp, 0, 256 * KiB), model);
        const struct stat clean = getattr_of(*fx.dp, h2.fd);
        CHECK(clean.st_size == static_cast<off_t>(210 * KiB));
        CHECK(ns_of(clean.st_mtim) == mtime);
        CHECK(fx.lost_files().empty());
    }

    TEST_CASE("writeback 2: writeback_delay and writeback_running hold writeback back; flush() "
              "writes everything regardless and answers once" *
              doctest::timeout(30)) {
        Fx fx;
        SUBCASE("a long writeback_delay") {
            fx.cp.writeback_delay_s = kLongDelay;
        }
        SUBCASE("writeback_running=0") {
            fx.cp.writeback_delay_s = 0;
            fx.cp.writeback_running = false;
        }
        fx.start();
        const std::string f = fx.path("f"), g = fx.path("g");
        const auto a = random_bytes(128 * KiB, 21), b = random_bytes(64 * KiB, 22);
        write_file(f, a);
        write_file(g, a);
        std::string mf = a, mg = a;
        {
            Handle hf(*fx.dp, f), hg(*fx.dp, g);
            hf.write(*fx.dp, 32 * KiB, b);
            put(mf, 32 * KiB, b);
            hg.write(*fx.dp, 100 * KiB, b);
            put(mg, 100 * KiB, b);
        }
        fx.writeback_now();
        fx.writeback_now();
        CHECK_BYTES(read_backing(f), a);
        CHECK_BYTES(read_backing(g), a);
        CHECK(fx.stat("writeback_bytes") == 0);
        CHECK(fx.stat("dirty_files") == 2);
        CHECK(fx.stat("dirty_data") == 128 * KiB);

        auto calls = std::make_shared<std::atomic<int>>(0);
        auto r = fx.flush(calls);
        CHECK_MESSAGE(r, (r ? "" : to_string(r.error())));
        CHECK_BYTES(read_backing(f), mf);
        CHECK_BYTES(read_backing(g), mg);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("writeback_bytes") == 128 * KiB);
        // A later pass (on the same strand) must not answer that flush again.
        fx.writeback_now();
        CHECK(calls->load() == 1);
        // Nothing dirty: a flush answers at once, once.
        auto calls2 = std::make_shared<std::atomic<int>>(0);
        CHECK(fx.flush(calls2));
        fx.writeback_now();
        CHECK(calls2->load() == 1);
        // Through the mount the files read as written.
        Handle hf(*fx.dp, f, O_RDONLY);
        CHECK_BYTES(hf.read(*fx.dp, 0, 256 * KiB), mf);
    }

    TEST_CASE("writeback 2b: dirty data over writeback_percent is written back without waiting "
              "for writeback_delay" *
              doctest::timeout(30)) {
        Fx fx;
        fx.cp.writeback_percent = 1; // about 160 KiB of this cache
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 25), b = random_bytes(256 * KiB, 26);
        write_file(f, a);
        std::string model = a;
        {
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 0, b);
            put(model, 0, b);
        }
        fx.writeback_now(); // after the pass the write kicked, if any
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("dirty_files") == 0);
    }

    // 3. A write to a file whose writeback batch has chosen its extents and
    // not copied them yet.
    TEST_CASE("writeback 3: a write during a batch's copy stays dirty and wins, in reads and "
              "on the backing" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            Gate entered, release;
        } s;
        Fx fx;
        fx.hooks.before_writeback_copy = [&](FileState&) {
            if (!s.armed.exchange(false))
                return;
            s.entered.open();
            s.release.wait();
        };
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(256 * KiB, 31), b = random_bytes(64 * KiB, 32),
                   c = random_bytes(64 * KiB, 33);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        h.write(*fx.dp, 0, b);
        put(model, 0, b);
        const std::string after_batch = model; // what the batch copies
        std::uint64_t c_at = 0;
        SUBCASE("over the range being written back") {
            c_at = 32 * KiB;
        }
        SUBCASE("elsewhere in the file") {
            c_at = 160 * KiB;
        }

        s.armed = true;
        auto calls = std::make_shared<std::atomic<int>>(0);
        auto flushed = std::make_shared<std::promise<Result<void>>>();
        auto flushed_f = flushed->get_future();
        fx.dp->flush([flushed, calls](Result<void> r) {
            if (calls->fetch_add(1) == 0)
                flushed->set_value(r);
        });
        REQUIRE(s.entered.wait()); // the batch holds its extents, nothing copied
        Gate c_done;
        std::atomic<bool> c_ok{false};
        std::jthread writer([&] {
            c_ok = try_write(*fx.dp, h.of(), c_at, c);
            c_done.open();
        });
        // A write to a file with dirty data never waits for a batch (which
        // holds the file's backing_mu across its backing I/O).
        REQUIRE(c_done.wait());
        writer.join();
        s.release.open();
        REQUIRE(flushed_f.wait_for(kDeadline) == std::future_status::ready);
        CHECK(flushed_f.get());
        CHECK(c_ok);
        put(model, c_at, c);

        if (c_at == 32 * KiB) {
            // b's extent was cut by c before the batch could mark it clean:
            // the flush went round again (b may have moved instead, and
            // then its bytes may not have gone out), and wrote c with it.
            CHECK_BYTES(read_backing(f), model);
            CHECK(fx.stat("dirty_files") == 0);
            CHECK(fx.stat("dirty_data") == 0);
        } else {
            // The batch copied what it chose and marked it clean; the new
            // bytes are dirty (written after the flush began) and win.
            CHECK_BYTES(read_backing(f), after_batch);
            CHECK(fx.stat("dirty_files") == 1);
            CHECK(fx.stat("dirty_data") == 64 * KiB);
        }
        CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), model);
        {
            Handle h2(*fx.dp, f, O_RDONLY);
            CHECK_BYTES(h2.read(*fx.dp, 0, 256 * KiB), model);
        }
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("writeback_conflicts") == 0);
        CHECK(calls->load() == 1);
    }

    // 3b. A pass over a file takes several batches (more than kBatchRuns
    // separate runs): a write that lands, between two of them, below where
    // the next one starts is not lost. (It was: the last batch saw no write
    // since *its* start, marked the file clean with that dirty extent still
    // in the index, and a later read's fill punched it under the backing's
    // old bytes. Found by contrib/conformance's fio verify jobs.)
    TEST_CASE("writeback 3b: a write between two batches of one pass, behind them, stays dirty" *
              doctest::timeout(30)) {
        std::atomic<int> batches{0};
        std::function<void()> between;
        Fx fx;
        fx.hooks.before_writeback_batch = [&](FileState&, std::uint64_t from) {
            if (batches.fetch_add(1) == 1 && between) {
                CHECK(from > 8 * KiB);
                between();
            }
        };
        fx.start();
        const std::string f = fx.path("f");
        constexpr std::size_t kRuns = 70; // > 64 runs: two batches
        std::string model = random_bytes(kRuns * 64 * KiB, 35);
        write_file(f, model);
        Handle h(*fx.dp, f);
        for (std::size_t i = 0; i < kRuns; ++i) {
            const auto b = random_bytes(4 * KiB, 36 + static_cast<unsigned>(i));
            h.write(*fx.dp, i * 64 * KiB, b);
            put(model, i * 64 * KiB, b);
        }
        const auto late = random_bytes(4 * KiB, 200);
        between = [&] {
            // The second batch starts past the first 64 runs: write inside
            // the range the first one already copied.
            h.write(*fx.dp, 8 * KiB, late);
        };
        CHECK(fx.flush());
        put(model, 8 * KiB, late);
        CHECK(batches.load() == 2);
        // Written during the pass, after the flush began: still dirty, and
        // the mount serves it.
        CHECK(fx.stat("dirty_files") == 1);
        CHECK(fx.stat("dirty_data") == 4 * KiB);
        CHECK_BYTES(h.read(*fx.dp, 0, kRuns * 64 * KiB), model);
        CHECK(fx.flush());
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK_BYTES(read_backing(f), model);
        {
            Handle h2(*fx.dp, f, O_RDONLY);
            CHECK_BYTES(h2.read(*fx.dp, 0, kRuns * 64 * KiB), model);
        }
    }

    // 4. A truncate through the mount while a batch is between choosing its
    // extents and copying them (some of them past the new size).
    TEST_CASE("writeback 4: a truncate waits for a batch in flight; the backing ends exactly "
              "truncated" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            Gate entered, release;
        } s;
        Fx fx;
        fx.hooks.before_writeback_copy = [&](FileState&) {
            if (!s.armed.exchange(false))
                return;
            s.entered.open();
            s.release.wait();
        };
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(256 * KiB, 41), b = random_bytes(256 * KiB, 42);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        h.write(*fx.dp, 64 * KiB, b); // dirty [64 KiB, 320 KiB), past the backing's end
        put(model, 64 * KiB, b);
        constexpr std::uint64_t kNewSize = 100 * KiB;
        int tfd = h.fd;
        bool fd_is_open = true;
        int opath = -1;
        SUBCASE("through the open") {}
        SUBCASE("through an O_PATH fd (setattr without an open)") {
            opath = ::open(f.c_str(), O_PATH);
            REQUIRE(opath >= 0);
            tfd = opath;
            fd_is_open = false;
        }

        s.armed = true;
        auto flushed = std::make_shared<std::promise<Result<void>>>();
        auto flushed_f = flushed->get_future();
        fx.dp->flush([flushed](Result<void> r) { flushed->set_value(r); });
        REQUIRE(s.entered.wait());
        Gate t_done;
        std::atomic<bool> t_ok{false};
        std::jthread truncater([&] {
            auto r = fx.dp->truncate(tfd, fd_is_open, kNewSize);
            t_ok = r && !r->backing_changed;
            t_done.open();
        });
        CHECK_FALSE(t_done.wait(kQuiet)); // it waits for the batch
        s.release.open();
        REQUIRE(t_done.wait());
        truncater.join();
        REQUIRE(flushed_f.wait_for(kDeadline) == std::future_status::ready);
        CHECK(flushed_f.get());
        CHECK(t_ok);
        model.resize(kNewSize);

        CHECK_BYTES(read_backing(f), model);
        CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), model);
        CHECK(getattr_of(*fx.dp, h.fd).st_size == static_cast<off_t>(kNewSize));
        // Nothing past the new size comes back with a later pass.
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
        CHECK(stat_path(f).st_size == static_cast<off_t>(kNewSize));
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), model);
        if (opath >= 0)
            ::close(opath);
    }

    TEST_CASE("writeback 5: fsynced dirty data survives a restart and a crash, is served, and "
              "is written back" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(128 * KiB, 51), b = random_bytes(128 * KiB, 52);
        write_file(f, a);
        std::string model = a;
        std::optional<Handle> h(std::in_place, *fx.dp, f);
        h->write(*fx.dp, 64 * KiB, b);
        put(model, 64 * KiB, b);
        h->fsync(*fx.dp);
        SUBCASE("stop() and a new DataPath") {
            h.reset();
            fx.stop();
        }
        SUBCASE("stop() and a new DataPath in cache_mode=writethrough") {
            // Dirty data is never orphaned by configuration: served, and
            // written back whatever the settings.
            h.reset();
            fx.stop();
            fx.cp.mode = config::CacheMode::writethrough;
            fx.cp.writeback_running = false;
        }
        SUBCASE("a crash: the cache directory as it was on disk with the mount running") {
            const std::string snap = fx.snapshot();
            REQUIRE_FALSE(snap.empty());
            h.reset();
            fx.stop();
            fx.dc.dir = snap;
        }
        CHECK_BYTES(read_backing(f), a);

        fx.cp.writeback_delay_s = 0;
        std::optional<PoolPause> pause(std::in_place, fx.ex.writeback());
        fx.start();
        CHECK(fx.stat("dirty_files") == 1); // the dirty list, from the index
        CHECK(fx.stat("dirty_data") == 128 * KiB);
        CHECK(show_attrs_of(*fx.dp, f).st_size == static_cast<off_t>(192 * KiB));
        {
            Handle h2(*fx.dp, f, O_RDONLY);
            CHECK_BYTES(h2.read(*fx.dp, 0, 256 * KiB), model);
            CHECK(getattr_of(*fx.dp, h2.fd).st_size == static_cast<off_t>(192 * KiB));
        }
        CHECK_BYTES(read_backing(f), a);
        pause.reset();
        fx.writeback_now();
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("writeback_conflicts") == 0);
        CHECK(fx.lost_files().empty());
    }

    // 6. A crash while writeback copies: the record says kFileWritingBack
    // and the backing holds part of the copy. That change of the backing is
    // ours, not a conflict.
    //
    // Regression (src/meta/key_codec.cpp, kKnownFileFlags): the set of flags
    // decode_file_record() accepts is kFileKernelPagesStale | kFileAhead;
    // kFileWritingBack is missing, so every record committed by step 1 of a
    // writeback batch fails to decode. After a crash in the middle of a
    // batch the record reads as damaged: DirtyFiles::load skips the file
    // ("has no matching record; its data cannot be written back"),
    // FileRecords::load starts the file afresh ("damaged record ... caching
    // it afresh"), and the dirty data is lost for good: the backing keeps
    // the half copy, reads serve it, dirty_data stays 128 KiB forever and
    // those buckets can never be reclaimed. Skipped until fixed.
    TEST_CASE("writeback 6: an interrupted writeback is no conflict; the data is written back "
              "after the restart" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            std::string snap; // written in the hook, read after the flush
            Gate snapped;
        } s;
        Fx fx;
        fx.hooks.before_writeback_copy = [&](FileState&) {
            if (!s.armed.exchange(false))
                return;
            // The record is marked (synced) and nothing is copied: a crash now.
            s.snap = fx.snapshot();
            s.snapped.open();
        };
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(128 * KiB, 61), b = random_bytes(128 * KiB, 62);
        write_file(f, a);
        std::string model = a;
        {
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 32 * KiB, b); // dirty [32 KiB, 160 KiB)
            put(model, 32 * KiB, b);
        }
        s.armed = true;
        CHECK(fx.flush());
        REQUIRE(s.snapped.wait(0ms));
        REQUIRE_FALSE(s.snap.empty());
        fx.stop();
        const auto flags = fx.record_flags_at(s.snap);
        CHECK_MESSAGE(flags.has_value(), "the marked record does not decode");
        CHECK((flags.value_or(0) & meta::kFileWritingBack) != 0);
        CHECK((flags.value_or(0) & meta::kFileAhead) != 0);

        // The backing as the crash left it: the first 64 KiB of the copy
        // written, the rest not, the size not extended yet.
        std::string half = a;
        half.replace(32 * KiB, 64 * KiB, b.substr(0, 64 * KiB));
        write_file(f, half); // same inode: O_TRUNC, then the bytes
        fx.dc.dir = s.snap;
        fx.cp.writeback_delay_s = 0;
        SUBCASE("an open finds the file first") {
            std::optional<PoolPause> pause(std::in_place, fx.ex.writeback());
            fx.start();
            {
                Handle h(*fx.dp, f, O_RDONLY);
                CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), model);
                CHECK(fx.stat("writeback_conflicts") == 0);
                CHECK(fx.stat("dirty_files") == 1);
                CHECK(getattr_of(*fx.dp, h.fd).st_size == static_cast<off_t>(160 * KiB));
            }
            pause.reset();
            fx.writeback_now();
        }
        SUBCASE("writeback finds it first") {
            fx.start();
            fx.writeback_now();
        }
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("writeback_conflicts") == 0);
        CHECK(fx.stat("writeback_errors") == 0);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.lost_files().empty());
        Handle h(*fx.dp, f, O_RDONLY);
        CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), model);
    }

    // Regression (src/cache/writeback.cpp, Writeback::batch): a batch that fails
    // after step 1 (a backing write error, a failed sync) returns with the
    // record still marked kFileWritingBack, and the mark stays until a later
    // batch of the file succeeds. Meanwhile FileRecords::revalidate takes
    // any difference of the backing for our own interrupted copy: a change
    // made behind the mount by someone else (another NFS client) is adopted
    // silently, no conflict copy, and the next writeback writes our dirty
    // ranges over their bytes. (Today the file closed before the failure
    // also trips the kKnownFileFlags bug of writeback 6 when it is opened
    // again.) Skipped until fixed.
    TEST_CASE("writeback 6b: after a failed batch, a change behind the mount is still a conflict" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 63), b = random_bytes(64 * KiB, 64),
                   d = random_bytes(96 * KiB, 65);
        write_file(f, a);
        {
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 2 * MiB, b); // past the file size limit set below
        }
        // The backing refuses the copy (EFBIG past 1 MiB).
        CHECK_FALSE(flush_with_backing_limit(fx, 1 * MiB));
        CHECK(fx.stat("writeback_errors") >= 1);
        CHECK(fx.stat("dirty_files") == 1);

        // Someone else rewrites the file on the backing.
        write_file(f, d);
        {
            Handle h(*fx.dp, f, O_RDONLY);
            CHECK_BYTES(h.read(*fx.dp, 0, 4 * MiB), d);
        }
        CHECK(fx.stat("writeback_conflicts") == 1);
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), d); // theirs, untouched
        const auto files = fx.lost_files();
        CHECK(files.size() == 1);
    }

    TEST_CASE("writeback 6c: a failed writeback keeps the data dirty; it is written once the "
              "backing takes it again" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 66), b = random_bytes(64 * KiB, 67);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f); // open throughout
        h.write(*fx.dp, 2 * MiB, b);
        put(model, 2 * MiB, b);
        auto failed = flush_with_backing_limit(fx, 1 * MiB);
        CHECK_FALSE(failed);
        CHECK(fx.stat("writeback_errors") >= 1);
        CHECK(fx.stat_str("last_writeback_error") != "-");
        CHECK(fx.stat("dirty_files") == 1);
        CHECK(fx.stat("dirty_data") == 64 * KiB);
        CHECK_BYTES(h.read(*fx.dp, 0, 4 * MiB), model);
        auto r = fx.flush();
        CHECK_MESSAGE(r, (r ? "" : to_string(r.error())));
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("writeback_conflicts") == 0);
    }

    // Regression: the kKnownFileFlags bug of writeback 6 without a crash. The
    // failed batch leaves kFileWritingBack in the record; the file is not
    // open, so the next pass loads the record from the index, which does
    // not decode: "damaged record ... caching it afresh", run_file finds no
    // record and returns success, the flush succeeds with nothing written,
    // and the data is lost while dirty_files/dirty_data still count it.
    // Skipped until fixed.
    TEST_CASE("writeback 6d: a failed writeback of a file nobody has open is retried and "
              "written" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 68), b = random_bytes(64 * KiB, 69);
        write_file(f, a);
        std::string model = a;
        {
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 2 * MiB, b);
            put(model, 2 * MiB, b);
        }
        CHECK_FALSE(flush_with_backing_limit(fx, 1 * MiB));
        CHECK(fx.stat("dirty_files") == 1);
        auto r = fx.flush();
        CHECK_MESSAGE(r, (r ? "" : to_string(r.error())));
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("dirty_data") == 0);
        Handle h(*fx.dp, f, O_RDONLY);
        CHECK_BYTES(h.read(*fx.dp, 0, 4 * MiB), model);
    }

    // A change the foreground gave up on at its deadline (a write around
    // the cache, a truncate) releases the file's locks but may still land on
    // the backing. Copied before it lands, the dirty bytes would end up under
    // it while the cache marks them clean. The seam: the gate's
    // unsettled_watch, here a flag.
    TEST_CASE("writeback 6e: while a backing call given up on at its deadline still runs, "
              "writeback copies nothing; once it has ended, it writes" *
              doctest::timeout(30)) {
        std::atomic<bool> unsettled{true}; // outlives the fixture that asks it
        Fx fx;
        fx.start();
        fx.dp->watch_backing({[&unsettled] { return unsettled.load(); }, {}});
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 70), b = random_bytes(16 * KiB, 71);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        h.write(*fx.dp, 8 * KiB, b);
        put(model, 8 * KiB, b);
        auto held = fx.flush();
        REQUIRE_FALSE(held);
        CHECK(to_string(held.error()).find("deadline") != std::string::npos);
        CHECK(fx.stat_str("last_writeback_error").find("deadline") != std::string::npos);
        CHECK_BYTES(read_backing(f), a);
        CHECK(fx.stat("dirty_data") == b.size());
        unsettled = false;
        auto r = fx.flush();
        CHECK_MESSAGE(r, (r ? "" : to_string(r.error())));
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("writeback_conflicts") == 0);
        CHECK_BYTES(h.read(*fx.dp, 0, 1 * MiB), model);
    }

    TEST_CASE("writeback 7: a file changed behind the mount keeps the backing's version; ours "
              "goes to lost+found" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(128 * KiB, 71), b = random_bytes(64 * KiB, 72),
                   d = random_bytes(150 * KiB, 73), e = random_bytes(10 * KiB, 74);
        write_file(f, a);
        Handle h(*fx.dp, f);
        h.write(*fx.dp, 0, b);
        CHECK(fx.stat("dirty_files") == 1);
        write_file(f, d); // another client rewrites it: same inode, new bytes and size
        std::string theirs = d;

        SUBCASE("found by an open") {
            Handle h2(*fx.dp, f, O_RDONLY);
            CHECK_FALSE(h2.out.keep_page_cache);
            CHECK_BYTES(h2.read(*fx.dp, 0, 256 * KiB), d);
        }
        SUBCASE("found by a getattr of the open file") {
            struct stat backing = h.fstat();
            struct stat shown = backing;
            CHECK(fx.dp->getattr(FileRef{h.fd, backing}, shown).backing_changed);
            CHECK(shown.st_size == static_cast<off_t>(150 * KiB));
        }
        std::vector<std::pair<std::uint64_t, std::string>> ours{{0, b}};
        SUBCASE("found by writeback after a write through the open handle, which joins ours") {
            // The file is ahead: its writes are not compared with the
            // backing (the open was, and writeback is before every batch).
            h.write(*fx.dp, 100 * KiB, e);
            ours.emplace_back(100 * KiB, e);
            CHECK(fx.stat("writeback_conflicts") == 0);
            CHECK(fx.flush());
        }
        CHECK(fx.stat("writeback_conflicts") == 1);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), theirs);
        check_conflict_copy(fx, "f", ours, 128 * KiB);
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), theirs);
        CHECK(fx.stat("writeback_bytes") == 0);
        CHECK(fx.stat("writeback_conflicts") == 1);
        CHECK(fx.lost_files().size() == 1);
        // user.overcache.state reads `conflict` until the next write
        // through the mount.
        struct stat now = h.fstat();
        auto info = fx.dp->file_info(FileRef{h.fd, now});
        REQUIRE(info);
        CHECK(info->conflict);
        h.write(*fx.dp, 0, e);
        now = h.fstat();
        info = fx.dp->file_info(FileRef{h.fd, now});
        REQUIRE(info);
        CHECK_FALSE(info->conflict);
    }

    // Regression (src/cache/writeback.cpp, Writeback::batch / run_file): writeback
    // never compares the backing with the file record before it copies.
    // When the backing was changed behind the mount and no open, getattr or
    // write noticed it first, writeback writes our dirty ranges over the
    // other writer's bytes and takes the result as the backing's new state
    // (take_attrs(out, *after)): their version is lost, no conflict copy,
    // writeback_conflicts stays 0. Skipped until fixed.
    TEST_CASE("writeback 7b: a change behind the mount found by writeback itself is a conflict" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(128 * KiB, 75), b = random_bytes(64 * KiB, 76),
                   d = random_bytes(150 * KiB, 77);
        write_file(f, a);
        {
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 0, b);
        }
        write_file(f, d); // another client rewrites it
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), d);
        CHECK(fx.stat("writeback_conflicts") == 1);
        CHECK(fx.stat("dirty_files") == 0);
        check_conflict_copy(fx, "f", {{0, b}}, 128 * KiB);
    }

    TEST_CASE("writeback 8: a dirty file deleted behind the mount goes to lost+found" *
              doctest::timeout(30)) {
        Fx fx;
        fx.cp.writeback_delay_s = 0;
        fx.start();
        REQUIRE(::mkdir(fx.path("d").c_str(), 0755) == 0);
        const std::string f = fx.path("d/f");
        const auto a = random_bytes(64 * KiB, 81), b = random_bytes(40 * KiB, 82);
        write_file(f, a);
        {
            std::optional<PoolPause> pause(std::in_place, fx.ex.writeback());
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 50 * KiB, b); // dirty [50 KiB, 90 KiB)
            REQUIRE(::unlink(f.c_str()) == 0);
        }
        fx.writeback_now();
        CHECK(fx.stat("writeback_conflicts") == 1);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("writeback_bytes") == 0);
        // Named after its path; the file is not brought back.
        check_conflict_copy(fx, "d_f", {{50 * KiB, b}}, 90 * KiB);
        CHECK(::access(f.c_str(), F_OK) != 0);
        fx.writeback_now();
        CHECK(fx.stat("writeback_conflicts") == 1);
        CHECK(fx.lost_files().size() == 1);
    }

    // Regression (src/cache/writeback.cpp, Writeback::open_backing): while the file
    // is open through the mount, writeback reuses FileState::wb_fd, a dup of
    // that open's fd, and never looks at st_nlink. A file deleted behind the
    // mount then gets its dirty data written into the deleted inode: the
    // batch succeeds, the data is marked clean and dropped, and it is gone
    // once the file is closed — no conflict copy (issue #7, §5: "a file
    // deleted behind the mount with dirty data: the same"). With the file
    // closed first (writeback 8) it is saved. Skipped until fixed.
    TEST_CASE("writeback 8b: a dirty file deleted behind the mount while open goes to lost+found" *
              doctest::timeout(30)) {
        Fx fx;
        fx.cp.writeback_delay_s = 0;
        std::optional<PoolPause> pause(std::in_place, fx.ex.writeback());
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 83), b = random_bytes(40 * KiB, 84);
        write_file(f, a);
        Handle h(*fx.dp, f);
        h.write(*fx.dp, 50 * KiB, b);
        REQUIRE(::unlink(f.c_str()) == 0);
        pause.reset();
        fx.writeback_now();
        CHECK(fx.stat("writeback_conflicts") == 1);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.lost_files().size() == 1);
        if (fx.lost_files().size() == 1)
            check_conflict_copy(fx, "f", {{50 * KiB, b}}, 90 * KiB);
    }

    TEST_CASE("writeback 9: unlinking a dirty file through the mount discards its dirty data, "
              "unless it is still open" *
              doctest::timeout(30)) {
        Fx fx;
        fx.cp.writeback_delay_s = 0;
        std::optional<PoolPause> pause(std::in_place, fx.ex.writeback());
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 91), b = random_bytes(100 * KiB, 92);
        write_file(f, a);
        std::string model = a;
        put(model, 20 * KiB, b);
        std::optional<Handle> h(std::in_place, *fx.dp, f);
        h->write(*fx.dp, 20 * KiB, b);
        REQUIRE(fx.stat("dirty_data") == 100 * KiB);

        SUBCASE("not open") {
            h.reset();
            // The adapter: an O_PATH fd of the file, the unlink on the
            // backing, then removed() with the attributes from before it.
            const int pfd = ::open(f.c_str(), O_PATH);
            REQUIRE(pfd >= 0);
            struct stat st {};
            REQUIRE(::fstat(pfd, &st) == 0);
            REQUIRE(::unlink(f.c_str()) == 0);
            fx.dp->removed(FileRef{pfd, st});
            ::close(pfd);
            CHECK(fx.stat("dirty_data") == 0);
            CHECK(fx.stat("dirty_files") == 0);
            pause.reset();
            fx.writeback_now();
            CHECK(fx.flush());
            CHECK(fx.stat("writeback_bytes") == 0); // never written back
        }
        SUBCASE("still open: written back first, into the unlinked file") {
            const struct stat st = h->fstat();
            REQUIRE(::unlink(f.c_str()) == 0);
            fx.dp->removed(FileRef{h->fd, st});
            CHECK(fx.stat("dirty_data") == 0);
            CHECK(fx.stat("dirty_files") == 0);
            // Whoever holds it reads its bytes, through the mount and in the
            // unlinked inode itself.
            CHECK_BYTES(h->read(*fx.dp, 0, 256 * KiB), model);
            std::string raw(model.size(), '\0');
            CHECK(::pread(h->fd, raw.data(), raw.size(), 0) == static_cast<ssize_t>(raw.size()));
            CHECK_BYTES(raw, model);
            pause.reset();
            fx.writeback_now();
            CHECK(fx.stat("writeback_bytes") == 100 * KiB);
            h.reset();
        }
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("writeback_conflicts") == 0);
        CHECK(fx.lost_files().empty());
        CHECK(::access(f.c_str(), F_OK) != 0);
    }

    TEST_CASE("writeback 9b: a write of an open file during its unlink through the mount waits "
              "for it and lands in the unlinked file; nothing is dropped with the record" *
              doctest::timeout(30)) {
        // The unlink decides what the open file needs (write back its dirty
        // data, or nothing for a clean one), then drops its record and
        // extents. A write that committed dirty bytes between the two was
        // dropped with them: its holder then read the backing's older bytes
        // (seen once as a flake of writeback_ops' mmap round under ASan).
        Fx fx;
        fx.cp.writeback_delay_s = 0;
        Gate entered, release;
        fx.hooks.before_unlinked_drop = [&] {
            entered.open();
            CHECK(release.wait());
        };
        std::optional<PoolPause> pause(std::in_place, fx.ex.writeback());
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 93), b = random_bytes(16 * KiB, 94);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        SUBCASE("clean at the unlink") {}
        SUBCASE("dirty at the unlink") {
            const auto d = random_bytes(8 * KiB, 95);
            h.write(*fx.dp, 40 * KiB, d);
            put(model, 40 * KiB, d);
            REQUIRE(fx.stat("dirty_data") == d.size());
        }
        const struct stat st = h.fstat();
        REQUIRE(::unlink(f.c_str()) == 0);
        Gate removed;
        std::jthread unlinker([&] {
            fx.dp->removed(FileRef{h.fd, st});
            removed.open();
        });
        REQUIRE(entered.wait());
        Gate wrote;
        std::jthread writer([&] {
            h.write(*fx.dp, 8 * KiB, b);
            wrote.open();
        });
        // The write waits for the unlink (its write lock)...
        CHECK_FALSE(wrote.wait(kQuiet));
        release.open();
        REQUIRE(removed.wait());
        // ...and then goes to the unlinked file itself.
        REQUIRE(wrote.wait());
        unlinker.join();
        writer.join();
        put(model, 8 * KiB, b);
        CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), model);
        std::string raw(model.size(), '\0');
        CHECK(::pread(h.fd, raw.data(), raw.size(), 0) == static_cast<ssize_t>(raw.size()));
        CHECK_BYTES(raw, model);
        pause.reset();
        fx.writeback_now();
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("writeback_conflicts") == 0);
        CHECK(fx.lost_files().empty());
    }

    TEST_CASE("writeback 9c: an open file unlinked while its write-back fails keeps its dirty "
              "data: its holder reads it, and writeback puts it into the unlinked file later" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 96), b = random_bytes(64 * KiB, 97);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        h.write(*fx.dp, 2 * MiB, b); // past the limit below: its write-back fails
        put(model, 2 * MiB, b);
        const struct stat st = h.fstat();
        REQUIRE(::unlink(f.c_str()) == 0);
        with_backing_limit(1 * MiB, [&] { fx.dp->removed(FileRef{h.fd, st}); });
        CHECK(fx.stat("dirty_data") == b.size());
        CHECK_BYTES(h.read(*fx.dp, 0, 4 * MiB), model);
        auto r = fx.flush();
        CHECK_MESSAGE(r, (r ? "" : to_string(r.error())));
        CHECK(fx.stat("dirty_data") == 0);
        std::string raw(model.size(), '\0');
        CHECK(::pread(h.fd, raw.data(), raw.size(), 0) == static_cast<ssize_t>(raw.size()));
        CHECK_BYTES(raw, model);
        CHECK(fx.stat("writeback_conflicts") == 0);
        CHECK(fx.lost_files().empty());
    }

    TEST_CASE("writeback 10: with no free bucket, writes go around the cache to the backing, "
              "never hang, and every byte is right" *
              doctest::timeout(30)) {
        Fx fx;
        fx.dc.cache_size = 1 * MiB; // 3 buckets: 2 for writes, 1 reserve
        fx.cp.writeback_running = false;
        fx.start();
        REQUIRE(fx.stat("buckets_total") == 3);
        const std::string f = fx.path("f");
        const auto a = random_bytes(1 * MiB, 101);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        // Fill both buckets the foreground may take with dirty data.
        for (unsigned i = 0; i < 8; ++i) {
            const auto d = random_bytes(64 * KiB, 110 + i);
            bool ok = false;
            run_within("a dirty write", [&] { ok = try_write(*fx.dp, h.of(), i * 64 * KiB, d); });
            REQUIRE(ok);
            put(model, i * 64 * KiB, d);
        }
        REQUIRE(fx.stat("writes_dirty") == 8);
        REQUIRE(fx.stat("dirty_data") == 512 * KiB);
        CHECK(fx.stat("writes_around") == 0);

        const auto w1 = random_bytes(64 * KiB, 120), w2 = random_bytes(64 * KiB, 121),
                   w3 = random_bytes(64 * KiB, 122);
        const std::vector<std::pair<std::uint64_t, const std::string*>> around = {
            {512 * KiB, &w1}, // clean range
            {32 * KiB, &w2},  // over dirty data: replaces it
            {1 * MiB, &w3},   // past the end
        };
        for (const auto& [off, d] : around) {
            std::optional<Result<std::size_t>> r;
            run_within("a write into a full cache",
                       [&] { r = write_through(*fx.dp, h.of(), off, *d); });
            REQUIRE(r.has_value());
            REQUIRE_MESSAGE(*r, (*r ? "" : to_string(r->error())));
            CHECK(**r == d->size());
            put(model, off, *d);
        }
        CHECK(fx.stat("writes_around") == 3);
        CHECK(fx.stat("writes_dirty") == 8);
        CHECK(fx.stat("dirty_data") == 448 * KiB);
        // The written-around bytes are on the backing; the dirty ones not yet.
        const std::string on_backing = read_backing(f);
        CHECK(on_backing.size() == 1 * MiB + 64 * KiB);
        CHECK_BYTES(on_backing.substr(512 * KiB, 64 * KiB), w1);
        CHECK_BYTES(on_backing.substr(32 * KiB, 64 * KiB), w2);
        CHECK_BYTES(on_backing.substr(1 * MiB, 64 * KiB), w3);
        CHECK_BYTES(on_backing.substr(0, 32 * KiB), a.substr(0, 32 * KiB));
        // GC finds nothing to reclaim (dirty buckets never are) and returns.
        run_within("gc_now", [&] { fx.ctl().gc_now(); });
        CHECK(fx.stat("dirty_data") == 448 * KiB);
        // Through the mount, every byte is the newest.
        CHECK_BYTES(h.read(*fx.dp, 0, 2 * MiB), model);
        CHECK(getattr_of(*fx.dp, h.fd).st_size == static_cast<off_t>(model.size()));
        // Reads, stat and stats keep working with the cache full.
        {
            Handle h2(*fx.dp, f, O_RDONLY);
            CHECK_BYTES(h2.read(*fx.dp, 0, 2 * MiB), model);
        }
        auto r = fx.flush();
        CHECK_MESSAGE(r, (r ? "" : to_string(r.error())));
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_data") == 0);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK_BYTES(h.read(*fx.dp, 0, 2 * MiB), model);
        // Written back, the buckets are clean: GC frees them, and writes
        // land in the cache again.
        run_within("gc_now", [&] { fx.ctl().gc_now(); });
        CHECK(fx.stat("buckets_free") >= 2);
        const auto w4 = random_bytes(64 * KiB, 123);
        h.write(*fx.dp, 256 * KiB, w4);
        put(model, 256 * KiB, w4);
        CHECK(fx.stat("writes_dirty") == 9);
        CHECK(fx.stat("writes_around") == 3);
        CHECK_BYTES(h.read(*fx.dp, 0, 2 * MiB), model);
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
    }

    TEST_CASE("writeback 11: fsync of a dirty file succeeds; fsync_to_backing puts the bytes on "
              "the backing before it returns" *
              doctest::timeout(30)) {
        Fx fx;
        const std::string f = fx.path("f");
        const auto a = random_bytes(128 * KiB, 111), b = random_bytes(48 * KiB, 112);
        write_file(f, a);
        std::string model = a;
        put(model, 100 * KiB, b);
        SUBCASE("in the cache") {
            fx.start();
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 100 * KiB, b);
            h.fsync(*fx.dp, false);
            h.fsync(*fx.dp, true);
            CHECK_BYTES(read_backing(f), a);
            CHECK(fx.stat("dirty_files") == 1);
            CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), model);
        }
        SUBCASE("fsync_to_backing=1") {
            fx.cp.fsync_to_backing = true;
            fx.start();
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 100 * KiB, b);
            CHECK_BYTES(read_backing(f), a);
            h.fsync(*fx.dp, true);
            CHECK_BYTES(read_backing(f), model);
            CHECK(fx.stat("dirty_files") == 0);
            CHECK(fx.stat("dirty_data") == 0);
            CHECK(fx.stat("writeback_bytes") == 48 * KiB);
            h.fsync(*fx.dp, false); // nothing dirty: the backing's own fsync
            CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), model);
        }
        SUBCASE("fsync_to_backing=1 with a failing backing: an error, and the data stays dirty") {
            fx.cp.fsync_to_backing = true;
            fx.start();
            Handle h(*fx.dp, f);
            const auto far = random_bytes(16 * KiB, 113);
            h.write(*fx.dp, 2 * MiB, far);
            std::optional<Result<void>> r;
            with_backing_limit(1 * MiB, [&] { r = fsync_through(*fx.dp, h.of(), true); });
            REQUIRE(r.has_value());
            CHECK_FALSE(*r); // never success for an fsync that did not happen
            CHECK(fx.stat("dirty_files") == 1);
            CHECK(fx.stat("dirty_data") == 16 * KiB);
            h.fsync(*fx.dp, true); // the backing takes it again
            CHECK(fx.stat("dirty_files") == 0);
            std::string m = a;
            put(m, 2 * MiB, far);
            CHECK_BYTES(read_backing(f), m);
            return; // writeback_errors counted the failure
        }
        SUBCASE("an O_DSYNC open: each write is durable in the cache when it returns") {
            fx.start();
            {
                Handle h(*fx.dp, f, O_RDWR | O_DSYNC);
                h.write(*fx.dp, 100 * KiB, b);
                CHECK(fx.stat("writes_dirty") == 1);
            }
            CHECK_BYTES(read_backing(f), a);
            // A crash now: the cache directory as it is on disk.
            const std::string snap = fx.snapshot();
            REQUIRE_FALSE(snap.empty());
            fx.stop();
            fx.dc.dir = snap;
            fx.start();
            Handle h(*fx.dp, f, O_RDONLY);
            CHECK_BYTES(h.read(*fx.dp, 0, 256 * KiB), model);
            CHECK(fx.flush());
            CHECK_BYTES(read_backing(f), model);
        }
        CHECK(fx.stat("writeback_errors") == 0);
    }

    // 12. A fill read the backing before a write made its chunk dirty.
    TEST_CASE("writeback 12: a fill never overwrites dirty data written while it was in flight" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            Gate entered, release;
        } s;
        Fx fx;
        fx.hooks.before_fill_commit = [&] {
            if (!s.armed.exchange(false))
                return;
            s.entered.open();
            s.release.wait();
        };
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(128 * KiB, 121), b = random_bytes(16 * KiB, 122);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        s.armed = true;
        CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), a.substr(0, 64 * KiB)); // a miss: a fill
        REQUIRE(s.entered.wait()); // the fill holds the old chunk, uncommitted
        h.write(*fx.dp, 16 * KiB, b);
        put(model, 16 * KiB, b);
        s.release.open();
        fx.ctl().drain_fills();
        CHECK(fx.stat("cache_miss_collisions") == 1);
        CHECK(fx.stat("fills") == 0);
        CHECK(fx.stat("dirty_data") == 16 * KiB);
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), model);
        fx.ctl().drain_fills();
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), model);
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), model);
    }

    // Regression (src/cache/read_path.cpp, ReadPath::read / miss_chunk / fill): a
    // read loads st.ahead once, at its start. A writeback write that lands
    // after that load and before the read reaches a later chunk is not seen
    // as a change by that chunk's fill: miss_chunk takes write_seq after the
    // write bumped it, reads the old bytes from the backing and queues a
    // fill whose epoch and write_seq still match at commit. The fill's
    // stage_insert then punches the dirty extent and puts the backing's old
    // bytes there as clean: the acknowledged write is lost (dirty_data drops
    // to 0, reads return the old bytes, writeback has nothing to copy). Here
    // the read is parked in the cache device read of its first chunk (a hit)
    // while the write goes in. Fix: a fill must stand down when, under
    // FileState::mu, the file is ahead (kFileAhead), or at least when the
    // range holds a dirty extent. Skipped until fixed.
    TEST_CASE("writeback 13: a read that began before a write into a later chunk never fills "
              "over the dirty bytes" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            Gate entered, release;
        } s;
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(128 * KiB, 131), b = random_bytes(32 * KiB, 132);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), a.substr(0, 64 * KiB));
        fx.ctl().drain_fills();
        REQUIRE(fx.stat("fills") == 1); // chunk 0 is cached: the next read of it is a hit
        fx.dev->set_fault([&](store::DataOp op, std::uint64_t, std::size_t) {
            if (op == store::DataOp::read && s.armed.exchange(false)) {
                s.entered.open();
                s.release.wait();
            }
            return 0;
        });
        s.armed = true;
        Gate r_done;
        std::jthread reader([&] {
            (void)try_read(*fx.dp, h.of(), 0, 128 * KiB);
            r_done.open();
        });
        // The read saw a clean file and is reading chunk 0 from the cache.
        REQUIRE(s.entered.wait());
        h.write(*fx.dp, 64 * KiB, b); // chunk 1, partly: dirty
        put(model, 64 * KiB, b);
        s.release.open();
        REQUIRE(r_done.wait());
        reader.join();
        fx.dev->set_fault({});
        fx.ctl().drain_fills();
        CHECK(fx.stat("dirty_data") == 32 * KiB);
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), model);
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
    }

    TEST_CASE("writeback 14: a utimens of a dirty file is its mtime, shown now and on the "
              "backing after writeback" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 141), b = random_bytes(64 * KiB, 142);
        write_file(f, a);
        std::string model = a;
        Handle h(*fx.dp, f);
        h.write(*fx.dp, 64 * KiB, b);
        put(model, 64 * KiB, b);
        // The adapter's setattr, bracketed.
        const struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 123456789}};
        CHECK_FALSE(attr_change(*fx.dp, h.fd, [&] { REQUIRE(::futimens(h.fd, ts) == 0); })
                        .backing_changed);
        const struct stat shown = getattr_of(*fx.dp, h.fd);
        CHECK(ns_of(shown.st_mtim) == ns_of(ts[1]));
        CHECK(shown.st_size == static_cast<off_t>(128 * KiB));
        CHECK(fx.stat("dirty_files") == 1);
        CHECK(fx.stat("writeback_conflicts") == 0);
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
        CHECK(ns_of(stat_path(f).st_mtim) == ns_of(ts[1]));
    }

    TEST_CASE("writeback 15: flush_on_unmount writes everything back at stop(); without it the "
              "data stays dirty for the next mount" *
              doctest::timeout(30)) {
        Fx fx;
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 151), b = random_bytes(32 * KiB, 152);
        write_file(f, a);
        std::string model = a;
        put(model, 16 * KiB, b);
        bool flushes = false;
        SUBCASE("flush_on_unmount=1") {
            fx.cp.flush_on_unmount = true;
            flushes = true;
        }
        SUBCASE("flush_on_unmount=0") {}
        fx.start();
        {
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 16 * KiB, b);
        }
        run_within("stop", [&] { fx.stop(); });
        CHECK_BYTES(read_backing(f), flushes ? model : a);
        fx.cp.flush_on_unmount = false;
        fx.start();
        CHECK(fx.stat("dirty_files") == (flushes ? 0u : 1u));
        Handle h(*fx.dp, f, O_RDONLY);
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), model);
    }

    // A rename moves the file's ctime on the backing (ext4, and NFS servers
    // on most filesystems). Made inside begin_attr_change's bracket, it is
    // recorded as ours: never a false conflict (which would send the data
    // written through the mount to lost+found: the usual "write a temporary
    // file, rename it into place"), and the record's path follows.
    TEST_CASE("writeback 16: a dirty file renamed through the mount is written back under its "
              "new name, after a restart too" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        REQUIRE(::mkdir(fx.path("d").c_str(), 0755) == 0);
        const std::string f = fx.path("f"), g = fx.path("d/g");
        const auto a = random_bytes(64 * KiB, 161), b = random_bytes(32 * KiB, 162);
        write_file(f, a);
        std::string model = a;
        {
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 48 * KiB, b);
            put(model, 48 * KiB, b);
            // The adapter's rename, bracketed.
            attr_change(
                *fx.dp, h.fd, [&] { REQUIRE(::rename(f.c_str(), g.c_str()) == 0); }, true);
        }
        SUBCASE("in the same mount") {}
        SUBCASE("after a restart") {
            fx.stop();
            fx.start();
        }
        {
            Handle h(*fx.dp, g, O_RDONLY);
            CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), model);
        }
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(g), model);
        CHECK(::access(f.c_str(), F_OK) != 0);
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("writeback_conflicts") == 0);
        CHECK(fx.lost_files().empty());
    }

    TEST_CASE("writeback 17: an O_TRUNC open through the mount drops the dirty data; later "
              "writes are written back alone" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(64 * KiB, 171), b = random_bytes(64 * KiB, 172),
                   c = random_bytes(8 * KiB, 173);
        write_file(f, a);
        {
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 32 * KiB, b);
        }
        REQUIRE(fx.stat("dirty_files") == 1);
        std::string model;
        {
            Handle h(*fx.dp, f, O_RDWR | O_TRUNC);
            CHECK(fx.stat("dirty_files") == 0);
            CHECK(fx.stat("dirty_data") == 0);
            CHECK(h.read(*fx.dp, 0, 128 * KiB).empty());
            CHECK(getattr_of(*fx.dp, h.fd).st_size == 0);
            h.write(*fx.dp, 4 * KiB, c);
            put(model, 4 * KiB, c);
            CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), model);
        }
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("writeback_bytes") == 8 * KiB);
        CHECK(fx.stat("dirty_files") == 0);
    }

    // Regression (src/cache/caching_path.cpp, CachingPath::open): the adapter's
    // open(2) with O_TRUNC empties the backing file before DataPath::open
    // runs, with nothing held: a writeback batch in the middle of its copy
    // then writes the old dirty bytes into the emptied file, extends it to
    // cache_size and marks them clean (kFileAhead cleared). open() is meant
    // to catch exactly that ("A writeback batch may have written to the file
    // after the open emptied it: empty it again under the lock"), but it
    // tests fs.ahead after taking backing_mu, when the batch has just
    // cleared it: no second ftruncate, and records.drop() records the
    // attributes of the empty file from before the batch. The O_TRUNC is
    // undone: the file reads as the old bytes (and the next comparison calls
    // them a change behind the mount). The decision must not depend on
    // fs.ahead read after the batch (e.g. truncate again whenever the
    // backing's size/ctime differs from `st`, or remember that a batch ran
    // since the adapter's open). Skipped until fixed.
    TEST_CASE("writeback 18: an O_TRUNC open during a batch's copy leaves the file empty" *
              doctest::timeout(30)) {
        struct S {
            std::atomic<bool> armed{false};
            Gate entered, release;
        } s;
        Fx fx;
        fx.hooks.before_writeback_copy = [&](FileState&) {
            if (!s.armed.exchange(false))
                return;
            s.entered.open();
            s.release.wait();
        };
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(128 * KiB, 181), b = random_bytes(64 * KiB, 182);
        write_file(f, a);
        {
            Handle h(*fx.dp, f);
            h.write(*fx.dp, 0, b);
        }
        s.armed = true;
        auto flushed = std::make_shared<std::promise<Result<void>>>();
        auto flushed_f = flushed->get_future();
        fx.dp->flush([flushed](Result<void> r) { flushed->set_value(r); });
        REQUIRE(s.entered.wait());
        // The adapter's open: open(2) empties the backing, then DataPath::open.
        struct O {
            int fd = -1;
            std::optional<Result<OpenOut>> out;
            Gate syscall_done, done;
        } o;
        std::jthread opener([&] {
            o.fd = ::open(f.c_str(), O_RDWR | O_TRUNC);
            struct stat st {};
            const bool ok = o.fd >= 0 && ::fstat(o.fd, &st) == 0;
            o.syscall_done.open();
            if (ok)
                o.out.emplace(fx.dp->open(o.fd, st, O_RDWR | O_TRUNC));
            o.done.open();
        });
        REQUIRE(o.syscall_done.wait());
        REQUIRE(o.fd >= 0);
        s.release.open();
        REQUIRE(o.done.wait());
        opener.join();
        REQUIRE(flushed_f.wait_for(kDeadline) == std::future_status::ready);
        REQUIRE(o.out.has_value());
        REQUIRE(*o.out);
        OpenOut out = std::move(**o.out);
        CHECK(try_read(*fx.dp, *out.file, 0, 256 * KiB) == std::string());
        CHECK(getattr_of(*fx.dp, o.fd).st_size == 0);
        out.file.reset();
        ::close(o.fd);
        CHECK(fx.flush());
        CHECK(read_backing(f).empty());
        CHECK(fx.stat("dirty_files") == 0);
        CHECK(fx.stat("writeback_conflicts") == 0);
    }

    // Regression (src/cache/write_path.cpp, WritePath::lseek): SEEK_DATA and
    // SEEK_HOLE go to the backing fd as they are, also for a file ahead of
    // the backing, so they answer for the backing's bytes and size, not the
    // mount's (DataPath::lseek: "as the mount sees the file"). Past the
    // backing's end but inside the mount's size they fail with ENXIO, and a
    // sparse-aware copy (cp, tar, rsync use SEEK_DATA/SEEK_HOLE) of a file
    // with dirty data past the backing's end silently drops that data.
    // Skipped until fixed.
    TEST_CASE("writeback 19: SEEK_DATA and SEEK_HOLE see the mount's file, dirty data included" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f");
        const auto a = random_bytes(100 * KiB, 191), b = random_bytes(10 * KiB, 192);
        write_file(f, a);
        Handle h(*fx.dp, f);
        h.write(*fx.dp, 200 * KiB, b); // the mount's file: 210 KiB, a hole at [100, 200) KiB
        // Data at or after 150 KiB: somewhere in [150, 200] KiB (a
        // filesystem may call a hole data), never "no data" (ENXIO).
        auto d = fx.dp->lseek(h.of(), 150 * KiB, SEEK_DATA);
        CHECK_MESSAGE(d, (d ? "" : to_string(d.error())));
        if (d) {
            CHECK(*d >= static_cast<off_t>(150 * KiB));
            CHECK(*d <= static_cast<off_t>(200 * KiB));
        }
        // A hole at or after 200 KiB: the end of the file, 210 KiB.
        auto e = fx.dp->lseek(h.of(), 200 * KiB, SEEK_HOLE);
        CHECK_MESSAGE(e, (e ? "" : to_string(e.error())));
        if (e)
            CHECK(*e == static_cast<off_t>(210 * KiB));
        // Past the mount's end: ENXIO.
        auto x = fx.dp->lseek(h.of(), 210 * KiB, SEEK_DATA);
        CHECK_FALSE(x);
    }

    TEST_CASE("writeback 20: copy_file_range from a dirty file copies the mount's bytes" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const std::string f = fx.path("f"), g = fx.path("g");
        const auto a = random_bytes(128 * KiB, 201), b = random_bytes(64 * KiB, 202),
                   c = random_bytes(128 * KiB, 203);
        write_file(f, a);
        write_file(g, c);
        std::string mf = a, mg = c;
        Handle hf(*fx.dp, f), hg(*fx.dp, g);
        hf.write(*fx.dp, 32 * KiB, b);
        put(mf, 32 * KiB, b);
        hg.write(*fx.dp, 0, b); // the destination is dirty too
        put(mg, 0, b);
        auto n = fx.dp->copy_file_range(hf.of(), 16 * KiB, hg.of(), 64 * KiB, 96 * KiB, 0);
        REQUIRE_MESSAGE(n, (n ? "" : to_string(n.error())));
        REQUIRE(*n == 96 * KiB);
        put(mg, 64 * KiB, mf.substr(16 * KiB, 96 * KiB));
        CHECK_BYTES(hg.read(*fx.dp, 0, 256 * KiB), mg);
        CHECK_BYTES(hf.read(*fx.dp, 0, 256 * KiB), mf);
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), mf);
        CHECK_BYTES(read_backing(g), mg);
        CHECK(fx.stat("writeback_conflicts") == 0);
    }

    TEST_CASE("writeback 21: a write over several chunks is one device write per bucket it "
              "lands in; its extents still end at chunk edges, and its bytes read back" *
              doctest::timeout(30)) {
        Fx fx;
        std::vector<std::uint32_t> writes; // the bucket of each cache device write
        fx.hooks.after_device_write = [&](std::uint32_t b) { writes.push_back(b); };
        fx.start();
        const std::string f = fx.path("f");
        write_file(f, "");
        std::string model;
        Handle h(*fx.dp, f);
        // 200 KiB from an offset inside a block: four pieces of the 64 KiB
        // chunks ([10000, 64K) with its head block shared, then two whole
        // chunks, then a tail), 204 KiB of blocks: one fresh bucket of 256 KiB.
        const auto a = random_bytes(200 * KiB, 211);
        h.write(*fx.dp, 10000, a);
        put(model, 10000, a);
        CHECK(writes.size() == 1);
        CHECK(fx.stat("dirty_data") == 200 * KiB);
        CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), model);
        // The next 200 KiB find 52 KiB left in that bucket: the pieces that
        // fit go there, the rest to a new bucket, one write each.
        const auto b = random_bytes(200 * KiB, 212);
        h.write(*fx.dp, 300 * KiB, b);
        put(model, 300 * KiB, b);
        CHECK(writes.size() == 3);
        if (writes.size() == 3)
            CHECK(writes[1] == writes[0]);
        CHECK(fx.stat("dirty_data") == 400 * KiB);
        CHECK_BYTES(h.read(*fx.dp, 0, 1024 * KiB), model);
        {
            Handle h2(*fx.dp, f, O_RDONLY);
            CHECK_BYTES(h2.read(*fx.dp, 0, 1024 * KiB), model);
        }
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_data") == 0);
    }

    TEST_CASE("writeback 22: a dirty write's device write holds no lock of the file: while it "
              "waits between the device and the index, a truncate of the same file completes "
              "and another write queues without waiting; it then lands after the truncate" *
              doctest::timeout(30)) {
        Fx fx;
        HoldOnce hold;
        fx.hooks.after_device_write = [&](std::uint32_t) { hold(); };
        fx.start();
        const std::string f = fx.path("f");
        write_file(f, "");
        std::string model;
        Handle h(*fx.dp, f);
        const auto base = random_bytes(256 * KiB, 221);
        h.write(*fx.dp, 0, base);
        put(model, 0, base);

        // The held write: 64 KiB at 128 KiB, its bytes on the device.
        const auto held = random_bytes(64 * KiB, 222);
        hold.arm();
        Gate held_done;
        std::jthread writer([&] {
            h.write(*fx.dp, 128 * KiB, held);
            held_done.open();
        });
        REQUIRE(hold.entered.wait());
        // Meanwhile: a write elsewhere in the file queues for the held
        // one's thread, which places and commits it next; its own thread
        // does not wait. A truncate below the held range finishes.
        const auto other = random_bytes(16 * KiB, 223);
        auto other_done = std::make_shared<Gate>();
        run_within("a write while another is between device and index", [&] {
            MemSource src(other);
            fx.dp->write(h.of(), src, 16 * KiB, [other_done, n = other.size()](auto r) {
                CHECK(r);
                CHECK((r && *r == n));
                other_done->open();
            });
        });
        put(model, 16 * KiB, other);
        run_within("a truncate while a write is between device and index", [&] {
            auto r = fx.dp->truncate(h.fd, true, 100 * KiB);
            CHECK(r);
        });
        model.resize(100 * KiB);
        CHECK_FALSE(held_done.wait(kQuiet)); // still held
        CHECK_FALSE(other_done->wait(std::chrono::milliseconds(0)));
        hold.release.open();
        REQUIRE(held_done.wait());
        REQUIRE(other_done->wait());
        writer.join();
        // The held write counts from when it entered the index: after the
        // truncate, so the gap it leaves reads as zeros.
        put(model, 128 * KiB, held);
        CHECK(getattr_of(*fx.dp, h.fd).st_size == static_cast<off_t>(model.size()));
        CHECK_BYTES(h.read(*fx.dp, 0, 512 * KiB), model);
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_data") == 0);
    }

    TEST_CASE("writeback 23: writes queued while another commits are committed together, and "
              "overlapping ones in order: a punch never misses an extent of its own batch" *
              doctest::timeout(30)) {
        Fx fx;
        HoldOnce hold;
        std::mutex mu;
        std::condition_variable cv;
        std::size_t queued = 0;
        std::vector<std::size_t> groups;
        fx.hooks.dirty_queued = [&](std::size_t n) {
            std::lock_guard lk(mu);
            queued = n;
            cv.notify_all();
        };
        fx.hooks.before_dirty_commit = [&](std::size_t n) {
            {
                std::lock_guard lk(mu);
                groups.push_back(n);
            }
            hold();
        };
        fx.start();
        const std::string f = fx.path("f");
        write_file(f, "");
        std::string model;
        Handle h(*fx.dp, f);
        // 16 extents of 4 KiB: writes B, C and D below each cut their own.
        for (std::uint64_t at = 0; at < 64 * KiB; at += 4 * KiB) {
            const auto piece = random_bytes(4 * KiB, 230 + at / KiB);
            h.write(*fx.dp, at, piece);
            put(model, at, piece);
        }
        auto wait_queued = [&](std::size_t n) {
            std::unique_lock lk(mu);
            return cv.wait_for(lk, std::chrono::seconds(10), [&] { return queued == n; });
        };
        // A's thread commits, held just before: B, C and D queue behind it,
        // in that order.
        const auto a = random_bytes(4 * KiB, 231), b = random_bytes(4 * KiB, 232),
                   c = random_bytes(4 * KiB, 233), d = random_bytes(4 * KiB, 234);
        hold.arm();
        std::jthread wa([&] { h.write(*fx.dp, 0, a); });
        REQUIRE(hold.entered.wait());
        {
            // A's own queueing counted 1: from here on, B's, C's and D's.
            std::lock_guard lk(mu);
            queued = 0;
        }
        std::jthread wb([&] { h.write(*fx.dp, 8 * KiB, b); });
        REQUIRE(wait_queued(1));
        std::jthread wc([&] { h.write(*fx.dp, 10 * KiB, c); }); // over half of B
        REQUIRE(wait_queued(2));
        std::jthread wd([&] { h.write(*fx.dp, 40 * KiB, d); });
        REQUIRE(wait_queued(3));
        hold.release.open();
        wa.join();
        wb.join();
        wc.join();
        wd.join();
        {
            std::lock_guard lk(mu);
            // One thread committed all three; C cuts what B does, so it went
            // into a second batch, after B's (with D).
            CHECK(std::count(groups.begin(), groups.end(), std::size_t{3}) == 1);
        }
        put(model, 0, a);
        put(model, 8 * KiB, b);
        put(model, 10 * KiB, c);
        put(model, 40 * KiB, d);
        CHECK_BYTES(h.read(*fx.dp, 0, 64 * KiB), model);
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_data") == 0);
    }

    TEST_CASE("writeback 24: a write queued behind a commit gives its thread back at once and is "
              "answered by the committing thread once its bytes are in the index, or written "
              "around the cache when they cannot go in" *
              doctest::timeout(30)) {
        Fx fx;
        HoldOnce hold;
        fx.hooks.before_dirty_commit = [&](std::size_t) { hold(); };
        std::optional<PoolPause> pause(std::in_place, fx.ex.writeback());
        fx.start();
        const std::string f = fx.path("f");
        const auto base = random_bytes(64 * KiB, 240);
        write_file(f, base);
        std::string model = base;
        Handle h(*fx.dp, f);
        const auto a = random_bytes(4 * KiB, 241), b = random_bytes(8 * KiB, 242);
        // A's thread commits, held before it starts.
        hold.arm();
        std::atomic<std::thread::id> committer{};
        std::jthread wa([&] {
            committer = std::this_thread::get_id();
            h.write(*fx.dp, 0, a);
        });
        REQUIRE(hold.entered.wait());
        // B queues behind it: the call returns, unanswered.
        struct Answer {
            std::mutex mu;
            std::condition_variable cv;
            std::optional<Result<std::size_t>> r;
            std::thread::id by;
        };
        auto answer = std::make_shared<Answer>();
        run_within("a write queued behind a commit", [&] {
            MemSource src(b);
            fx.dp->write(h.of(), src, 16 * KiB, [answer](Result<std::size_t> r) {
                std::lock_guard lk(answer->mu);
                answer->r.emplace(std::move(r));
                answer->by = std::this_thread::get_id();
                answer->cv.notify_all();
            });
        });
        {
            std::lock_guard lk(answer->mu);
            CHECK_FALSE(answer->r.has_value());
        }
        const std::uint64_t around = fx.stat("writes_around");
        bool gone = false;
        SUBCASE("committed, and answered once they are") {}
        SUBCASE("the file's record dropped before the commit: both go around the cache") {
            // Its last name removed through the mount while it is open.
            const struct stat st = h.fstat();
            REQUIRE(::unlink(f.c_str()) == 0);
            fx.dp->removed(FileRef{h.fd, st});
            gone = true;
        }
        hold.release.open();
        wa.join();
        {
            std::unique_lock lk(answer->mu);
            REQUIRE(answer->cv.wait_for(lk, kDeadline, [&] { return answer->r.has_value(); }));
            REQUIRE_MESSAGE(*answer->r, to_string(answer->r->error()));
            CHECK(**answer->r == b.size());
            CHECK(answer->by == committer.load());
        }
        put(model, 0, a);
        put(model, 16 * KiB, b);
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), model);
        if (gone) {
            CHECK(fx.stat("writes_around") == around + 2);
            std::string raw(model.size(), '\0');
            CHECK(::pread(h.fd, raw.data(), raw.size(), 0) == static_cast<ssize_t>(raw.size()));
            CHECK_BYTES(raw, model);
            return;
        }
        CHECK(fx.stat("writes_around") == around);
        CHECK(fx.stat("dirty_data") >= a.size() + b.size());
        pause.reset();
        CHECK(fx.flush());
        CHECK_BYTES(read_backing(f), model);
        CHECK(fx.stat("dirty_data") == 0);
    }

    TEST_CASE("writeback 25: a group whose commit ends in an exception after its bytes were "
              "placed answers its writes only once they are on the backing" *
              doctest::timeout(30)) {
        Fx fx;
        std::atomic<bool> throw_once{false};
        // Inside the commit, after the placement: the first dirty write of a
        // file compares the backing with the record there.
        fx.hooks.after_compare = [&] {
            if (throw_once.exchange(false))
                throw std::runtime_error("injected: the commit fails");
        };
        std::optional<PoolPause> pause(std::in_place, fx.ex.writeback());
        fx.start();
        const std::string f = fx.path("f");
        const auto base = random_bytes(64 * KiB, 250);
        write_file(f, base);
        std::string model = base;
        Handle h(*fx.dp, f);
        const std::uint64_t around = fx.stat("writes_around");
        const std::uint64_t dirty = fx.stat("writes_dirty");
        const auto a = random_bytes(8 * KiB, 251);
        throw_once = true;
        h.write(*fx.dp, 4 * KiB, a);
        CHECK_FALSE(throw_once.load()); // the hook ran
        put(model, 4 * KiB, a);
        CHECK(fx.stat("writes_around") == around + 1);
        CHECK(fx.stat("writes_dirty") == dirty);
        CHECK_BYTES(h.read(*fx.dp, 0, 128 * KiB), model);
        CHECK_BYTES(read_backing(f), model);
    }
}
