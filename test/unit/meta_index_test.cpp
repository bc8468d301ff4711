// The index: key order, value layouts, batches, cursors, persistence, and
// what opening a large index reads (counted, not timed).
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <random>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>

using namespace overcache;
using namespace overcache::meta;

TEST_SUITE("meta") {
    TEST_CASE("keys sort in numeric order") {
        std::mt19937_64 rng(1);
        std::vector<std::pair<std::uint64_t, std::uint64_t>> v;
        for (int i = 0; i < 2000; ++i)
            v.emplace_back(rng() % 5, (i % 3 == 0) ? rng() : rng() % 1000);
        v.emplace_back(0, 0);
        v.emplace_back(UINT64_MAX - 1, UINT64_MAX);
        auto by_key = v;
        std::sort(v.begin(), v.end());
        std::sort(by_key.begin(), by_key.end(), [](auto& a, auto& b) {
            return extent_key(a.first, a.second) < extent_key(b.first, b.second);
        });
        CHECK(v == by_key);
        CHECK(file_key({1, 255}) < file_key({1, 256}));
        CHECK(file_key({1, UINT64_MAX}) < file_key({2, 0}));
        CHECK(bucket_key(255) < bucket_key(256));
        CHECK(extent_key(7, UINT64_MAX) < extent_prefix_end(7));
        CHECK(extent_key(7, 0) >= extent_key(6, UINT64_MAX));
        ExtentKey k;
        REQUIRE(decode_extent_key(extent_key(0x0102030405060708ull, 42), k));
        CHECK(k.file == 0x0102030405060708ull);
        CHECK(k.end == 42);
        CHECK(extent_key(1, 2) == std::string("\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\2", 16));
    }

    TEST_CASE("values round-trip and short values are refused") {
        ExtentValue e{3, 9, 4096, 65536, 0, {}};
        for (std::uint32_t i = 0; i < csum_block_count(0, 65536); ++i)
            e.csums.push_back(0xdeadbeefu + i);
        auto d = decode_extent(encode(e));
        REQUIRE(d);
        CHECK(d->bucket == 3);
        CHECK(d->gen == 9);
        CHECK(d->bucket_off == 4096);
        CHECK(d->len == 65536);
        CHECK(d->csums == e.csums);
        CHECK(encode(e).size() == 1 + 6 * 4 + 16 * 8); // 4 bytes a 4 KiB block
        CHECK_FALSE(decode_extent(encode(e).substr(0, 10)));
        CHECK_FALSE(decode_extent(encode(e).substr(0, encode(e).size() - 2)));
        CHECK_FALSE(decode_extent(encode(e) + "x"));
        auto v1 = encode(e);
        v1[0] = 1; // the version-1 layout (one XXH3-64 an extent) is not read
        CHECK_FALSE(decode_extent(v1));
        // Decoding into a value reuses it and replaces all of it.
        ExtentValue into{1, 2, 3, 4, 5, {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}};
        REQUIRE(decode_extent(encode(e), into));
        CHECK(into.csums == e.csums);
        CHECK(into.bucket == 3);

        // The 4 KiB grid of the file, not of the extent.
        CHECK(csum_block_count(0, 1) == 1);
        CHECK(csum_block_count(0, 4096) == 1);
        CHECK(csum_block_count(0, 4097) == 2);
        CHECK(csum_block_count(4095, 2) == 2);
        CHECK(csum_block_count(100, 256 * 1024) == 65);
        CHECK(csum_block_count(8192, 256 * 1024) == 64);

        FileRecord f;
        f.file_id = 5;
        f.size = 100;
        f.mtime_ns = -3;
        f.ctime_ns = 123456789;
        f.ino = 77;
        auto fd = decode_file_record(encode(f));
        REQUIRE(fd);
        CHECK(fd->file_id == 5);
        CHECK(fd->mtime_ns == -3);
        CHECK(fd->ino == 77);

        BucketRecord b{7, BucketState::full, 1000, 99};
        auto bd = decode_bucket(encode(b));
        REQUIRE(bd);
        CHECK(bd->state == BucketState::full);
        CHECK(bd->fill_bytes == 1000);

        Superblock sb;
        sb.bucket_size = 1 << 20;
        sb.bucket_count = 10;
        sb.backing_path = "/srv/x";
        sb.uuid[0] = 42;
        Superblock out;
        REQUIRE(decode_superblock(encode(sb), out) == SbDecode::ok);
        CHECK(out.backing_path == "/srv/x");
        CHECK(out.uuid[0] == 42);
        auto bad = encode(sb);
        bad[9] = 7; // version field
        CHECK(decode_superblock(bad, out) == SbDecode::bad_version);
        CHECK(decode_superblock("garbage!!!!!!", out) == SbDecode::bad_magic);
        CHECK(decode_superblock(encode(sb).substr(0, 30), out) == SbDecode::truncated);
    }

    TEST_CASE("MetaStore: batches, bounded cursors, persistence") {
        test::TmpDir tmp;
        const std::string dir = tmp / "index";
        CHECK_FALSE(MetaStore::exists(dir));
        StoreOptions o;
        CHECK_FALSE(MetaStore::open(dir, o).has_value()); // no create without asking
        o.create_if_missing = true;
        {
            auto ms = MetaStore::open(dir, o);
            REQUIRE(ms);
            auto b = (*ms)->batch();
            for (std::uint64_t f = 1; f <= 3; ++f)
                for (std::uint64_t e = 1; e <= 5; ++e)
                    b.put(Cf::extents, extent_key(f, e * 100), "v");
            b.put(Cf::files, file_key({1, 2}), "rec");
            REQUIRE((*ms)->write(b));
            auto c = (*ms)->cursor(Cf::extents, extent_prefix_end(2));
            int n = 0;
            for (c.seek(extent_key(2, 201)); c.valid(); c.next())
                ++n;
            CHECK(n == 3); // 300, 400, 500 of file 2; file 3 is past the bound
            auto d = (*ms)->batch();
            d.del_range(Cf::extents, extent_key(1, 0), extent_prefix_end(1));
            REQUIRE((*ms)->write(d));
            // Column families are separate key spaces.
            CHECK_FALSE((*ms)->get(Cf::extents, file_key({1, 2}))->has_value());
        }
        CHECK(MetaStore::exists(dir));
        o.create_if_missing = false;
        auto ms = MetaStore::open(dir, o);
        REQUIRE(ms);
        CHECK((*ms)->get(Cf::files, file_key({1, 2}))->value() == "rec");
        CHECK_FALSE((*ms)->get(Cf::extents, extent_key(1, 100))->has_value());
        CHECK((*ms)->get(Cf::extents, extent_key(3, 500))->has_value());
    }

    TEST_CASE("opening an index of 1,000,000 extents reads almost none of them" *
              doctest::timeout(120)) {
        // Start-up must not read the extents (issue #3: a large cache mounts
        // in well under 2 s). Time depends on the machine, so the test counts
        // instead: RocksDB's per-thread perf context counts the blocks read
        // from disk. Opening and one lookup read a handful of index, filter
        // and data blocks; a scan of the extents reads thousands, which shows
        // the counter works here.
        test::TmpDir tmp;
        const std::string dir = tmp / "index";
        StoreOptions o;
        o.create_if_missing = true;
        {
            auto ms = MetaStore::open(dir, o);
            REQUIRE(ms);
            ExtentValue v{1, 0, 0, 65536, 0, std::vector<std::uint64_t>(16, 1)};
            const auto val = encode(v);
            for (std::uint64_t f = 0; f < 1000; ++f) {
                auto b = (*ms)->batch();
                for (std::uint64_t e = 1; e <= 1000; ++e)
                    b.put(Cf::extents, extent_key(f + 1, e * 65536), val);
                REQUIRE((*ms)->write(b));
            }
            REQUIRE((*ms)->flush());
        }
        o.create_if_missing = false;
        rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
        rocksdb::PerfContext& perf = *rocksdb::get_perf_context();
        perf.Reset();
        auto ms = MetaStore::open(dir, o);
        REQUIRE(ms);
        CHECK((*ms)->get(Cf::extents, extent_key(500, 500 * 65536))->has_value());
        const std::uint64_t open_blocks = perf.block_read_count;

        perf.Reset();
        auto c = (*ms)->cursor(Cf::extents);
        std::uint64_t n = 0;
        for (c.seek_to_first(); c.valid(); c.next())
            ++n;
        REQUIRE(c.status());
        const std::uint64_t scan_blocks = perf.block_read_count;
        rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);

        MESSAGE("blocks read: open + one lookup " << open_blocks << ", a scan of the extents "
                                                  << scan_blocks);
        CHECK(n == 1000000);
        CHECK(scan_blocks >= 1000);
        CHECK(open_blocks * 100 < scan_blocks);
    }
}
