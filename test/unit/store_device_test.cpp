// The cache device (format, superblock validation, reformat) and the bucket
// allocator (gens, reserve, LRU victims).
#include "overcache/meta/key_codec.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace overcache;
using namespace overcache::store;

namespace {

DeviceConfig config_for(const test::TmpDir& tmp) {
    DeviceConfig c;
    c.dir = tmp / "cache";
    c.cache_size = 4u << 20;
    c.bucket_size = 256u << 10;
    c.backing = BackingIdentity{"/srv/backing", 11, 2};
    return c;
}

std::uint64_t file_size(const std::string& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return static_cast<std::uint64_t>(st.st_size);
}

} // namespace

TEST_SUITE("store") {
    TEST_CASE("a new cache is formatted; an unchanged one reopens") {
        test::TmpDir tmp;
        auto c = config_for(tmp);
        std::array<std::uint8_t, 16> uuid{};
        {
            auto d = open_cache_device(c);
            REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
            CHECK((*d)->formatted_now());
            CHECK((*d)->superblock().bucket_count == 15); // 16 slots, the first holds the header
            uuid = (*d)->superblock().uuid;
        }
        CHECK(file_size(c.dir + "/data") == c.cache_size);
        c.cache_size = 0; // not given: the recorded size is taken
        auto d = open_cache_device(c);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        CHECK_FALSE((*d)->formatted_now());
        CHECK((*d)->superblock().uuid == uuid);
        CHECK((*d)->superblock().cache_size == 4u << 20);
    }

    TEST_CASE("a cache that cannot be made leaves nothing behind") {
        test::TmpDir tmp;
        auto c = config_for(tmp);
        SUBCASE("larger than the free space: refused before allocating") {
            c.cache_size = 1ull << 50; // 1 PiB
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::CacheFull);
            CHECK(d.error().message.find("larger than") != std::string::npos);
        }
        SUBCASE("too small for its buckets") {
            c.cache_size = 2 * c.bucket_size;
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().message.find("too small") != std::string::npos);
        }
        struct stat st {};
        CHECK(::stat((c.dir + "/data").c_str(), &st) != 0);
        CHECK(::stat((c.dir + "/index/CURRENT").c_str(), &st) != 0);
        // ... so the next attempt with sane settings formats a fresh cache.
        c.cache_size = 4u << 20;
        auto d = open_cache_device(c);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        CHECK((*d)->formatted_now());
    }

    TEST_CASE("a cache that is not this mount's is refused and left alone") {
        test::TmpDir tmp;
        auto c = config_for(tmp);
        { REQUIRE(open_cache_device(c)); }
        std::array<std::uint8_t, 16> uuid{};

        SUBCASE("another backing") {
            auto o = c;
            o.backing.path = "/srv/other";
            auto d = open_cache_device(o);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::Foreign);
            CHECK(d.error().message.find("another backing") != std::string::npos);
            CHECK(d.error().message.find("reformat") != std::string::npos);
            o.backing = c.backing;
            o.backing.root_ino = 99;
            CHECK_FALSE(open_cache_device(o));
        }
        SUBCASE("another bucket size or cache size") {
            auto o = c;
            o.bucket_size = 128u << 10;
            auto d = open_cache_device(o);
            REQUIRE_FALSE(d);
            CHECK(d.error().message.find("bucket_size") != std::string::npos);
            o = c;
            o.cache_size = 8u << 20;
            d = open_cache_device(o);
            REQUIRE_FALSE(d);
            CHECK(d.error().message.find("cache_size") != std::string::npos);
        }
        SUBCASE("an unknown version") {
            {
                meta::StoreOptions so;
                auto ms = meta::MetaStore::open(c.dir + "/index", so);
                REQUIRE(ms);
                auto v = (*ms)->get(meta::Cf::meta, meta::kSuperblockKey);
                std::string sb = **v;
                sb[11] = 9; // low byte of the version
                auto b = (*ms)->batch();
                b.put(meta::Cf::meta, meta::kSuperblockKey, sb);
                REQUIRE((*ms)->write(b));
            }
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::Foreign);
            CHECK(d.error().message.find("version") != std::string::npos);
        }
        SUBCASE("a version-1 cache (one checksum an extent) is refused") {
            {
                meta::StoreOptions so;
                auto ms = meta::MetaStore::open(c.dir + "/index", so);
                REQUIRE(ms);
                auto v = (*ms)->get(meta::Cf::meta, meta::kSuperblockKey);
                std::string sb = **v;
                REQUIRE(sb[11] == static_cast<char>(meta::kFormatVersion));
                sb[11] = 1; // what the version-1 code wrote
                auto b = (*ms)->batch();
                b.put(meta::Cf::meta, meta::kSuperblockKey, sb);
                REQUIRE((*ms)->write(b));
            }
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::Foreign);
            CHECK(d.error().message.find("unknown format version") != std::string::npos);
            CHECK(d.error().message.find("-o reformat") != std::string::npos);
            // Left alone: it still refuses, and reformat makes a fresh cache.
            CHECK_FALSE(open_cache_device(c));
            auto o = c;
            o.reformat = true;
            auto fresh = open_cache_device(o);
            REQUIRE(fresh);
            CHECK((*fresh)->superblock().version == meta::kFormatVersion);
        }
        SUBCASE("a damaged superblock") {
            {
                meta::StoreOptions so;
                auto ms = meta::MetaStore::open(c.dir + "/index", so);
                REQUIRE(ms);
                auto b = (*ms)->batch();
                b.put(meta::Cf::meta, meta::kSuperblockKey, "OCACHESB\0\0\0\1short");
                REQUIRE((*ms)->write(b));
            }
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::MetaCorrupt);
            CHECK(d.error().message.find("damaged") != std::string::npos);
        }
        SUBCASE("a data file that is not this index's") {
            int fd = ::open((c.dir + "/data").c_str(), O_WRONLY);
            REQUIRE(fd >= 0);
            REQUIRE(::pwrite(fd, "X", 1, 20) == 1); // inside the uuid
            ::close(fd);
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::MetaCorrupt);
        }
        SUBCASE("a lost index") {
            REQUIRE(meta::MetaStore::destroy(c.dir + "/index"));
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().message.find("index is missing") != std::string::npos);
        }
        SUBCASE("someone else's file as cache_dev") {
            auto o = c;
            o.dir = tmp / "cache2";
            o.dev = tmp / "precious";
            int fd = ::open(o.dev.c_str(), O_WRONLY | O_CREAT, 0600);
            REQUIRE(::write(fd, "precious data", 13) == 13);
            ::close(fd);
            auto d = open_cache_device(o);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::Foreign);
            CHECK(file_size(o.dev) == 13);
        }
        // Whatever the problem, reformat makes a new, empty cache.
        auto o = c;
        o.backing.path = "/srv/other";
        o.reformat = true;
        auto d = open_cache_device(o);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        CHECK((*d)->formatted_now());
        CHECK((*d)->superblock().backing_path == "/srv/other");
        CHECK((*d)->superblock().uuid != uuid);
    }
}
