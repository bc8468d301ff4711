// Pinning (user.overcache.pin) below the file layer: the records that carry
// it (policy layout 2, bucket pinned_bytes) decode old records as before,
// and the Allocator keeps every bucket holding pinned bytes from reclaim,
// with the accounting exact across commits, moves and a restart.
#include "cache/path_policy.hpp"
#include "overcache/cache/path_settings.hpp"
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/store/allocator.hpp"
#include "tmp_dir.hpp"

#include <doctest/doctest.h>
#include <string>

using namespace overcache;
using namespace overcache::store;

namespace {

struct Ix {
    test::TmpDir tmp;
    std::unique_ptr<meta::MetaStore> ms;
    Ix() { open(); }
    void open() {
        ms.reset();
        meta::StoreOptions o;
        o.create_if_missing = true;
        auto r = meta::MetaStore::open(tmp / "index", o);
        REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
        ms = std::move(*r);
    }
};

// Commits an extent of `len` bytes with `flags` coming (sign +1) or going.
void extent(Allocator& a, meta::MetaStore& ms, std::uint32_t bucket, std::uint32_t gen,
            std::int64_t len, std::uint32_t flags) {
    IndexTxn t(ms.batch());
    t.account_extent(bucket, gen, len, flags);
    REQUIRE(a.commit(t));
}

} // namespace

TEST_SUITE("pin") {
    TEST_CASE("meta::PolicyRecord: pin is layout 2; records without it stay layout 1") {
        meta::PolicyRecord r;
        r.promote_after_hits = 2;
        CHECK(meta::encode(r).size() == 15);
        CHECK(meta::encode(r)[0] == 1); // an older build still reads it
        r.pin = true;
        const std::string two = meta::encode(r);
        REQUIRE(two.size() == 16);
        CHECK(two[0] == 2);
        CHECK(two[2] == (2 | 4)); // promote and pin present
        CHECK(two[15] == 1);
        auto back = meta::decode_policy(two);
        REQUIRE(back);
        CHECK(*back == r);
        r.pin = false; // an explicit unpin is kept as such, not as "unset"
        back = meta::decode_policy(meta::encode(r));
        REQUIRE(back);
        REQUIRE(back->pin);
        CHECK(*back->pin == false);

        SUBCASE("damage is refused") {
            std::string bad = two;
            bad[15] = 2; // pin is 0 or 1
            CHECK(!meta::decode_policy(bad));
            bad = two;
            bad[2] = 2; // layout 2 without its pin bit
            CHECK(!meta::decode_policy(bad));
            CHECK(!meta::decode_policy(two.substr(0, 15)));
            bad = meta::encode(meta::PolicyRecord{});
            bad[2] = 4; // the pin bit in a layout 1 record
            CHECK(!meta::decode_policy(bad));
        }
        SUBCASE("through PathSettings, and inheritance: the nearest pin wins") {
            cache::PathSettings s;
            s.pin = true;
            CHECK(!s.empty());
            auto d = cache::from_record(cache::to_record(s));
            REQUIRE(d);
            CHECK(*d == s);
            cache::PathSettings dir, file;
            dir.pin = true;
            CHECK(cache::resolve(std::vector{file, dir}).pin == true);
            file.pin = false;
            CHECK(cache::resolve(std::vector{file, dir}).pin == false);
            CHECK(!cache::resolve(std::vector<cache::PathSettings>{}).pin);
        }
    }

    TEST_CASE("meta::BucketRecord: pinned_bytes is written only when not zero") {
        meta::BucketRecord r{7, meta::BucketState::full, 8192, 8192, 0, 42, 0};
        const std::string old = meta::encode(r);
        CHECK(old.size() == 1 + 4 + 1 + 3 * 4 + 8); // as format 3 always wrote it
        auto d = meta::decode_bucket(old);
        REQUIRE(d);
        CHECK(d->pinned_bytes == 0);
        r.pinned_bytes = 4096;
        const std::string with = meta::encode(r);
        CHECK(with.size() == old.size() + 4);
        d = meta::decode_bucket(with);
        REQUIRE(d);
        CHECK(d->pinned_bytes == 4096);
        CHECK(d->live_bytes == 8192);
        CHECK(!meta::decode_bucket(with + "x"));
        CHECK(!meta::decode_bucket(old + std::string(4, '\0'))); // a zero is never written
    }

    TEST_CASE("meta::ExtentValue: the pinned flag round-trips; unknown flags do not") {
        meta::ExtentValue v;
        v.len = 4096;
        v.flags = meta::kExtentPinned | meta::kExtentDirty;
        v.csums = {1};
        auto d = meta::decode_extent(meta::encode(v));
        REQUIRE(d);
        CHECK(d->flags == v.flags);
        v.flags = 1u << 7;
        CHECK(!meta::decode_extent(meta::encode(v)));
    }

    TEST_CASE("Allocator: a bucket with pinned bytes is never reclaimed, under any policy") {
        for (auto p :
             {ReplacementPolicy::lru, ReplacementPolicy::fifo, ReplacementPolicy::random}) {
            CAPTURE(static_cast<int>(p));
            Ix ix;
            Allocator a(*ix.ms, 8, 8192, 0, 4096);
            a.finish_load();
            a.set_replacement(p);
            WritePoint fg("fg", false);
            auto x = a.alloc(fg, 8192); // clean
            auto y = a.alloc(fg, 8192); // half pinned
            auto o = a.alloc(fg, 4096); // open
            REQUIRE((x && y && o));
            extent(a, *ix.ms, x->bucket, x->gen, 8192, 0);
            extent(a, *ix.ms, y->bucket, y->gen, 4096, meta::kExtentPinned);
            extent(a, *ix.ms, y->bucket, y->gen, 4096, 0);
            x->pin.reset();
            y->pin.reset();
            CHECK(a.pinned_bytes() == 4096);
            CHECK(a.stats().pinned_bytes == 4096);
            CHECK(a.stats().reclaimable == 1);
            const auto gy = a.gen(y->bucket);
            auto r = a.reclaim(8);
            REQUIRE(r);
            CHECK(*r == 1);
            CHECK(a.gen(x->bucket) == x->gen + 1);
            CHECK(a.gen(y->bucket) == gy);
            // Unpinned (its extent flag cleared): now it may go.
            IndexTxn t(ix.ms->batch());
            t.account_extent(y->bucket, y->gen, -4096, meta::kExtentPinned);
            t.account_extent(y->bucket, y->gen, 4096, 0);
            REQUIRE(a.commit(t));
            CHECK(a.pinned_bytes() == 0);
            CHECK(a.record(y->bucket).live_bytes == 8192);
            r = a.reclaim(8);
            REQUIRE(r);
            CHECK(*r == 1);
            CHECK(a.gen(y->bucket) == gy + 1);
        }
    }

    TEST_CASE("Allocator: pinned bytes move with a moved extent and come back after a restart") {
        Ix ix;
        std::uint32_t from = 0, to = 0, gfrom = 0;
        {
            Allocator a(*ix.ms, 8, 8192, 1, 4096);
            REQUIRE(a.load_all());
            WritePoint fg("fg", false);
            WritePoint gc("gc", true);
            auto x = a.alloc(fg, 8192);
            auto closer = a.alloc(fg, 4096);
            REQUIRE((x && closer));
            extent(a, *ix.ms, x->bucket, x->gen, 4096, meta::kExtentPinned);
            x->pin.reset();
            // Moving GC: the same extent, flag and all, into GC's bucket.
            auto y = a.alloc(gc, 4096);
            REQUIRE(y);
            IndexTxn t(ix.ms->batch());
            t.account_extent(x->bucket, x->gen, -4096, meta::kExtentPinned);
            t.account_extent(y->bucket, y->gen, 4096, meta::kExtentPinned);
            REQUIRE(a.commit(t));
            from = x->bucket;
            gfrom = x->gen;
            to = y->bucket;
            CHECK(a.record(from).pinned_bytes == 0);
            CHECK(a.record(to).pinned_bytes == 4096);
            CHECK(a.pinned_bytes() == 4096);
            // The cap: half of the buckets GC may free (8 less a reserve of 1).
            CHECK(a.pinned_cap() == 7 * 8192 / 2);
        }
        ix.open();
        Allocator b(*ix.ms, 8, 8192, 1, 4096);
        REQUIRE(b.load_all());
        CHECK(b.pinned_bytes() == 4096);
        CHECK(b.record(to).pinned_bytes == 4096);
        const auto gt = b.gen(to);
        auto r = b.reclaim(8);
        REQUIRE(r);
        // The emptied one (the one left open had no record: it is free);
        // never the one holding the pinned extent.
        CHECK(*r == 1);
        CHECK(b.gen(from) == gfrom + 1);
        CHECK(b.gen(to) == gt);
    }
}
