// The Allocator's half of a live resize, against a real index: a grow
// writes the new records first and hands the buckets out only once
// published, at the gens it was given (above stale entries); a shrink
// retires buckets (never handed out again, an open one closed), frees the
// clean ones off the free lists, waits for a write pin by reporting the
// bucket busy (never by blocking), is refused with nothing changed when the
// dirty data cannot fit, and can be cancelled. Races at the seams: an
// alloc at retire_from's hook, allocations on another thread across the
// retirement, lock-free readers across a grow (run under TSan).
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/util/stable_array.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <doctest/doctest.h>
#include <thread>
#include <vector>

using namespace overcache;
using namespace overcache::store;

namespace {

constexpr std::uint64_t kBucket = 8192;

struct Ix {
    test::TmpDir tmp;
    std::unique_ptr<meta::MetaStore> ms;
    Ix() {
        meta::StoreOptions o;
        o.create_if_missing = true;
        auto r = meta::MetaStore::open(tmp / "index", o);
        REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
        ms = std::move(*r);
    }
    bool has_record(std::uint32_t b) {
        auto v = ms->get(meta::Cf::buckets, meta::bucket_key(b));
        REQUIRE(v);
        return v->has_value();
    }
};

// Fills a whole bucket through `wp` and commits its bytes (dirty if asked).
std::uint32_t fill(Allocator& a, meta::MetaStore& ms, WritePoint& wp, bool dirty = false) {
    auto x = a.alloc(wp, kBucket);
    REQUIRE(x);
    IndexTxn t(ms.batch());
    t.account(x->bucket, x->gen, kBucket, dirty ? kBucket : 0);
    REQUIRE(a.commit(t));
    return x->bucket;
}

meta::Batch superblock_batch(meta::MetaStore& ms, const std::string& marker) {
    auto b = ms.batch();
    b.put(meta::Cf::meta, "test-superblock", marker);
    return b;
}

} // namespace

TEST_SUITE("store") {
    TEST_CASE("StableArray: elements keep their address and value as it grows") {
        StableArray<std::atomic<std::uint32_t>, 4> arr(100); // chunks of 16
        arr.grow(10);
        arr[3].store(7);
        auto* p = &arr[3];
        arr.grow(100);
        CHECK(&arr[3] == p);
        CHECK(arr[3].load() == 7);
        CHECK(arr[99].load() == 0);
        CHECK(arr[16].load() == 0);
    }

    TEST_CASE("Allocator: a live grow writes records first, hands out new buckets only once "
              "published, at gens above the stale ones") {
        Ix ix;
        Allocator a(*ix.ms, 4, kBucket, 0, 4096);
        a.finish_load();
        WritePoint fg("fg", false);
        for (int i = 0; i < 4; ++i)
            CHECK(fill(a, *ix.ms, fg) < 4);
        CHECK_FALSE(a.alloc(fg, kBucket)); // full

        REQUIRE(a.add_buckets(8, {0, 5, 0, 7}, superblock_batch(*ix.ms, "8")));
        // Written with the superblock, not yet in use.
        CHECK(ix.has_record(5));
        CHECK(ix.ms->get(meta::Cf::meta, "test-superblock").value() == "8");
        CHECK(a.bucket_count() == 4);
        CHECK_FALSE(a.current(5, 5));
        CHECK_FALSE(a.alloc(fg, kBucket));

        a.publish_grow(8);
        CHECK(a.bucket_count() == 8);
        CHECK(a.free_count() == 4);
        CHECK(a.current(5, 5));
        CHECK_FALSE(a.current(5, 4)); // a stale entry at the old gen does not match
        CHECK(a.gen(7) == 7);
        std::vector<std::uint32_t> got;
        for (int i = 0; i < 4; ++i)
            got.push_back(fill(a, *ix.ms, fg));
        std::sort(got.begin(), got.end());
        CHECK(got == std::vector<std::uint32_t>{4, 5, 6, 7});

        // The records bring the same gens back.
        Allocator b(*ix.ms, 8, kBucket, 0, 4096);
        REQUIRE(b.load_all());
        CHECK(b.gen(5) == 5);
        CHECK(b.gen(7) == 7);
        CHECK(b.gen(4) == 0);
    }

    TEST_CASE("Allocator: a live shrink retires buckets, frees the clean ones off the lists, "
              "waits for dirty data to leave and for write pins, then drops them") {
        Ix ix;
        Allocator a(*ix.ms, 8, kBucket, 0, 4096);
        a.finish_load();
        WritePoint fg("fg", false);
        for (int i = 0; i < 4; ++i)
            REQUIRE(fill(a, *ix.ms, fg) == static_cast<std::uint32_t>(i));
        const std::uint32_t clean = fill(a, *ix.ms, fg);       // 4
        const std::uint32_t dirty = fill(a, *ix.ms, fg, true); // 5
        auto pinned = a.alloc(fg, 4096); // 6: closes 5; open, a write in flight
        REQUIRE(pinned);
        REQUIRE(pinned->bucket == 6);
        WritePoint other("other", false);
        REQUIRE(a.alloc(other, 4096)->bucket == 7); // open, idle: outlives the shrink
        CHECK(a.room(other) == kBucket - 4096);
        const std::uint32_t dirty_gen = a.gen(dirty);

        // 8 dirty KiB in 1 bucket past 4 buckets: 1 + 2 (copies) + 0 fit.
        REQUIRE(a.retire_from(4));
        CHECK(a.retiring_from() == 4);
        CHECK(a.free_count() == 0);
        CHECK(a.room(other) == 0);     // its bucket was closed under it
        CHECK(a.retiring_busy() == 4); // 4 full, 5 dirty, 6 pinned, 7 closed
        // 6 was closed under its write point: the next alloc takes no
        // retiring bucket (none below 4 is free: none at all).
        CHECK_FALSE(a.alloc(fg, 4096));

        auto held = a.retiring_held(8);
        REQUIRE(held.size() == 1);
        CHECK(held[0].bucket == dirty);
        CHECK(held[0].dirty == kBucket);

        auto freed = a.reclaim_retiring();
        REQUIRE(freed);
        CHECK(*freed == 2);         // 4 and 7: 5 is dirty, 6 pinned
        CHECK(a.free_count() == 0); // retired: not listed
        CHECK(a.retiring_busy() == 2);
        auto busy = a.drop_retired(superblock_batch(*ix.ms, "4"));
        REQUIRE_FALSE(busy);
        CHECK(busy.error().sys_errno == EBUSY);
        CHECK(ix.has_record(clean)); // nothing written

        // The mover took the dirty bytes away; the write ends.
        IndexTxn t(ix.ms->batch());
        t.account(dirty, dirty_gen, -static_cast<std::int64_t>(kBucket),
                  -static_cast<std::int64_t>(kBucket));
        REQUIRE(a.commit(t));
        freed = a.reclaim_retiring();
        REQUIRE(freed);
        CHECK(*freed == 1);
        CHECK(a.retiring_busy() == 1);
        pinned->pin.reset();
        freed = a.reclaim_retiring();
        REQUIRE(freed);
        CHECK(*freed == 1);
        CHECK(a.retiring_busy() == 0);
        CHECK(a.gen(dirty) == dirty_gen + 1);

        REQUIRE(a.drop_retired(superblock_batch(*ix.ms, "4")));
        CHECK(ix.ms->get(meta::Cf::meta, "test-superblock").value() == "4");
        for (std::uint32_t b = 4; b < 8; ++b)
            CHECK_FALSE(ix.has_record(b));
        CHECK(ix.has_record(0));
        CHECK(a.current(dirty, dirty_gen + 1)); // until published
        a.publish_shrink();
        CHECK(a.bucket_count() == 4);
        CHECK_FALSE(a.current(dirty, dirty_gen + 1));
        CHECK(a.stats().backed_buckets == 4);
        // A write point that held a bucket past the new end takes one below.
        CHECK(a.room(other) == 0);
        REQUIRE(a.reclaim(1));
        auto below = a.alloc(other, 4096);
        REQUIRE(below);
        CHECK(below->bucket < 4);
    }

    TEST_CASE("Allocator: a shrink whose dirty data cannot fit is refused with nothing changed; "
              "a cancelled one gives its buckets back") {
        Ix ix;
        Allocator a(*ix.ms, 8, kBucket, 1, 4096);
        a.finish_load();
        WritePoint fg("fg", false);
        for (int i = 0; i < 3; ++i)
            fill(a, *ix.ms, fg, true); // 0..2 dirty
        const std::size_t free_before = a.free_count();

        auto r = a.retire_from(4); // 3 held + reserve 1 > 4 - 0? 3 + 0 + 1 = 4 fits
        REQUIRE(r);
        a.cancel_retire();
        CHECK(a.retiring_from() == 8);
        CHECK(a.free_count() == free_before);

        fill(a, *ix.ms, fg, true); // 3 dirty
        fill(a, *ix.ms, fg, true); // 4 dirty: past the cut, must move
        const std::size_t free_now = a.free_count();
        auto refused = a.retire_from(4);
        REQUIRE_FALSE(refused);
        CHECK(refused.error().code == Errc::CacheFull);
        CAPTURE(refused.error().message);
        CHECK(refused.error().message.find("of dirty data") != std::string::npos);
        CHECK(refused.error().message.find("nothing was changed") != std::string::npos);
        CHECK(a.retiring_from() == 8);
        CHECK(a.free_count() == free_now);
        CHECK(fill(a, *ix.ms, fg) >= 5); // still handed out
    }

    TEST_CASE("Allocator: an alloc racing the retirement never gets a retiring bucket once it "
              "is done" *
              doctest::timeout(20)) {
        Ix ix;
        Allocator a(*ix.ms, 64, kBucket, 0, 4096);
        a.finish_load();
        WritePoint fg("fg", false), other("other", false);

        // Buckets 0..2 freed again: they wait at the back of the free list.
        for (int i = 0; i < 4; ++i)
            fill(a, *ix.ms, fg);
        REQUIRE(a.reclaim(3));
        // At the seam: a write point opens a bucket past the cut after the
        // decision, before the buckets leave use. It is closed under it.
        std::optional<Allocation> raced;
        a.before_retire = [&] {
            for (int i = 0; i < 30; ++i) // buckets 4..33: past the cut
                raced = a.alloc(other, kBucket);
        };
        REQUIRE(a.retire_from(32));
        REQUIRE(raced);
        CHECK(raced->bucket == 33);
        auto next = a.alloc(other, 4096);
        REQUIRE(next);
        CHECK(next->bucket < 32);
        raced.reset();
        next.reset();
        a.cancel_retire();
        a.before_retire = nullptr;

        // Allocations on another thread all along: none that starts after
        // retire_from() returned lands past the cut.
        std::atomic<bool> retired{false};
        std::atomic<int> late_past{0}, late{0};
        std::thread t([&] {
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (late.load() <= 200 && std::chrono::steady_clock::now() < until) {
                const bool after = retired.load();
                auto x = a.alloc(fg, 4096);
                if (x) {
                    if (after) {
                        ++late;
                        if (x->bucket >= 16)
                            ++late_past;
                    }
                    IndexTxn tx(ix.ms->batch());
                    tx.account(x->bucket, x->gen, 4096);
                    (void)a.commit(tx);
                    x->pin.reset();
                }
                // Freed buckets come back below the cut only.
                (void)a.reclaim(4);
            }
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        REQUIRE(a.retire_from(16));
        retired.store(true);
        // Lock-free readers meanwhile: gens and ticks.
        for (int i = 0; i < 200; ++i) {
            const std::uint32_t n = a.bucket_count();
            for (std::uint32_t b = 0; b < n; b += 7) {
                (void)a.current(b, a.gen(b));
                a.touch(b);
            }
        }
        t.join();
        CHECK(late.load() > 200);
        CHECK(late_past.load() == 0);
    }

    TEST_CASE("Allocator: lock-free readers across a live grow" * doctest::timeout(20)) {
        Ix ix;
        Allocator a(*ix.ms, 4, kBucket, 0, 4096);
        a.finish_load();
        std::atomic<bool> stop{false};
        std::thread reader([&] {
            while (!stop.load()) {
                const std::uint32_t n = a.bucket_count();
                for (std::uint32_t b = 0; b < n; ++b) {
                    (void)a.current(b, a.gen(b));
                    a.touch(b);
                }
            }
        });
        for (std::uint32_t n = 8; n <= 4096; n *= 2) {
            const std::uint32_t old = a.bucket_count();
            REQUIRE(a.add_buckets(n, std::vector<std::uint32_t>(n - old, 3),
                                  superblock_batch(*ix.ms, std::to_string(n))));
            a.publish_grow(n);
        }
        stop.store(true);
        reader.join();
        CHECK(a.bucket_count() == 4096);
        CHECK(a.gen(4095) == 3);
        CHECK(a.free_count() == 4096);
    }
}

TEST_SUITE("store") {
    TEST_CASE("Allocator: a live shrink names its clean buckets most recently used first, and "
              "spares the ones it still means to move") {
        Ix ix;
        Allocator a(*ix.ms, 8, kBucket, 0, 4096);
        a.finish_load();
        WritePoint fg("fg", false);
        for (int i = 0; i < 7; ++i) // 0-6 clean, full; 7 stays free
            REQUIRE(fill(a, *ix.ms, fg) == static_cast<std::uint32_t>(i));
        // The tick moves with allocations: 5 is touched before 3, then the
        // last fill (6) is the newest of all but 3 touched after it.
        a.touch(5);
        WritePoint other("other", false);
        REQUIRE(a.alloc(other, 4096)->bucket == 7); // nothing committed: never a candidate
        a.touch(3);

        REQUIRE(a.retire_from(3)); // 3-7 retire
        auto clean = a.retiring_clean(8);
        REQUIRE(clean.size() == 4); // 3, 4, 5, 6: 7 (closed under its write point) holds nothing
        CHECK(clean[0].bucket == 3);
        CHECK(clean[0].live == kBucket);
        CHECK(clean[3].bucket == 4); // never touched since its fill: the oldest
        CHECK(a.retiring_clean(1).size() == 1);
        CHECK(a.retiring_clean(1)[0].bucket == 3);
        CHECK(a.retiring_clean(0).empty());

        // 3 and 6 spared: the other clean ones are freed, these stay held.
        auto freed = a.reclaim_retiring({3, 6});
        REQUIRE(freed);
        CHECK(*freed == 3); // 4, 5 and the empty 7
        clean = a.retiring_clean(8);
        REQUIRE(clean.size() == 2);
        CHECK(((clean[0].bucket == 3 && clean[1].bucket == 6) ||
               (clean[0].bucket == 6 && clean[1].bucket == 3)));
        CHECK(a.retiring_busy() == 2);
        freed = a.reclaim_retiring();
        REQUIRE(freed);
        CHECK(*freed == 2);
        CHECK(a.retiring_clean(8).empty());
        a.cancel_retire();
    }
}
