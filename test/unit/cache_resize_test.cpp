// Resizing an unmounted cache (store/resize.cpp): grow keeps every extent,
// shrink keeps the extents below the cut, drops clean ones past it and moves
// dirty ones (bytes and checksums verified), a shrink whose dirty data does
// not fit changes nothing, and a resize cut short still opens.
#include "overcache/meta/key_codec.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/store/resize.hpp"
#include "store/data_header.hpp"
#include "tmp_dir.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

using namespace overcache;
using namespace overcache::store;

namespace {

constexpr std::uint64_t kBucket = 64u << 10;

DeviceConfig config_for(const test::TmpDir& tmp, std::uint64_t buckets) {
    DeviceConfig c;
    c.dir = tmp / "cache";
    c.cache_size = (buckets + 1) * kBucket;
    c.bucket_size = kBucket;
    c.backing = BackingIdentity{"/srv/backing", 11, 2};
    return c;
}

std::uint64_t file_size(const std::string& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return static_cast<std::uint64_t>(st.st_size);
}

std::string file_bytes(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<char> pattern(std::uint64_t seed, std::size_t len) {
    std::vector<char> v(len);
    for (std::size_t i = 0; i < len; ++i)
        v[i] = static_cast<char>((seed * 131 + i * 7 + i / 4096) & 0xff);
    return v;
}

std::vector<std::uint64_t> csums_of(std::uint64_t start, const std::vector<char>& d) {
    std::vector<std::uint64_t> out;
    const std::uint64_t end = start + d.size();
    for (std::uint64_t at = start; at < end;) {
        const std::uint64_t next = std::min(end, (at / meta::kCsumBlock + 1) * meta::kCsumBlock);
        out.push_back(XXH3_64bits(d.data() + (at - start), next - at));
        at = next;
    }
    return out;
}

// An opened, unmounted cache: its index and its data file.
struct Cache {
    std::unique_ptr<meta::MetaStore> ms;
    int fd = -1;
    std::string data;
    meta::Superblock sb;

    explicit Cache(const std::string& dir) : data(dir + "/data") {
        auto m = meta::MetaStore::open(dir + "/index", meta::StoreOptions{});
        REQUIRE(m);
        ms = std::move(*m);
        fd = ::open(data.c_str(), O_RDWR | O_CLOEXEC);
        REQUIRE(fd >= 0);
        auto v = ms->get(meta::Cf::meta, meta::kSuperblockKey);
        REQUIRE(v);
        REQUIRE(v->has_value());
        REQUIRE(meta::decode_superblock(**v, sb) == meta::SbDecode::ok);
    }
    ~Cache() { ::close(fd); }
    Cache(const Cache&) = delete;
    Cache& operator=(const Cache&) = delete;

    meta::BucketRecord bucket(std::uint32_t b) {
        auto v = ms->get(meta::Cf::buckets, meta::bucket_key(b));
        REQUIRE(v);
        if (!v->has_value())
            return {};
        auto r = meta::decode_bucket(**v);
        REQUIRE(r);
        return *r;
    }
    bool has_bucket_record(std::uint32_t b) {
        auto v = ms->get(meta::Cf::buckets, meta::bucket_key(b));
        REQUIRE(v);
        return v->has_value();
    }

    // Sets bucket `b`'s LRU tick (as a mount's clean stop records it).
    void used_at(std::uint32_t b, std::uint64_t tick) {
        auto rec = bucket(b);
        rec.last_use = tick;
        auto batch = ms->batch();
        batch.put(meta::Cf::buckets, meta::bucket_key(b), meta::encode(rec));
        REQUIRE(ms->write(batch, true));
    }

    // Writes `len` bytes of file `file` at `start` into `bucket` at `off`,
    // as the write path would: bytes, extent and accounting. `gen_delta`
    // makes the extent stale (written at an older gen).
    std::vector<char> put(meta::FileId file, std::uint64_t start, std::size_t len, std::uint32_t b,
                          std::uint32_t off, bool dirty, std::uint32_t gen_delta = 0,
                          bool pinned = false) {
        auto bytes = pattern(file * 1000 + start, len);
        const std::uint64_t dev = sb.data_offset + b * sb.bucket_size + off;
        REQUIRE(::pwrite(fd, bytes.data(), len, static_cast<off_t>(dev)) ==
                static_cast<ssize_t>(len));
        auto rec = bucket(b);
        if (rec.state == meta::BucketState::free)
            rec.gen += 5; // as a reclaimed bucket would be
        meta::ExtentValue v;
        v.bucket = b;
        v.gen = rec.gen - gen_delta;
        v.bucket_off = off;
        v.len = static_cast<std::uint32_t>(len);
        v.flags = (dirty ? meta::kExtentDirty : 0) | (pinned ? meta::kExtentPinned : 0);
        v.csums = csums_of(start, bytes);
        rec.state = meta::BucketState::full;
        rec.fill_bytes = std::max<std::uint32_t>(rec.fill_bytes, off + v.len);
        if (gen_delta == 0) {
            rec.live_bytes += v.len;
            rec.dirty_bytes += dirty ? v.len : 0;
            rec.pinned_bytes += pinned ? v.len : 0;
        }
        rec.last_use = 7;
        auto batch = ms->batch();
        batch.put(meta::Cf::extents, meta::extent_key(file, start + len), meta::encode(v));
        batch.put(meta::Cf::buckets, meta::bucket_key(b), meta::encode(rec));
        REQUIRE(ms->write(batch, true));
        return bytes;
    }

    // The bytes the index serves for the extent ending at `end`, or nullopt
    // (no extent, a stale gen, a bucket past the end, a checksum mismatch).
    std::optional<std::vector<char>> read(meta::FileId file, std::uint64_t end) {
        auto v = ms->get(meta::Cf::extents, meta::extent_key(file, end));
        REQUIRE(v);
        if (!v->has_value())
            return std::nullopt;
        auto e = meta::decode_extent(**v);
        REQUIRE(e);
        if (e->bucket >= sb.bucket_count || bucket(e->bucket).gen != e->gen)
            return std::nullopt;
        std::vector<char> out(e->len);
        const std::uint64_t dev = sb.data_offset + e->bucket * sb.bucket_size + e->bucket_off;
        REQUIRE(::pread(fd, out.data(), out.size(), static_cast<off_t>(dev)) ==
                static_cast<ssize_t>(out.size()));
        if (csums_of(end - e->len, out) != e->csums)
            return std::nullopt;
        return out;
    }
    meta::ExtentValue extent(meta::FileId file, std::uint64_t end) {
        auto v = ms->get(meta::Cf::extents, meta::extent_key(file, end));
        REQUIRE(v);
        REQUIRE(v->has_value());
        return *meta::decode_extent(**v);
    }

    // Every record of the index's extents, buckets and meta families.
    std::string dump() {
        std::string out;
        for (auto cf : {meta::Cf::meta, meta::Cf::extents, meta::Cf::buckets}) {
            auto cur = ms->cursor(cf);
            for (cur.seek_to_first(); cur.valid(); cur.next()) {
                out += std::string(cur.key()) + "=" + std::string(cur.value()) + ";";
            }
        }
        return out;
    }
};

std::unique_ptr<CacheDevice> format(const DeviceConfig& c) {
    auto d = open_cache_device(c);
    REQUIRE(d);
    return std::move(*d);
}

} // namespace

TEST_SUITE("store") {

    TEST_CASE("store::resize_cache grows and every extent reads back the same") {
        test::TmpDir tmp;
        auto c = config_for(tmp, 16);
        format(c).reset();
        std::map<std::pair<meta::FileId, std::uint64_t>, std::vector<char>> want;
        {
            Cache k(c.dir);
            want[{1, 20000}] = k.put(1, 0, 20000, 0, 0, false);
            want[{1, 60000}] = k.put(1, 20000, 40000, 3, 0, true);
            want[{2, 65536}] = k.put(2, 0, 65536, 15, 0, true);
            auto r = resize_cache(*k.ms, k.fd, k.data, k.sb, 33 * kBucket);
            REQUIRE(r);
            CHECK(r->old_size == 17 * kBucket);
            CHECK(r->new_size == 33 * kBucket);
            CHECK(k.sb.bucket_count == 32);
            for (std::uint32_t b = 16; b < 32; ++b) {
                CHECK(k.has_bucket_record(b));
                CHECK(k.bucket(b).state == meta::BucketState::free);
            }
        }
        CHECK(file_size(c.dir + "/data") == 33 * kBucket);
        auto reopened = c;
        reopened.cache_size = 0; // the recorded size, header and all, is consistent
        auto d = open_cache_device(reopened);
        REQUIRE(d);
        CHECK((*d)->superblock().cache_size == 33 * kBucket);
        d->reset();
        Cache k(c.dir);
        for (const auto& [key, bytes] : want) {
            auto got = k.read(key.first, key.second);
            REQUIRE(got);
            CHECK(*got == bytes);
        }
    }

    TEST_CASE("store::resize_cache shrinks: keeps, moves dirty and clean past the cut") {
        test::TmpDir tmp;
        auto c = config_for(tmp, 16);
        format(c).reset();
        std::vector<char> a, b, d1, d2;
        {
            Cache k(c.dir);
            a = k.put(1, 0, 8192, 2, 0, false);           // below the cut, clean
            b = k.put(1, 8192, 4096, 3, 4096, true);      // below the cut, dirty
            auto c2 = k.put(2, 0, 30000, 12, 0, false);   // past it, clean: fits, moved
            d1 = k.put(3, 5000, 40000, 13, 0, true);      // past it, dirty: moved
            d2 = k.put(3, 45000, 20000, 14, 40960, true); // another, another bucket
            k.put(4, 0, 4096, 15, 0, false, 1);           // stale: dropped too
            auto r = resize_cache(*k.ms, k.fd, k.data, k.sb, 9 * kBucket);
            REQUIRE(r);
            CHECK(r->new_size == 9 * kBucket);
            CHECK(r->moved_dirty_bytes == 60000);
            CHECK(r->kept_clean_bytes == 30000);
            CHECK(r->dropped_clean_bytes == 0); // the stale entry was no data
            CHECK(k.sb.bucket_count == 8);
            CHECK(*k.read(2, 30000) == c2);
            CHECK(k.extent(2, 30000).bucket < 8);
            CHECK(k.extent(2, 30000).flags == 0);
            CHECK(*k.read(1, 8192) == a);
            CHECK(*k.read(1, 12288) == b);
            auto e1 = k.extent(3, 45000);
            auto e2 = k.extent(3, 65000);
            CHECK(e1.bucket < 8);
            CHECK(e2.bucket < 8);
            CHECK((e1.flags & meta::kExtentDirty) != 0);
            CHECK((e2.flags & meta::kExtentDirty) != 0);
            CHECK(*k.read(3, 45000) == d1);
            CHECK(*k.read(3, 65000) == d2);
            auto v = k.ms->get(meta::Cf::extents, meta::extent_key(4, 4096));
            CHECK_FALSE(v->has_value());
            for (std::uint32_t bk = 8; bk < 16; ++bk)
                CHECK_FALSE(k.has_bucket_record(bk));
            // The accounting follows the bytes: the dirty bytes moved with them.
            std::uint64_t dirty = 0, live = 0;
            for (std::uint32_t bk = 0; bk < 8; ++bk) {
                dirty += k.bucket(bk).dirty_bytes;
                live += k.bucket(bk).live_bytes;
            }
            CHECK(dirty == 4096 + 60000);
            CHECK(live == 8192 + 4096 + 60000 + 30000);
        }
        CHECK(file_size(c.dir + "/data") == 9 * kBucket);
        auto reopened = c;
        reopened.cache_size = 0;
        auto dev = open_cache_device(reopened);
        REQUIRE(dev);
        CHECK((*dev)->superblock().bucket_count == 8);
    }

    TEST_CASE(
        "store::resize_cache refuses a shrink whose dirty data does not fit, changing nothing") {
        test::TmpDir tmp;
        auto c = config_for(tmp, 16);
        format(c).reset();
        std::string before_index;
        {
            Cache k(c.dir);
            for (std::uint32_t bk = 0; bk < 8; ++bk) // every bucket that stays is in use
                k.put(10 + bk, 0, 4096, bk, 0, false);
            k.put(1, 0, 50000, 10, 0, true);
            before_index = k.dump();
        }
        const std::string before_data = file_bytes(c.dir + "/data");
        {
            Cache k(c.dir);
            auto r = resize_cache(*k.ms, k.fd, k.data, k.sb, 9 * kBucket);
            REQUIRE_FALSE(r);
            CHECK(r.error().code == Errc::CacheFull);
            CHECK(r.error().message.find("overcache flush") != std::string::npos);
            CHECK(r.error().message.find("dirty") != std::string::npos);
            CHECK(r.error().message.find("50000") != std::string::npos); // size_text of 50000 bytes
            CHECK(k.sb.cache_size == 17 * kBucket);
            CHECK(k.dump() == before_index);
        }
        CHECK(file_bytes(c.dir + "/data") == before_data);
        // Too small for any cache, or a bucket count past 32 bits: named.
        Cache k(c.dir);
        auto r = resize_cache(*k.ms, k.fd, k.data, k.sb, 2 * kBucket);
        REQUIRE_FALSE(r);
        CHECK(r.error().message.find("too small") != std::string::npos);
        CHECK(r.error().message.find("bucket_size") != std::string::npos);
        CHECK(k.dump() == before_index);
    }

    TEST_CASE("store::resize_cache shrinks: clean data past the cut is kept while it fits, the "
              "most recently used first; a damaged copy is dropped") {
        for (const bool damaged : {false, true}) {
            CAPTURE(damaged);
            test::TmpDir tmp;
            auto c = config_for(tmp, 16);
            format(c).reset();
            Cache k(c.dir);
            for (std::uint32_t bk = 0; bk < 5; ++bk) // 3 free below the cut; 2 stay free
                k.put(10 + bk, 0, 4096, bk, 0, false);
            auto older = k.put(5, 0, 60000, 10, 0, false);
            auto newer = k.put(6, 0, 60000, 11, 0, false, 0, true);
            k.used_at(10, 20);
            k.used_at(11, 30);
            if (damaged) { // its bytes on the cache device no longer match
                const std::uint64_t at = k.sb.data_offset + 11 * k.sb.bucket_size + 100;
                REQUIRE(::pwrite(k.fd, "x", 1, static_cast<off_t>(at)) == 1);
            }
            auto r = resize_cache(*k.ms, k.fd, k.data, k.sb, 9 * kBucket);
            REQUIRE(r);
            CHECK(r->kept_clean_bytes == (damaged ? 0 : 60000));
            CHECK(r->dropped_clean_bytes == (damaged ? 120000 : 60000));
            CHECK_FALSE(k.read(5, 60000)); // only one bucket's worth fits
            if (damaged) {
                CHECK_FALSE(k.read(6, 60000));
            } else {
                CHECK(*k.read(6, 60000) == newer);
                CHECK(k.extent(6, 60000).flags == meta::kExtentPinned);
            }
            std::uint64_t live = 0, pinned = 0;
            for (std::uint32_t bk = 0; bk < 8; ++bk) {
                live += k.bucket(bk).live_bytes;
                pinned += k.bucket(bk).pinned_bytes;
            }
            CHECK(live == 5 * 4096 + (damaged ? 0 : 60000));
            CHECK(pinned == (damaged ? 0 : 60000));
            (void)older;
        }
    }

    TEST_CASE("store::resize_cache shrinks: pinned dirty data moves with its flag, pinned clean "
              "data past the cut that does not fit is dropped") {
        test::TmpDir tmp;
        auto c = config_for(tmp, 16);
        format(c).reset();
        Cache k(c.dir);
        for (std::uint32_t bk = 3; bk < 8; ++bk) // 2 free below the cut: they stay free
            k.put(10 + bk, 0, 4096, bk, 0, false);
        auto kept = k.put(1, 0, 8192, 2, 0, false, 0, true); // below the cut: stays pinned
        k.put(2, 0, 50000, 12, 0, false, 0, true); // past it, clean: no room beside the dirty copy
        auto moved = k.put(3, 0, 20000, 13, 0, true, 0, true); // past it, dirty: moved
        auto r = resize_cache(*k.ms, k.fd, k.data, k.sb, 9 * kBucket);
        REQUIRE(r);
        CHECK(r->moved_dirty_bytes == 20000);
        CHECK(r->dropped_clean_bytes == 50000);
        CHECK(r->kept_clean_bytes == 0);
        CHECK(*k.read(1, 8192) == kept);
        CHECK(*k.read(3, 20000) == moved);
        auto e = k.extent(3, 20000);
        CHECK(e.bucket < 8);
        CHECK(e.flags == (meta::kExtentDirty | meta::kExtentPinned));
        std::uint64_t pinned = 0;
        for (std::uint32_t bk = 0; bk < 8; ++bk)
            pinned += k.bucket(bk).pinned_bytes;
        CHECK(pinned == 8192 + 20000); // the accounting follows the bytes
        CHECK(k.bucket(e.bucket).pinned_bytes == 20000);
    }

    TEST_CASE("store::resize_cache cut short leaves a cache that opens") {
        test::TmpDir tmp;
        auto c = config_for(tmp, 16);
        format(c).reset();
        auto reopened = c;
        reopened.cache_size = 0;
        SUBCASE("data file grown, index batch not written: the old size") {
            REQUIRE(::truncate((c.dir + "/data").c_str(), 40 * kBucket) == 0);
            auto d = open_cache_device(reopened);
            REQUIRE(d);
            CHECK((*d)->superblock().cache_size == 17 * kBucket);
        }
        SUBCASE("index written, data header not: the new size, header repaired") {
            {
                Cache k(c.dir);
                const auto old_sb = k.sb;
                REQUIRE(resize_cache(*k.ms, k.fd, k.data, k.sb, 25 * kBucket));
                REQUIRE(write_header(
                    k.fd, DataHeader{old_sb.uuid, old_sb.bucket_size, old_sb.bucket_count}));
            }
            auto d = open_cache_device(reopened);
            REQUIRE(d);
            CHECK((*d)->superblock().bucket_count == 24);
            d->reset();
            Cache k(c.dir);
            auto h = read_header(k.fd);
            REQUIRE(h);
            DataHeader hd;
            REQUIRE(decode_header(*h, hd) == HeaderState::ours);
            CHECK(hd.bucket_count == 24);
        }
        SUBCASE("a shrink's copies written, index batch not: the old cache, whole") {
            // The copies land in buckets the index still calls free: as if the
            // process died after copying, nothing refers to them.
            Cache k(c.dir);
            auto bytes = k.put(1, 0, 8192, 12, 0, true);
            std::vector<char> junk(8192, 'x');
            REQUIRE(::pwrite(k.fd, junk.data(), junk.size(),
                             static_cast<off_t>(k.sb.data_offset)) == 8192);
            CHECK(*k.read(1, 8192) == bytes);
        }
    }

} // TEST_SUITE
