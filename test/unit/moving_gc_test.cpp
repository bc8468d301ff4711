// Moving GC (issue #7, item 6): the Mover (cache/mover.cpp) driven by the
// real Gc (bg/gc.cpp) on a manual GC executor, over a real cache device and
// RocksDB index, with the real write path and writeback writing a real
// backing directory. No FUSE, no DataPath: the test holds the CacheCore, so
// it can reach the mover's seam and check the index against the Allocator's
// accounting after every step.
//
// The layout every test starts from (bucket 256 KiB, extents 64 KiB):
// file "a" is written dirty, 1 MiB in 64 KiB writes (buckets B0..B3, four
// extents each), then three of each bucket's four extents are overwritten
// (into new buckets). B0..B3 then hold 25 % live, dirty data each: exactly
// what LRU reclaim cannot free and moving GC must.
//
// Races are forced at the mover's seam (before_commit: copies on the
// device, nothing locked or committed) and writeback's (before_copy): the
// other side runs inline in the hook, on the thread that is parked there,
// which is a legal interleaving because neither holds a lock at that point.
#include "cache/cache_core.hpp"
#include "cache/cached_file.hpp"
#include "cache/mover.hpp"
#include "cache/read_path.hpp"
#include "util/file_io.hpp"
#include "cache/write_path.hpp"
#include "cache/writeback.hpp"
#include "data_path_support.hpp"
#include "overcache/bg/gc.hpp"
#include "overcache/cache/caching_path.hpp"
#include "overcache/meta/key_codec.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace overcache;
using namespace overcache::cache;
using test::MemSource;
using test::random_bytes;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;
constexpr std::uint64_t kExt = 64 * KiB;
constexpr std::uint64_t kFileSize = 1 * MiB;

// `data` at `off` in the model of a file.
void put(std::string& model, std::uint64_t off, const std::string& data) {
    if (model.size() < off + data.size())
        model.resize(off + data.size(), '\0');
    model.replace(off, data.size(), data);
}

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

struct Open {
    int fd = -1;
    std::unique_ptr<CachedFile> f;
    ~Open() {
        f.reset();
        if (fd >= 0)
            ::close(fd);
    }
};

struct Fx {
    bg::Executors ex{bg::Executors::Mode::manual};
    test::TmpDir tmp;
    std::string backing = tmp / "backing";
    store::DeviceConfig dc;
    CachingParams cp;
    CacheHooks hooks;
    std::optional<CacheCore> core;
    std::optional<WritePath> writer;
    std::optional<ReadPath> reader;
    std::optional<Writeback> wb;
    std::optional<Mover> mover;
    std::optional<bg::Gc> gc;

    Fx() {
        ::mkdir(backing.c_str(), 0755);
        dc.dir = tmp / "cache";
        dc.cache_size = 4 * MiB;
        dc.bucket_size = 256 * KiB;
        dc.backing = store::BackingIdentity{backing, 1, 2};
        cp.mode = config::CacheMode::writeback;
        cp.fill_size = kExt;
        cp.sequential_cutoff = 0;
        cp.backing_root = backing;
        cp.lost_found_dir = tmp / "lost+found";
        cp.writeback_delay_s = 3600;
        // Writes that find no room go around at once (this fixture answers
        // writes inline; parked waits are parked_write_test's).
        cp.writeback_wait_max_s = 0;
        start();
    }
    ~Fx() { crash(); }

    void start() {
        auto d = store::open_cache_device(dc);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        core.emplace(std::move(*d), cp);
        REQUIRE(core->alloc.load_all());
        REQUIRE(core->records.start());
        REQUIRE(core->dirty.load(core->dev->meta()));
        writer.emplace(*core, hooks, ex.fill().make_strand());
        reader.emplace(*core, ex.fill().executor(), hooks);
        wb.emplace(*core, ex.writeback().make_strand());
        mover.emplace(*core);
        // GC always wants more free buckets: every pass reclaims, then moves.
        const std::size_t all = core->alloc.bucket_count();
        gc.emplace(ex.gc().make_strand(), core->alloc, core->dev->meta(),
                   bg::GcParams{all, all, 50, 8}, &*mover);
    }
    // Drops everything in memory without a clean stop: what is on disk is
    // what the commits wrote (a kill -9).
    void crash() {
        ex.fill().run_until_idle();
        ex.gc().run_until_idle();
        gc.reset();
        mover.reset();
        wb.reset();
        reader.reset();
        writer.reset();
        core.reset();
    }

    std::string path(const std::string& name) const { return backing + "/" + name; }

    std::unique_ptr<Open> open(const std::string& name) {
        auto o = std::make_unique<Open>();
        o->fd = ::open(path(name).c_str(), O_RDWR | O_CREAT, 0644);
        REQUIRE(o->fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(o->fd, &st) == 0);
        StateRef ref = core->files.acquire(core->key_of(o->fd, st));
        {
            std::lock_guard lk(ref->mu);
            REQUIRE(core->records.load(*ref));
            if (!ref->rec)
                REQUIRE(core->records.create(*ref, o->fd, st));
        }
        o->f = std::make_unique<CachedFile>(o->fd, std::move(ref));
        return o;
    }

    void write(Open& o, std::uint64_t off, const std::string& data) {
        MemSource src(data);
        std::optional<Result<std::size_t>> got;
        writer->write(*o.f, src, static_cast<off_t>(off), [&](Result<std::size_t> r) { got = r; });
        REQUIRE(got);
        REQUIRE(*got);
        REQUIRE(**got == data.size());
    }

    // The file as a reader through the cache sees it.
    std::string read(Open& o, std::uint64_t size) {
        std::string out(size, '\0');
        for (std::uint64_t at = 0; at < size;) {
            const std::uint64_t n = std::min<std::uint64_t>(size - at, 128 * KiB);
            auto r = reader->read(*o.f, out.data() + at, n, static_cast<off_t>(at),
                                  [](int fd, char* to, std::size_t len, std::uint64_t from) {
                                      return pread_upto(fd, to, len, from);
                                  });
            REQUIRE(r);
            if (r->fd >= 0) {
                const ssize_t got = ::pread(r->fd, out.data() + at, r->len, r->fd_offset);
                REQUIRE(got >= 0);
                r->len = static_cast<std::size_t>(got);
            }
            REQUIRE(r->len > 0);
            at += r->len;
        }
        return out;
    }

    std::string read_backing(const std::string& name) {
        int fd = ::open(path(name).c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        std::string s(static_cast<std::size_t>(st.st_size), '\0');
        REQUIRE(::pread(fd, s.data(), s.size(), 0) == static_cast<ssize_t>(s.size()));
        ::close(fd);
        return s;
    }

    std::vector<Piece> extents(Open& o) {
        auto p = core->index.lookup(o.f->state().fid.load(), 0, UINT64_MAX);
        REQUIRE(p);
        return *p;
    }

    // Every current extent of the index, summed per bucket, is exactly what
    // the Allocator accounts (live and dirty bytes), and the totals agree.
    void check_accounting() {
        std::map<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>> seen;
        auto cur = core->dev->meta().cursor(meta::Cf::extents);
        meta::ExtentValue v;
        for (cur.seek_to_first(); cur.valid(); cur.next()) {
            REQUIRE(meta::decode_extent(cur.value(), v));
            if (!core->alloc.current(v.bucket, v.gen))
                continue;
            seen[v.bucket].first += v.len;
            if ((v.flags & meta::kExtentDirty) != 0)
                seen[v.bucket].second += v.len;
        }
        REQUIRE(cur.status());
        std::uint64_t live = 0, dirty = 0;
        for (std::uint32_t b = 0; b < core->alloc.bucket_count(); ++b) {
            const auto r = core->alloc.record(b);
            const auto it = seen.find(b);
            const std::uint64_t l = it == seen.end() ? 0 : it->second.first;
            const std::uint64_t d = it == seen.end() ? 0 : it->second.second;
            CHECK_MESSAGE(r.live_bytes == l, "bucket " << b);
            CHECK_MESSAGE(r.dirty_bytes == d, "bucket " << b);
            live += l;
            dirty += d;
        }
        const auto s = core->alloc.stats();
        CHECK(s.live_bytes == live);
        CHECK(s.dirty_bytes == dirty);
    }

    // A GC pass, run to its end on this thread.
    void run_gc() {
        gc->trigger();
        ex.gc().run_until_idle();
    }

    // One move of the buckets under 50 % live, straight through the mover
    // (GC would go on with further rounds), then a reclaim of what it emptied.
    bg::MoveOutcome move_once() {
        auto cands = core->alloc.fragmented(core->alloc.bucket_size() / 2, 8);
        auto r = mover->move(gc_wp, cands);
        REQUIRE(r);
        if (r->emptied > 0) {
            auto f = core->alloc.reclaim(r->emptied);
            REQUIRE(f);
            CHECK(*f == r->emptied);
        }
        return *r;
    }
    store::WritePoint gc_wp{"gc-test", true};
};

// The starting layout (see the top): returns the buckets B0..B3, whose one
// live extent each is at 0, 256K, 512K, 768K.
std::vector<std::uint32_t> fragment(Fx& fx, Open& a, std::string& model) {
    for (std::uint64_t off = 0; off < kFileSize; off += kExt) {
        const auto d = random_bytes(kExt, static_cast<unsigned>(off / kExt + 1));
        fx.write(a, off, d);
        put(model, off, d);
    }
    std::vector<std::uint32_t> olds;
    for (const auto& p : fx.extents(a))
        if (olds.empty() || olds.back() != p.v.bucket)
            olds.push_back(p.v.bucket);
    REQUIRE(olds.size() == 4);
    for (std::uint64_t off = 0; off < kFileSize; off += kExt) {
        if ((off / kExt) % 4 == 0)
            continue;
        const auto d = random_bytes(kExt, static_cast<unsigned>(off / kExt + 100));
        fx.write(a, off, d);
        put(model, off, d);
    }
    for (auto b : olds) {
        CHECK(fx.core->alloc.record(b).live_bytes == kExt);
        CHECK(fx.core->alloc.record(b).dirty_bytes == kExt);
    }
    fx.check_accounting();
    return olds;
}

bool all_dirty(const std::vector<Piece>& ps) {
    return std::all_of(ps.begin(), ps.end(),
                       [](const Piece& p) { return (p.v.flags & meta::kExtentDirty) != 0; });
}

bool in_any(const std::vector<Piece>& ps, const std::vector<std::uint32_t>& buckets) {
    return std::any_of(ps.begin(), ps.end(), [&](const Piece& p) {
        return std::find(buckets.begin(), buckets.end(), p.v.bucket) != buckets.end();
    });
}

} // namespace

TEST_SUITE("moving_gc") {
    TEST_CASE("moving GC compacts dirty fragmented buckets and frees them; data and accounting "
              "stay exact") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        const auto olds = fragment(fx, *a, model);
        std::vector<std::uint32_t> gens;
        for (auto b : olds)
            gens.push_back(fx.core->alloc.gen(b));
        const auto before = fx.core->alloc.stats();
        const auto free_before = fx.core->alloc.free_count();

        // LRU reclaim alone frees nothing: every full bucket holds dirty data.
        REQUIRE(fx.core->alloc.reclaim(100));
        CHECK(fx.core->alloc.free_count() == free_before);

        // GC needs none of a file's foreground locks: a writer parked on
        // them does not stop it.
        {
            std::lock_guard wl(a->f->state().write_mu);
            std::lock_guard bl(a->f->state().backing_mu);
            fx.run_gc();
        }
        const auto gs = fx.gc->stats();
        CHECK(gs.buckets_moved == 4);
        CHECK(gs.moved_bytes == 4 * kExt);
        for (std::size_t i = 0; i < olds.size(); ++i)
            CHECK_FALSE(fx.core->alloc.current(olds[i], gens[i])); // freed (gen bumped)
        // Four buckets emptied into one of GC's.
        CHECK(fx.core->alloc.free_count() == free_before + 3);
        const auto after = fx.core->alloc.stats();
        CHECK(after.live_bytes == before.live_bytes);
        CHECK(after.dirty_bytes == before.dirty_bytes);
        CHECK(after.dirty_buckets == before.dirty_buckets - 3);
        const auto ps = fx.extents(*a);
        CHECK(ps.size() == kFileSize / kExt);
        CHECK(all_dirty(ps));
        CHECK_FALSE(in_any(ps, olds));
        fx.check_accounting();
        CHECK_BYTES(fx.read(*a, kFileSize), model);

        // Writeback still finds all of it dirty and writes it.
        REQUIRE(fx.wb->write_back_file(a->f->state()));
        CHECK_BYTES(fx.read_backing("a"), model);
        CHECK(fx.core->alloc.stats().dirty_bytes == 0);
        fx.check_accounting();
    }

    TEST_CASE("moved dirty data survives a crash right after the move") {
        Fx fx;
        std::string model;
        std::vector<std::uint32_t> olds;
        store::AllocatorStats before;
        {
            auto a = fx.open("a");
            olds = fragment(fx, *a, model);
            fx.run_gc();
            REQUIRE(fx.gc->stats().buckets_moved == 4);
            before = fx.core->alloc.stats();
        }
        fx.crash();
        fx.start();
        const auto after = fx.core->alloc.stats();
        CHECK(after.live_bytes == before.live_bytes);
        CHECK(after.dirty_bytes == before.dirty_bytes);
        CHECK(fx.core->dirty.size() == 1);
        auto a = fx.open("a");
        const auto ps = fx.extents(*a);
        CHECK(ps.size() == kFileSize / kExt);
        CHECK(all_dirty(ps));
        CHECK_FALSE(in_any(ps, olds));
        fx.check_accounting();
        CHECK_BYTES(fx.read(*a, kFileSize), model);
        REQUIRE(fx.wb->write_back_file(a->f->state()));
        CHECK_BYTES(fx.read_backing("a"), model);
    }

    TEST_CASE("a write over an extent while it is being moved wins; the move never brings the "
              "old bytes back") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        const auto olds = fragment(fx, *a, model);
        const auto fresh = random_bytes(kExt, 999);
        int calls = 0;
        fx.mover->before_commit = [&](meta::FileId) {
            if (calls++ == 0) {
                fx.write(*a, 0, fresh); // the extent in B0, copied already
                put(model, 0, fresh);
            }
        };
        fx.run_gc();
        CHECK(calls == 1);
        const auto gs = fx.gc->stats();
        CHECK(gs.moved_bytes == 3 * kExt); // B0's extent was replaced, not moved
        CHECK(gs.buckets_moved == 4);      // ... which left B0 empty too
        fx.check_accounting();
        CHECK(all_dirty(fx.extents(*a)));
        CHECK_BYTES(fx.read(*a, kFileSize), model);
        REQUIRE(fx.wb->write_back_file(a->f->state()));
        CHECK_BYTES(fx.read_backing("a"), model);
    }

    TEST_CASE("a truncate during the move: nothing past the end comes back, and the bucket "
              "still holding dirty bytes is never invalidated") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        const auto olds = fragment(fx, *a, model);
        // B2's extent is [512K, 576K): the truncate keeps 8K of it (dirty, in
        // B2) and drops B3's.
        const std::uint64_t size = 520 * KiB;
        const std::uint32_t gen2 = fx.core->alloc.gen(olds[2]);
        fx.mover->before_commit = [&](meta::FileId) {
            auto r = fx.writer->truncate(a->fd, true, size);
            REQUIRE(r);
        };
        const auto m = fx.move_once();
        fx.mover->before_commit = nullptr;
        model.resize(size);
        CHECK(m.bytes == 2 * kExt); // B0's and B1's
        CHECK(m.emptied == 3);      // B0, B1, and B3 (emptied by the truncate)
        CHECK(fx.core->alloc.current(olds[2], gen2));
        CHECK(fx.core->alloc.record(olds[2]).dirty_bytes == 8 * KiB);
        // Reclaim never takes it while it holds them.
        REQUIRE(fx.core->alloc.reclaim(100));
        CHECK(fx.core->alloc.current(olds[2], gen2));
        fx.check_accounting();
        CHECK(fx.extents(*a).back().end() == size);
        CHECK_BYTES(fx.read(*a, size), model);
        // Alone it is not worth a move (GC's bucket is full of the copies
        // the truncate made dead): it is freed once writeback cleaned it.
        CHECK(fx.move_once().bytes == 0);
        CHECK(fx.core->alloc.current(olds[2], gen2));
        REQUIRE(fx.wb->write_back_file(a->f->state()));
        CHECK_BYTES(fx.read_backing("a"), model);
        REQUIRE(fx.core->alloc.reclaim(100));
        CHECK_FALSE(fx.core->alloc.current(olds[2], gen2));
        fx.check_accounting();
        CHECK_BYTES(fx.read(*a, size), model);
    }

    TEST_CASE("an overwrite that cuts a dirty extent in two during the move: its bucket keeps "
              "the dirty pieces and is never invalidated") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        const auto olds = fragment(fx, *a, model);
        const std::uint32_t gen1 = fx.core->alloc.gen(olds[1]);
        const auto mid = random_bytes(4 * KiB, 77);
        fx.mover->before_commit = [&](meta::FileId) {
            fx.write(*a, 256 * KiB + 16 * KiB, mid); // inside B1's extent
            put(model, 256 * KiB + 16 * KiB, mid);
        };
        const auto m = fx.move_once();
        CHECK(m.emptied == 3);
        REQUIRE(fx.core->alloc.reclaim(100));
        CHECK(fx.core->alloc.current(olds[1], gen1));
        CHECK(fx.core->alloc.record(olds[1]).dirty_bytes == kExt - 4 * KiB);
        fx.check_accounting();
        CHECK_BYTES(fx.read(*a, kFileSize), model);
        // Once writeback has cleaned it, reclaim frees it.
        fx.mover->before_commit = nullptr;
        REQUIRE(fx.wb->write_back_file(a->f->state()));
        CHECK_BYTES(fx.read_backing("a"), model);
        REQUIRE(fx.core->alloc.reclaim(100));
        CHECK_FALSE(fx.core->alloc.current(olds[1], gen1));
        fx.check_accounting();
        CHECK_BYTES(fx.read(*a, kFileSize), model);
    }

    TEST_CASE("writeback cleans the extents while they are being moved: they move clean") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        const auto olds = fragment(fx, *a, model);
        fx.mover->before_commit = [&](meta::FileId) {
            REQUIRE(fx.wb->write_back_file(a->f->state()));
        };
        fx.run_gc();
        CHECK(fx.gc->stats().buckets_moved == 4);
        CHECK(fx.core->alloc.stats().dirty_bytes == 0);
        const auto ps = fx.extents(*a);
        CHECK(ps.size() == kFileSize / kExt);
        CHECK(std::none_of(ps.begin(), ps.end(), [](const Piece& p) {
            return (p.v.flags & meta::kExtentDirty) != 0;
        }));
        CHECK_FALSE(in_any(ps, olds));
        CHECK_FALSE(a->f->state().ahead.load());
        fx.check_accounting();
        CHECK_BYTES(fx.read_backing("a"), model);
        CHECK_BYTES(fx.read(*a, kFileSize), model);
    }

    TEST_CASE("GC moves and frees the buckets a writeback batch is copying from: the batch "
              "leaves them dirty, nothing is lost, and write_back_file goes round again until "
              "the whole file is on the backing") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        const auto olds = fragment(fx, *a, model);
        int calls = 0;
        std::uint64_t dirty_after_first = 0;
        fx.wb->hooks_before_copy = [&](FileState&) {
            if (calls == 1)
                dirty_after_first = fx.core->alloc.stats().dirty_bytes;
            if (calls++ == 0)
                fx.run_gc(); // moves B0..B3's extents and reclaims the buckets
        };
        // Its callers (fsync_to_backing, copy_file_range, a collapse) read
        // the backing next: one call must leave nothing dirty behind.
        REQUIRE(fx.wb->write_back_file(a->f->state()));
        CHECK(fx.gc->stats().buckets_moved == 4);
        CHECK(fx.wb->stats().lost == 0);
        // The first round read the old places, stale by then: those four
        // were still dirty when the second round began.
        CHECK(calls == 2);
        CHECK(dirty_after_first == 4 * kExt);
        CHECK(fx.core->alloc.stats().dirty_bytes == 0);
        CHECK_FALSE(a->f->state().ahead.load());
        CHECK_BYTES(fx.read_backing("a"), model);
        CHECK_BYTES(fx.read(*a, kFileSize), model);
        fx.check_accounting();
    }

    TEST_CASE("a flush during which GC moves the extents being written back ends with nothing "
              "dirty") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        fragment(fx, *a, model);
        int calls = 0;
        fx.wb->hooks_before_copy = [&](FileState&) {
            if (calls++ == 0)
                fx.run_gc();
        };
        std::optional<Result<void>> flushed;
        fx.wb->flush([&](Result<void> r) { flushed = std::move(r); });
        fx.ex.writeback().run_until_idle();
        REQUIRE(flushed.has_value());
        CHECK(*flushed);
        CHECK(fx.gc->stats().buckets_moved == 4);
        CHECK(fx.core->alloc.stats().dirty_bytes == 0);
        CHECK(fx.core->dirty.size() == 0);
        CHECK_BYTES(fx.read_backing("a"), model);
        fx.check_accounting();
    }

    TEST_CASE("when only the reserve is left, GC's write point takes it and frees buckets; a "
              "foreground write point cannot") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        const auto olds = fragment(fx, *a, model);
        // Fill the rest of the cache with dirty data until writes go around.
        auto b = fx.open("b");
        for (std::uint64_t off = 0; fx.core->c.writes_around.load() == 0; off += kExt)
            fx.write(*b, off, random_bytes(kExt, static_cast<unsigned>(off)));
        const auto reserve = fx.core->alloc.reserve();
        REQUIRE(fx.core->alloc.free_count() == reserve);
        store::WritePoint probe("probe", false);
        CHECK_FALSE(fx.core->alloc.alloc(probe, 4096));
        fx.run_gc();
        CHECK(fx.gc->stats().buckets_moved == 4);
        CHECK(fx.core->alloc.free_count() == reserve + 3);
        CHECK(fx.core->alloc.room(fx.gc->write_point()) == 0); // its bucket is full
        CHECK(fx.core->alloc.alloc(probe, 4096));
        fx.check_accounting();
        CHECK_BYTES(fx.read(*a, kFileSize), model);
    }

    TEST_CASE("a move that would take as many buckets as it frees is not made") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        // One fragmented bucket only: B0 with one live extent of four.
        for (std::uint64_t off = 0; off < 4 * kExt; off += kExt) {
            const auto d = random_bytes(kExt, static_cast<unsigned>(off + 1));
            fx.write(*a, off, d);
            put(model, off, d);
        }
        const std::uint32_t b0 = fx.extents(*a).front().v.bucket;
        for (std::uint64_t off = kExt; off < 4 * kExt; off += kExt) {
            const auto d = random_bytes(kExt, static_cast<unsigned>(off + 7));
            fx.write(*a, off, d);
            put(model, off, d);
        }
        const std::uint32_t gen0 = fx.core->alloc.gen(b0);
        REQUIRE(fx.core->alloc.record(b0).live_bytes == kExt);
        const auto free_before = fx.core->alloc.free_count();
        fx.run_gc();
        CHECK(fx.gc->stats().moved_bytes == 0);
        CHECK(fx.core->alloc.free_count() == free_before); // the reserve is not spent
        CHECK(fx.core->alloc.current(b0, gen0));
        fx.check_accounting();
        CHECK_BYTES(fx.read(*a, 4 * kExt), model);
    }

    TEST_CASE("clean fragmented buckets move too, and stay clean") {
        Fx fx;
        auto a = fx.open("a");
        std::string model;
        const auto olds = fragment(fx, *a, model);
        REQUIRE(fx.wb->write_back_file(a->f->state()));
        REQUIRE(fx.core->alloc.stats().dirty_bytes == 0);
        // Straight to the mover (GC's reclaim would free them unmoved).
        REQUIRE(fx.core->alloc.fragmented(fx.core->alloc.bucket_size() / 2, 8).size() == 4);
        const auto m = fx.move_once();
        CHECK(m.emptied == 4);
        CHECK(m.bytes == 4 * kExt);
        const auto ps = fx.extents(*a);
        CHECK(std::none_of(ps.begin(), ps.end(), [](const Piece& p) {
            return (p.v.flags & meta::kExtentDirty) != 0;
        }));
        CHECK_FALSE(in_any(ps, olds));
        fx.check_accounting();
        CHECK_BYTES(fx.read(*a, kFileSize), model);
    }

    TEST_CASE("the caching path runs moving GC on its GC executor and counts it") {
        bg::Executors ex;
        ex.start();
        test::TmpDir tmp;
        const std::string backing = tmp / "backing";
        ::mkdir(backing.c_str(), 0755);
        store::DeviceConfig dc;
        dc.dir = tmp / "cache";
        dc.cache_size = 4 * MiB;
        dc.bucket_size = 256 * KiB;
        dc.backing = store::BackingIdentity{backing, 1, 2};
        CachingParams cp;
        cp.mode = config::CacheMode::writeback;
        cp.fill_size = kExt;
        cp.sequential_cutoff = 0;
        cp.backing_root = backing;
        cp.lost_found_dir = tmp / "lost+found";
        cp.writeback_delay_s = 3600;
        cp.writeback_running = false; // the data stays dirty: reclaim cannot help
        auto d = store::open_cache_device(dc);
        REQUIRE(d);
        auto dp = make_caching_path(std::move(*d), cp, ex);
        auto stat = [&](const std::string& key) {
            for (auto& [k, v] : dp->stats())
                if (k == key)
                    return std::stoull(v);
            FAIL("no stat " << key);
            return 0ull;
        };
        const int fd = ::open((backing + "/a").c_str(), O_RDWR | O_CREAT, 0644);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        auto o = dp->open(fd, st, O_RDWR);
        REQUIRE(o);
        std::string model;
        auto write = [&](std::uint64_t off, const std::string& data) {
            MemSource src(data);
            std::optional<Result<std::size_t>> got;
            dp->write(*o->file, src, static_cast<off_t>(off),
                      [&](Result<std::size_t> r) { got = r; });
            REQUIRE((got && *got && **got == data.size()));
            put(model, off, data);
        };
        for (std::uint64_t off = 0; off < kFileSize; off += kExt)
            write(off, random_bytes(kExt, static_cast<unsigned>(off / kExt + 1)));
        for (std::uint64_t off = 0; off < kFileSize; off += kExt)
            if ((off / kExt) % 4 != 0)
                write(off, random_bytes(kExt, static_cast<unsigned>(off / kExt + 100)));
        const auto dirty = stat("dirty_data");
        dynamic_cast<CacheControl&>(*dp).gc_now();
        CHECK(stat("gc_moved_bytes") == 4 * kExt);
        CHECK(stat("gc_buckets_moved") == 4);
        CHECK(stat("dirty_data") == dirty);
        std::string got(kFileSize, '\0');
        for (std::uint64_t at = 0; at < kFileSize;) {
            auto r = dp->read(*o->file, got.data() + at, kFileSize - at, static_cast<off_t>(at));
            REQUIRE(r);
            REQUIRE(r->fd < 0);
            REQUIRE(r->len > 0);
            at += r->len;
        }
        CHECK_BYTES(got, model);
        o->file.reset();
        dp->stop();
        dp.reset();
        ::close(fd);
    }
}
