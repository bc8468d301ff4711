// `overcache show-super CACHEDIR`, run as the real binary ($OVERCACHE_BIN)
// over caches this test formats with store::open_cache_device: the facts as
// `key value` lines, the same while this process holds the cache open (the
// index's LOCK taken, as a mount holds it) without a file of the index
// changing, and exit 1 with the problem named for what is not a usable
// cache, 2 for usage errors.
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/store/cache_device.hpp"
#include "run_command.hpp"
#include "tmp_dir.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fstream>
#include <map>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace overcache;

namespace {

test::CommandResult show_super(const std::vector<std::string>& args) {
    const char* bin = std::getenv("OVERCACHE_BIN");
    REQUIRE_MESSAGE(bin != nullptr, "OVERCACHE_BIN is not set (run through meson test)");
    std::vector<std::string> argv{bin, "show-super"};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::run_command(argv, std::chrono::seconds(30));
}

// The `key value` lines of a successful run.
std::map<std::string, std::string> facts(const std::string& out) {
    std::map<std::string, std::string> m;
    std::size_t start = 0;
    while (start < out.size()) {
        const auto nl = std::min(out.find('\n', start), out.size());
        const std::string line = out.substr(start, nl - start);
        start = nl + 1;
        const auto sp = line.find(' ');
        REQUIRE_MESSAGE(sp != std::string::npos, "not a key value line: " << line);
        m[line.substr(0, sp)] = line.substr(sp + 1);
    }
    return m;
}

store::DeviceConfig config_for(const test::TmpDir& tmp) {
    store::DeviceConfig c;
    c.dir = tmp / "cache";
    c.cache_size = 4u << 20;
    c.bucket_size = 256u << 10;
    c.backing = store::BackingIdentity{"/srv/backing", 11, 2};
    return c;
}

std::string uuid_of(const meta::Superblock& sb) {
    char buf[40];
    const auto& u = sb.uuid;
    std::snprintf(buf, sizeof buf,
                  "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                  u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                  u[14], u[15]);
    return buf;
}

// Every file of `dir` with its size and mtime: what a reader must not change.
std::map<std::string, std::string> snapshot(const std::string& dir) {
    std::map<std::string, std::string> m;
    DIR* d = ::opendir(dir.c_str());
    REQUIRE(d != nullptr);
    while (auto* e = ::readdir(d)) {
        struct stat st {};
        const std::string p = dir + "/" + e->d_name;
        REQUIRE(::stat(p.c_str(), &st) == 0);
        m[e->d_name] = std::to_string(st.st_size) + "@" + std::to_string(st.st_mtim.tv_sec) + "." +
                       std::to_string(st.st_mtim.tv_nsec);
    }
    ::closedir(d);
    return m;
}

void put_superblock(const std::string& dir, const std::string& value) {
    meta::StoreOptions so;
    auto ms = meta::MetaStore::open(dir + "/index", so);
    REQUIRE(ms);
    auto b = (*ms)->batch();
    b.put(meta::Cf::meta, meta::kSuperblockKey, value);
    REQUIRE((*ms)->write(b, true));
}

bool has(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

} // namespace

TEST_SUITE("cli") {
    TEST_CASE("show-super prints an unmounted cache's superblock") {
        test::TmpDir tmp{"oc-show-super"};
        const auto c = config_for(tmp);
        meta::Superblock sb;
        {
            auto d = store::open_cache_device(c);
            REQUIRE(d);
            sb = (*d)->superblock();
        }
        auto r = show_super({c.dir});
        CHECK_MESSAGE(r.status == 0, r.out);
        auto f = facts(r.out);
        CHECK(f["cache_dir"] == c.dir);
        CHECK(f["format_version"] == std::to_string(meta::kFormatVersion));
        CHECK(f["uuid"] == uuid_of(sb));
        CHECK(f["backing_path"] == "/srv/backing");
        CHECK(f["backing_fsid"] == "11");
        CHECK(f["backing_root_ino"] == "2");
        CHECK(f["bucket_size"] == "256K");
        CHECK(f["bucket_count"] == "15");
        CHECK(f["cache_size"] == "4M");
        CHECK(f["data_offset"] == "256K");
        CHECK(f["dirty_data"] == "0");
        CHECK(f["in_use_by"] == "none");
    }

    TEST_CASE("show-super reads a cache in use without disturbing it") {
        test::TmpDir tmp{"oc-show-super"};
        const auto c = config_for(tmp);
        auto d = store::open_cache_device(c); // holds the index's LOCK, as a mount does
        REQUIRE(d);
        const auto before = snapshot(c.dir + "/index");
        auto r = show_super({c.dir});
        CHECK_MESSAGE(r.status == 0, r.out);
        auto f = facts(r.out);
        CHECK(f["uuid"] == uuid_of((*d)->superblock()));
        CHECK(f["in_use_by"].rfind(std::to_string(::getpid()) + " (", 0) == 0);
        CHECK(snapshot(c.dir + "/index") == before);
        // The index is still ours to write, and what the holder writes (to
        // its WAL, not flushed) the next show-super sees.
        meta::BucketRecord rec;
        rec.state = meta::BucketState::full;
        rec.fill_bytes = rec.live_bytes = 64u << 10;
        rec.dirty_bytes = 8u << 10;
        auto b = (*d)->meta().batch();
        b.put(meta::Cf::buckets, meta::bucket_key(3), meta::encode(rec));
        REQUIRE((*d)->meta().write(b));
        r = show_super({c.dir});
        CHECK_MESSAGE(r.status == 0, r.out);
        f = facts(r.out);
        CHECK(f["dirty_data"] == "8K");
        CHECK(f["buckets_in_use"] == "1");
    }

    TEST_CASE("show-super refuses what is not a usable cache, naming the problem") {
        test::TmpDir tmp{"oc-show-super"};
        const auto c = config_for(tmp);

        SUBCASE("a missing directory") {
            auto r = show_super({tmp / "nothing"});
            CHECK(r.status == 1);
            CHECK_MESSAGE(has(r.out, "cannot open " + (tmp / "nothing")), r.out);
        }
        SUBCASE("a file") {
            std::ofstream(tmp / "file") << "x";
            auto r = show_super({tmp / "file"});
            CHECK(r.status == 1);
            CHECK_MESSAGE(has(r.out, "is not a directory"), r.out);
        }
        SUBCASE("a directory that is not a cache") {
            auto r = show_super({tmp.path()});
            CHECK(r.status == 1);
            CHECK_MESSAGE(has(r.out, "is not an overcache cache: it has no index"), r.out);
        }
        SUBCASE("a damaged superblock") {
            { REQUIRE(store::open_cache_device(c)); }
            put_superblock(c.dir, std::string("OCACHESB\0\0\0\3short", 17));
            auto r = show_super({c.dir});
            CHECK(r.status == 1);
            CHECK_MESSAGE(has(r.out, "is damaged: its superblock does not decode"), r.out);
        }
        SUBCASE("a superblock that is not overcache's") {
            { REQUIRE(store::open_cache_device(c)); }
            put_superblock(c.dir, "something else entirely");
            auto r = show_super({c.dir});
            CHECK(r.status == 1);
            CHECK_MESSAGE(has(r.out, "not overcache's"), r.out);
        }
        SUBCASE("a superblock out of its bounds") {
            meta::Superblock sb;
            {
                auto d = store::open_cache_device(c);
                REQUIRE(d);
                sb = (*d)->superblock();
            }
            sb.data_offset = 0;
            put_superblock(c.dir, meta::encode(sb));
            auto r = show_super({c.dir});
            CHECK(r.status == 1);
            CHECK_MESSAGE(has(r.out, "is damaged: its superblock's data_offset 0"), r.out);
        }
        SUBCASE("an unknown version") {
            meta::Superblock sb;
            {
                auto d = store::open_cache_device(c);
                REQUIRE(d);
                sb = (*d)->superblock();
            }
            sb.version = 99;
            put_superblock(c.dir, meta::encode(sb));
            auto r = show_super({c.dir});
            CHECK(r.status == 1);
            CHECK_MESSAGE(has(r.out, "unknown format version 99"), r.out);
        }
    }

    TEST_CASE("show-super usage errors exit 2") {
        auto r = show_super({});
        CHECK(r.status == 2);
        CHECK_MESSAGE(has(r.out, "missing CACHEDIR"), r.out);
        r = show_super({"/a", "/b"});
        CHECK(r.status == 2);
        CHECK_MESSAGE(has(r.out, "unexpected argument '/b'"), r.out);
        r = show_super({"--bogus", "/a"});
        CHECK(r.status == 2);
        r = show_super({"--help"});
        CHECK(r.status == 0);
        CHECK_MESSAGE(has(r.out, "usage: overcache show-super CACHEDIR"), r.out);
    }
}
