// The index: key order, value layouts (format 3), batches, cursors,
// persistence, the stale-extent compaction filter, private files, and the
// start-up cost of a large index.
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <dirent.h>
#include <doctest/doctest.h>
#include <map>
#include <random>
#include <rocksdb/db.h>
#include <set>
#include <sys/stat.h>
#include <thread>

using namespace overcache;
using namespace overcache::meta;

namespace {

// Every proper prefix of an encoded value, and the value with a byte more,
// must be refused.
template <typename Decode> void check_strict(const std::string& enc, Decode decode) {
    for (std::size_t n = 0; n < enc.size(); ++n) {
        CAPTURE(n);
        CHECK_FALSE(decode(std::string_view(enc).substr(0, n)));
    }
    CHECK_FALSE(decode(enc + '\0'));
    CHECK_FALSE(decode(enc + "x"));
}

std::set<std::string> dir_names(const std::string& dir) {
    std::set<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    REQUIRE(d != nullptr);
    while (const dirent* e = ::readdir(d))
        if (std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..")
            out.insert(e->d_name);
    ::closedir(d);
    return out;
}

mode_t mode_of(const std::string& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

// Sets the umask for a scope (tests are single-threaded at that point).
struct UmaskGuard {
    explicit UmaskGuard(mode_t m) : old(::umask(m)) {}
    ~UmaskGuard() { ::umask(old); }
    UmaskGuard(const UmaskGuard&) = delete;
    UmaskGuard& operator=(const UmaskGuard&) = delete;
    mode_t old;
};

ExtentValue extent(std::uint32_t bucket, std::uint32_t gen, std::uint32_t flags = 0) {
    return ExtentValue{bucket, gen, 0, 4096, flags, {0x0123456789abcdefull}};
}

} // namespace

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

    TEST_CASE("format-3 families: names, file_ids and dirty keys") {
        // The names are on disk.
        CHECK(std::string(cf_name(Cf::meta)) == "meta");
        CHECK(std::string(cf_name(Cf::files)) == "files");
        CHECK(std::string(cf_name(Cf::extents)) == "extents");
        CHECK(std::string(cf_name(Cf::buckets)) == "buckets");
        CHECK(std::string(cf_name(Cf::file_ids)) == "file_ids");
        CHECK(std::string(cf_name(Cf::dirty)) == "dirty");
        std::set<std::string> names;
        for (Cf cf : kAllCfs)
            names.insert(cf_name(cf));
        CHECK(names.size() == kAllCfs.size());

        CHECK(file_id_key(0x0102030405060708ull) == "\x01\x02\x03\x04\x05\x06\x07\x08");
        CHECK(file_id_key(255) < file_id_key(256));
        CHECK(file_id_key(UINT64_MAX - 1) < file_id_key(UINT64_MAX));
        FileId id = 0;
        REQUIRE(decode_file_id_key(file_id_key(0xfedcba9876543210ull), id));
        CHECK(id == 0xfedcba9876543210ull);
        CHECK_FALSE(decode_file_id_key("1234567", id));
        CHECK_FALSE(decode_file_id_key("123456789", id));

        // dirty: file first, then offset: writeback walks one file at a time.
        std::mt19937_64 rng(2);
        std::vector<std::pair<std::uint64_t, std::uint64_t>> v;
        for (int i = 0; i < 2000; ++i)
            v.emplace_back(rng() % 7, (i % 2 == 0) ? rng() : rng() % 100000);
        v.emplace_back(0, 0);
        v.emplace_back(UINT64_MAX - 1, UINT64_MAX);
        auto by_key = v;
        std::sort(v.begin(), v.end());
        std::sort(by_key.begin(), by_key.end(), [](auto& a, auto& b) {
            return dirty_key(a.first, a.second) < dirty_key(b.first, b.second);
        });
        CHECK(v == by_key);
        CHECK(dirty_key(3, UINT64_MAX) < dirty_prefix_end(3));
        CHECK(dirty_key(4, 0) == dirty_prefix_end(3));
        DirtyKey dk;
        REQUIRE(decode_dirty_key(dirty_key(9, 1ull << 40), dk));
        CHECK(dk == DirtyKey{9, 1ull << 40});
        CHECK_FALSE(decode_dirty_key(dirty_key(9, 1).substr(0, 15), dk));
        CHECK_FALSE(decode_dirty_key(dirty_key(9, 1) + "x", dk));

        CHECK(encode_dirty_len(5ull << 32).size() == 8);
        CHECK(decode_dirty_len(encode_dirty_len(5ull << 32)) == 5ull << 32);
        CHECK(decode_dirty_len(encode_dirty_len(1)) == 1u);
        CHECK_FALSE(decode_dirty_len(encode_dirty_len(0))); // an empty range is no range
        check_strict(encode_dirty_len(4096),
                     [](std::string_view x) { return decode_dirty_len(x); });

        // file_ids values are FileKeys.
        FileKey fk;
        REQUIRE(decode_file_key(file_key({7, 8}), fk));
        CHECK(fk == FileKey{7, 8});
    }

    TEST_CASE("values round-trip and short values are refused") {
        ExtentValue e{3, 9, 4096, 65536, kExtentDirty, {}};
        for (std::uint32_t i = 0; i < csum_block_count(0, 65536); ++i)
            e.csums.push_back(0xfeedface00000000ull + 0xdeadbeefu + i); // all 64 bits kept
        auto d = decode_extent(encode(e));
        REQUIRE(d);
        CHECK(d->bucket == 3);
        CHECK(d->gen == 9);
        CHECK(d->bucket_off == 4096);
        CHECK(d->len == 65536);
        CHECK(d->flags == kExtentDirty);
        CHECK(d->csums == e.csums);
        CHECK(encode(e).size() == 1 + 6 * 4 + 16 * 8); // 8 bytes a 4 KiB block
        check_strict(encode(e), [](std::string_view x) { return decode_extent(x); });
        for (char layout : {0, 1, 2, 4}) {
            auto old = encode(e);
            old[0] = layout; // 1: one XXH3-64 an extent; 2: 32-bit block checksums
            CHECK_FALSE(decode_extent(old));
        }
        {
            auto unknown_flag = e;
            unknown_flag.flags |= 1u << 7;
            CHECK_FALSE(decode_extent(encode(unknown_flag)));
            auto empty = e;
            empty.len = 0;
            empty.csums.clear();
            CHECK_FALSE(decode_extent(encode(empty)));
            // The count must fit the length: 16 or 17 blocks for 64 KiB.
            auto few = e;
            few.csums.pop_back();
            CHECK_FALSE(decode_extent(encode(few)));
            auto more = e;
            more.csums.push_back(1);
            CHECK(decode_extent(encode(more))); // an unaligned 64 KiB extent
            more.csums.push_back(1);
            CHECK_FALSE(decode_extent(encode(more)));
        }
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

        BucketRecord b{7, BucketState::full, 1000, 800, 300, 0x123456789ull};
        auto bd = decode_bucket(encode(b));
        REQUIRE(bd);
        CHECK(bd->gen == 7);
        CHECK(bd->state == BucketState::full);
        CHECK(bd->fill_bytes == 1000);
        CHECK(bd->live_bytes == 800);
        CHECK(bd->dirty_bytes == 300);
        CHECK(bd->last_use == 0x123456789ull);
        check_strict(encode(b), [](std::string_view x) { return decode_bucket(x); });
        auto bad_state = encode(b);
        bad_state[5] = 3;
        CHECK_FALSE(decode_bucket(bad_state));
        auto b_layout = encode(b);
        b_layout[0] = 1; // format 2's bucket record
        CHECK_FALSE(decode_bucket(b_layout));

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
        CHECK(out.version == ((7u << 16) | kFormatVersion));
        CHECK(decode_superblock("garbage!!!!!!", out) == SbDecode::bad_magic);
        CHECK(decode_superblock(encode(sb).substr(0, 30), out) == SbDecode::truncated);
        // Versions 1 and 2 are known, older, and decode in full.
        for (std::uint32_t v : {1u, 2u}) {
            auto old = sb;
            old.version = v;
            Superblock o2;
            CHECK(decode_superblock(encode(old), o2) == SbDecode::old_version);
            CHECK(o2.version == v);
            CHECK(o2.backing_path == "/srv/x");
            CHECK(o2.bucket_count == 10);
            CHECK(decode_superblock(encode(old).substr(0, 40), o2) == SbDecode::truncated);
        }
        for (std::uint32_t v : {0u, kFormatVersion + 1, 99u}) {
            auto unknown = sb;
            unknown.version = v;
            Superblock o3;
            CHECK(decode_superblock(encode(unknown), o3) == SbDecode::bad_version);
            CHECK(o3.version == v);
        }
    }

    TEST_CASE("FileRecord round-trips every field, strings with any bytes") {
        FileRecord f;
        f.file_id = 0x8000000000000005ull;
        f.epoch = 41;
        f.size = 1ull << 40;
        f.mtime_ns = -3;
        f.ctime_ns = INT64_MIN;
        f.ino = UINT64_MAX;
        f.cache_size = 123456789;
        f.cache_mtime_ns = INT64_MAX;
        f.flags = kFileKernelPagesStale | kFileAhead;
        f.handle = std::string("\0\0\0\x81\xff\x00\x01", 7); // type be32 and handle bytes
        f.path = std::string("dir/with\nnewline/\xc3\xa9t\xe9\0nul", 25);
        f.settings = std::string(70000, '\xff'); // longer than 16 bits of length
        auto enc = encode(f);
        auto d = decode_file_record(enc);
        REQUIRE(d);
        CHECK(d->file_id == f.file_id);
        CHECK(d->epoch == 41);
        CHECK(d->size == f.size);
        CHECK(d->mtime_ns == -3);
        CHECK(d->ctime_ns == INT64_MIN);
        CHECK(d->ino == UINT64_MAX);
        CHECK(d->cache_size == f.cache_size);
        CHECK(d->cache_mtime_ns == INT64_MAX);
        CHECK(d->flags == f.flags);
        CHECK(d->handle == f.handle);
        CHECK(d->path == f.path);
        CHECK(d->settings == f.settings);

        // Empty strings are still there, each as its length.
        FileRecord empty;
        empty.file_id = 1;
        const auto e_enc = encode(empty);
        CHECK(e_enc.size() == 1 + 8 * 8 + 4 + 3 * 4);
        auto de = decode_file_record(e_enc);
        REQUIRE(de);
        CHECK(de->path.empty());
        CHECK(de->handle.empty());
        CHECK(de->settings.empty());

        FileRecord small = f;
        small.settings = "mode=writeback";
        check_strict(encode(small), [](std::string_view x) { return decode_file_record(x); });
        check_strict(e_enc, [](std::string_view x) { return decode_file_record(x); });
        // A string length that points past the end is refused, not clipped.
        auto lying = e_enc;
        lying[1 + 8 * 8 + 4 + 3] = 1; // handle length 1: every later field shifts
        CHECK_FALSE(decode_file_record(lying));
        auto huge = e_enc;
        huge[1 + 8 * 8 + 4] = '\x7f'; // handle length ~2 GiB
        CHECK_FALSE(decode_file_record(huge));
        auto unknown_flag = small;
        unknown_flag.flags = 1u << 9;
        CHECK_FALSE(decode_file_record(encode(unknown_flag)));
        auto old_layout = encode(small);
        old_layout[0] = 1; // format 2's file record
        CHECK_FALSE(decode_file_record(old_layout));
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

    TEST_CASE("MetaStore: an index made before the policy family gets it at open") {
        test::TmpDir tmp;
        const std::string dir = tmp / "index";
        {
            // The families of an index from before per-path policy.
            rocksdb::DBOptions dbo;
            dbo.create_if_missing = true;
            dbo.create_missing_column_families = true;
            std::vector<rocksdb::ColumnFamilyDescriptor> descs;
            descs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
            for (const char* n : {"meta", "files", "extents", "buckets", "file_ids", "dirty"})
                descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
            std::vector<rocksdb::ColumnFamilyHandle*> handles;
            rocksdb::DB* raw = nullptr;
            REQUIRE(rocksdb::DB::Open(dbo, dir, descs, &handles, &raw).ok());
            REQUIRE(raw->Put(rocksdb::WriteOptions(), handles[2], "k", "rec").ok());
            for (auto* h : handles)
                REQUIRE(raw->DestroyColumnFamilyHandle(h).ok());
            delete raw; // NOLINT: RocksDB's own allocation
        }
        StoreOptions o; // no create_if_missing: the index exists
        auto ms = MetaStore::open(dir, o);
        REQUIRE_MESSAGE(ms, (ms ? "" : to_string(ms.error())));
        CHECK((*ms)->get(Cf::files, "k")->value() == "rec");
        CHECK_FALSE((*ms)->get(Cf::policy, file_key({1, 2}))->has_value());
        auto b = (*ms)->batch();
        b.put(Cf::policy, file_key({1, 2}), "p");
        REQUIRE((*ms)->write(b, true));
        CHECK((*ms)->get(Cf::policy, file_key({1, 2}))->value() == "p");
    }

    TEST_CASE("MetaStore: the compaction filter drops stale clean extents only" *
              doctest::timeout(30)) {
        test::TmpDir tmp;
        const std::string dir = tmp / "index";
        StoreOptions o;
        o.create_if_missing = true;
        // bucket -> current gen, as the allocator would answer.
        std::map<std::uint32_t, std::uint32_t> gens{{1, 2}, {2, 5}, {3, 0}};
        std::atomic<int> calls{0};
        auto is_current = [&](std::uint32_t bucket, std::uint32_t gen) {
            calls.fetch_add(1);
            auto it = gens.find(bucket);
            return it != gens.end() && it->second == gen;
        };
        auto has = [](MetaStore& ms, FileId f, std::uint64_t end) {
            auto v = ms.get(Cf::extents, extent_key(f, end));
            REQUIRE(v);
            return v->has_value();
        };
        {
            auto ms = MetaStore::open(dir, o);
            REQUIRE(ms);
            auto& m = **ms;
            auto b = m.batch();
            b.put(Cf::extents, extent_key(1, 4096), encode(extent(1, 1))); // stale
            b.put(Cf::extents, extent_key(1, 8192), encode(extent(2, 5))); // current
            b.put(Cf::extents, extent_key(1, 12288),
                  encode(extent(1, 1, kExtentDirty)));                     // stale, dirty
            b.put(Cf::extents, extent_key(2, 4096), encode(extent(1, 1))); // stale, rewritten below
            b.put(Cf::extents, extent_key(3, 4096), "not an extent");      // undecodable
            b.put(Cf::extents, extent_key(4, 4096), encode(extent(9, 0))); // unknown bucket
            b.put(Cf::files, file_key({1, 1}), encode(extent(1, 1)));      // other family
            REQUIRE(m.write(b));
            REQUIRE(m.flush());

            // No predicate yet (the gens are not loaded): nothing is dropped.
            REQUIRE(m.compact_extents());
            CHECK(m.stale_extents_dropped() == 0);
            CHECK(has(m, 1, 4096));
            CHECK(calls.load() == 0);

            // A fresh fill rewrites a stale key with a current gen; the old
            // version sits in an SST, the new one in the memtable.
            auto r = m.batch();
            r.put(Cf::extents, extent_key(2, 4096), encode(extent(3, 0)));
            REQUIRE(m.write(r));

            m.set_extent_filter(is_current);
            REQUIRE(m.compact_extents());
            CHECK(calls.load() > 0);
            CHECK_FALSE(has(m, 1, 4096));
            CHECK(has(m, 1, 8192));
            CHECK(has(m, 1, 12288)); // dirty data is never dropped
            CHECK_FALSE(has(m, 4, 4096));
            CHECK(has(m, 3, 4096)); // kept, and counted
            CHECK(m.undecodable_extents_kept() >= 1);
            CHECK(m.stale_extents_dropped() >= 2);
            auto d = decode_extent(**m.get(Cf::extents, extent_key(2, 4096)));
            REQUIRE(d);
            CHECK(d->bucket == 3); // the rewrite survived
            CHECK(m.get(Cf::files, file_key({1, 1}))->has_value());

            // The same with the stale version still in the memtable when
            // compaction starts, and the new one written after it.
            auto s1 = m.batch();
            s1.put(Cf::extents, extent_key(5, 4096), encode(extent(1, 1)));
            REQUIRE(m.write(s1));
            REQUIRE(m.flush());
            auto s2 = m.batch();
            s2.put(Cf::extents, extent_key(5, 4096), encode(extent(1, 2)));
            REQUIRE(m.write(s2));
            REQUIRE(m.compact_extents());
            auto d5 = decode_extent(**m.get(Cf::extents, extent_key(5, 4096)));
            REQUIRE(d5);
            CHECK(d5->gen == 2);

            // An empty predicate turns the filter off again.
            m.set_extent_filter({});
            auto s3 = m.batch();
            s3.put(Cf::extents, extent_key(6, 4096), encode(extent(1, 0)));
            REQUIRE(m.write(s3));
            const auto before = m.stale_extents_dropped();
            REQUIRE(m.compact_extents());
            CHECK(has(m, 6, 4096));
            CHECK(m.stale_extents_dropped() == before);
        }
        // Reopened: no predicate until set, whatever RocksDB compacts at open.
        o.create_if_missing = false;
        auto ms = MetaStore::open(dir, o);
        REQUIRE(ms);
        REQUIRE((*ms)->compact_extents());
        CHECK(has(**ms, 6, 4096));
        CHECK((*ms)->stale_extents_dropped() == 0);
        (*ms)->set_extent_filter(is_current);
        REQUIRE((*ms)->compact_extents());
        CHECK_FALSE(has(**ms, 6, 4096));
        CHECK(has(**ms, 1, 12288));
        CHECK((*ms)->stale_extents_dropped() == 1);
    }

    TEST_CASE("MetaStore: the filter may be replaced while compactions run" *
              doctest::timeout(60)) {
        test::TmpDir tmp;
        StoreOptions o;
        o.create_if_missing = true;
        o.write_buffer_bytes = 64u << 10; // many flushes, many background compactions
        auto ms = MetaStore::open(tmp / "index", o);
        REQUIRE(ms);
        auto& m = **ms;
        std::atomic<bool> done{false};
        std::thread setter([&] {
            for (std::uint32_t i = 0; !done.load(); ++i)
                m.set_extent_filter([i](std::uint32_t, std::uint32_t gen) { return gen >= i % 2; });
        });
        for (std::uint64_t f = 1; f <= 40; ++f) {
            auto b = m.batch();
            for (std::uint64_t e = 1; e <= 200; ++e)
                b.put(Cf::extents, extent_key(f, e * 4096), encode(extent(1, 1, e % 2)));
            REQUIRE(m.write(b));
        }
        REQUIRE(m.compact_extents());
        done = true;
        setter.join();
        // gen 1 is current for both predicates: nothing may have gone.
        CHECK(m.stale_extents_dropped() == 0);
        std::size_t n = 0;
        auto c = m.cursor(Cf::extents);
        for (c.seek_to_first(); c.valid(); c.next())
            ++n;
        CHECK(n == 40 * 200);
    }

    TEST_CASE("MetaStore: the index is its owner's alone, whatever the umask") {
        test::TmpDir tmp;
        const std::string dir = tmp / "index";
        StoreOptions o;
        o.create_if_missing = true;
        {
            UmaskGuard um(0);
            auto ms = MetaStore::open(dir, o);
            REQUIRE(ms);
            auto b = (*ms)->batch();
            b.put(Cf::files, file_key({1, 2}), "secret path");
            REQUIRE((*ms)->write(b));
            REQUIRE((*ms)->flush()); // an SST, made under umask 0
        }
        CHECK(mode_of(dir) == 0700);
        auto names = dir_names(dir);
        CHECK(names.count("CURRENT") == 1);
        for (const auto& n : names) {
            CAPTURE(n);
            CHECK((mode_of(dir + "/" + n) & 077) == 0);
        }
        // An index made looser by someone else is tightened at open.
        REQUIRE(::chmod(dir.c_str(), 0755) == 0);
        REQUIRE(::chmod((dir + "/CURRENT").c_str(), 0644) == 0);
        o.create_if_missing = false;
        {
            UmaskGuard um(0);
            auto ms = MetaStore::open(dir, o);
            REQUIRE(ms);
        }
        CHECK(mode_of(dir) == 0700);
        for (const auto& n : dir_names(dir)) {
            CAPTURE(n);
            CHECK((mode_of(dir + "/" + n) & 077) == 0);
        }
    }

    TEST_CASE("MetaStore::peek reads one value and writes nothing") {
        test::TmpDir tmp;
        const std::string dir = tmp / "index";
        StoreOptions o;
        o.create_if_missing = true;
        {
            auto ms = MetaStore::open(dir, o);
            REQUIRE(ms);
            auto b = (*ms)->batch();
            b.put(Cf::meta, kSuperblockKey, "sb bytes");
            REQUIRE((*ms)->write(b, true)); // in the WAL only, not flushed
        }
        const auto before = dir_names(dir);
        auto v = MetaStore::peek(dir, Cf::meta, kSuperblockKey);
        REQUIRE(v);
        REQUIRE(v->has_value());
        CHECK(**v == "sb bytes");
        auto none = MetaStore::peek(dir, Cf::meta, "nothing");
        REQUIRE(none);
        CHECK_FALSE(none->has_value());
        CHECK(dir_names(dir) == before);
        CHECK_FALSE(MetaStore::peek(tmp / "nowhere", Cf::meta, kSuperblockKey));
    }

    TEST_CASE("an index of 1,000,000 extents opens quickly" * doctest::timeout(120)) {
        // No timing assertion: the time is printed for the record (issue #3 asks
        // for under 2 s); start-up does not read extents at all.
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
        const auto t0 = std::chrono::steady_clock::now();
        auto ms = MetaStore::open(dir, o);
        REQUIRE(ms);
        CHECK((*ms)->get(Cf::extents, extent_key(500, 500 * 65536))->has_value());
        const auto ms_open = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - t0)
                                 .count();
        std::printf("index of 1000000 extents: open + first lookup in %lld ms\n",
                    static_cast<long long>(ms_open));
    }
}
