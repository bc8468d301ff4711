// DeferredWrites (src/cache/deferred_writes.hpp) over a real cache device
// and RocksDB index, without the caching path: records staged with their
// extents, replay after a power cut that lost the device writes, retire,
// and records leaving with their bucket. The whole path (fsync without a
// device sync, a crash image) is in writeback_test.cpp ("writeback 23").
#include "cache/deferred_writes.hpp"
#include "cache_fixture.hpp"
#include "overcache/meta/key_codec.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

using namespace overcache;
using namespace overcache::cache;

namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t kBucket = 256 * KiB;

std::string bytes_of(char c, std::size_t n) { return std::string(n, c); }

std::vector<meta::DeferredKey> records(store::CacheDevice& dev) {
    std::vector<meta::DeferredKey> out;
    auto cur = dev.meta().cursor(meta::Cf::meta, meta::deferred_prefix_end());
    for (cur.seek(meta::kDeferredPrefix); cur.valid(); cur.next()) {
        meta::DeferredKey k;
        REQUIRE(meta::decode_deferred_key(cur.key(), k));
        out.push_back(k);
    }
    return out;
}

// Writes `data` at `start` of file 1 as the write path does for a deferred
// write: placed on the device, then its record and its extent in one batch.
// Returns where its (single) piece went.
meta::DeferredKey put(test::IndexFixture& fx, DeferredWrites& dw, std::uint64_t start,
                      const std::string& data) {
    ExtentIndex::Placement pl;
    auto placed = fx.ix().place(fx.wp, start, data.data(), data.size(), kBucket, pl);
    REQUIRE(placed);
    REQUIRE(*placed);
    REQUIRE(pl.pieces.size() == 1);
    const meta::DeferredKey k{pl.pieces[0].a.bucket, pl.pieces[0].a.gen, pl.pieces[0].a.offset};
    auto t = fx.ix().txn();
    dw.stage(t.batch, pl, data.data());
    REQUIRE(fx.ix().stage_placement(t, pl, 1, data.data(), 0));
    REQUIRE(fx.ix().commit(t));
    return k;
}

// The device's bytes at `off` inside `bucket`, read past the cache (as a
// power cut would leave them, once written with pwrite below).
std::string device_bytes(store::CacheDevice& dev, std::uint32_t bucket, std::uint32_t off,
                         std::size_t len) {
    const int fd = ::open(dev.data_path().c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    std::string s(len, '\0');
    REQUIRE(::pread(fd, s.data(), len, static_cast<off_t>(dev.device_offset(bucket, off))) ==
            static_cast<ssize_t>(len));
    ::close(fd);
    return s;
}

void spoil_device(store::CacheDevice& dev, std::uint32_t bucket, std::uint32_t off,
                  std::size_t len) {
    const int fd = ::open(dev.data_path().c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const std::string junk(len, '\xee');
    REQUIRE(::pwrite(fd, junk.data(), len, static_cast<off_t>(dev.device_offset(bucket, off))) ==
            static_cast<ssize_t>(len));
    REQUIRE(::fsync(fd) == 0);
    ::close(fd);
}

} // namespace

TEST_SUITE("deferred_writes") {

    TEST_CASE("replay puts back the device bytes a power cut lost; a freed bucket's record is "
              "dropped, not written") {
        test::IndexFixture fx(4 << 20, kBucket);
        DeferredWrites dw(*fx.dev, *fx.alloc, 64 * KiB);
        const std::string a = bytes_of('a', 4096), b = bytes_of('b', 100);
        const auto ka = put(fx, dw, 0, a);
        const auto kb = put(fx, dw, 5000, b); // 904 bytes into its block
        CHECK(dw.stats().records == 2);
        CHECK(records(*fx.dev).size() == 2);
        CHECK(device_bytes(*fx.dev, kb.bucket, kb.offset, 4096).substr(904, 100) == b);

        // A record of a bucket's earlier life (its gen has moved on): its
        // space may hold newer bytes.
        const meta::DeferredKey stale{ka.bucket, ka.gen + 1, 64 * 1024};
        {
            auto batch = fx.dev->meta().batch();
            const std::string junk = bytes_of('s', 4096);
            batch.put(meta::Cf::meta, meta::deferred_key(stale),
                      meta::encode_deferred(0, junk.data(), junk.size()));
            REQUIRE(fx.dev->meta().write(batch, true));
        }
        // The power cut: the device writes never reached the medium.
        spoil_device(*fx.dev, ka.bucket, ka.offset, 4096);
        spoil_device(*fx.dev, kb.bucket, kb.offset, 4096);
        const std::string before_stale = device_bytes(*fx.dev, stale.bucket, stale.offset, 4096);

        // Start-up: a new DeferredWrites over the same index.
        DeferredWrites again(*fx.dev, *fx.alloc, 64 * KiB);
        REQUIRE(again.replay());
        CHECK(again.stats().replayed == 2);
        CHECK(device_bytes(*fx.dev, ka.bucket, ka.offset, 4096) == a);
        const std::string blk = device_bytes(*fx.dev, kb.bucket, kb.offset, 4096);
        CHECK(blk.substr(904, 100) == b);
        CHECK(blk.substr(0, 904) == std::string(904, '\0'));
        CHECK(device_bytes(*fx.dev, stale.bucket, stale.offset, 4096) == before_stale);
        CHECK(records(*fx.dev).empty());
        // And the index reads them back, checksums verified.
        auto pieces = fx.ix().lookup(1, 0, 8192);
        REQUIRE(pieces);
        REQUIRE(pieces->size() == 2);
        std::string got(a.size(), '\0');
        CHECK(fx.ix().read_piece((*pieces)[0], got.data()) == PieceRead::ok);
        CHECK(got == a);
        got.assign(b.size(), '\0');
        CHECK(fx.ix().read_piece((*pieces)[1], got.data()) == PieceRead::ok);
        CHECK(got == b);
    }

    TEST_CASE("retire drops what it synced; a reclaimed bucket's records leave with it; a retire "
              "in flight never deletes the record of the bucket's next use") {
        test::IndexFixture fx(4 << 20, kBucket);
        DeferredWrites dw(*fx.dev, *fx.alloc, 64 * KiB);
        fx.alloc->on_free = [&](meta::Batch& b, std::uint32_t bucket) {
            dw.forget_bucket(b, bucket);
        };
        put(fx, dw, 0, bytes_of('a', 4096));
        REQUIRE(dw.retire());
        CHECK(records(*fx.dev).empty());
        CHECK(dw.stats().records == 0);
        CHECK(dw.stats().retired == 1);

        const auto kc = put(fx, dw, 4096, bytes_of('c', 4096));
        REQUIRE(records(*fx.dev).size() == 1);
        const meta::DeferredKey next{kc.bucket, kc.gen + 1, kc.offset};
        bool ran = false;
        dw.before_retire_sync = [&] {
            ran = true;
            // The bucket fills up, is reclaimed (its record goes in the
            // batch that frees it) ...
            auto rest = fx.alloc->alloc(fx.wp, static_cast<std::uint32_t>(kBucket));
            REQUIRE(rest);
            REQUIRE(rest->bucket != kc.bucket);
            auto freed = fx.alloc->reclaim(fx.alloc->bucket_count());
            REQUIRE(freed);
            REQUIRE(*freed >= 1);
            REQUIRE(fx.alloc->gen(kc.bucket) == kc.gen + 1);
            CHECK(records(*fx.dev).empty());
            // ... and its next use writes a deferred write at the same offset.
            ExtentIndex::Placement pl;
            pl.start = 4096;
            store::Allocation at;
            at.bucket = next.bucket;
            at.gen = next.gen;
            at.offset = next.offset;
            pl.pieces.push_back({4096, 4096, 4096, std::move(at)});
            const std::string d = bytes_of('d', 4096);
            auto batch = fx.dev->meta().batch();
            dw.stage(batch, pl, d.data());
            REQUIRE(fx.dev->meta().write(batch));
        };
        REQUIRE(dw.retire());
        CHECK(ran);
        const auto left = records(*fx.dev);
        REQUIRE(left.size() == 1);
        CHECK(left[0] == next);
        CHECK(dw.stats().records == 1);
        dw.before_retire_sync = {};
        REQUIRE(dw.retire());
        CHECK(records(*fx.dev).empty());
    }

    TEST_CASE("only writes up to the size are deferred; 0 defers none") {
        test::IndexFixture fx(4 << 20, kBucket);
        DeferredWrites dw(*fx.dev, *fx.alloc, 64 * KiB);
        CHECK(dw.wants(1));
        CHECK(dw.wants(64 * KiB));
        CHECK_FALSE(dw.wants(64 * KiB + 1));
        CHECK_FALSE(dw.wants(0));
        DeferredWrites none(*fx.dev, *fx.alloc, 0);
        CHECK_FALSE(none.wants(1));
    }
}
