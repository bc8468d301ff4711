// The cache device (format, superblock validation, reformat, migration from
// older formats, private files, the bucket count limit) and the bucket
// allocator (gens, reserve, LRU victims).
#include "overcache/meta/key_codec.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <cstdio>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <grp.h>
// Only to play the format-2 code, whose index had four column families: the
// MetaStore of this version always opens all six.
#include <rocksdb/db.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
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

std::string file_bytes(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
}

mode_t mode_of(const std::string& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

std::vector<std::string> entries(const std::string& dir) {
    std::vector<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    REQUIRE(d != nullptr);
    while (const dirent* e = ::readdir(d))
        if (std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..")
            out.push_back(dir + "/" + e->d_name);
    ::closedir(d);
    return out;
}

struct UmaskGuard {
    explicit UmaskGuard(mode_t m) : old(::umask(m)) {}
    ~UmaskGuard() { ::umask(old); }
    UmaskGuard(const UmaskGuard&) = delete;
    UmaskGuard& operator=(const UmaskGuard&) = delete;
    mode_t old;
};

// Captures what the code under test logs to stderr.
class StderrCapture {
public:
    explicit StderrCapture(const std::string& path) : path_(path) {
        std::fflush(stderr);
        saved_ = ::dup(2);
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        REQUIRE(fd >= 0);
        ::dup2(fd, 2);
        ::close(fd);
    }
    ~StderrCapture() { restore(); }
    StderrCapture(const StderrCapture&) = delete;
    StderrCapture& operator=(const StderrCapture&) = delete;
    std::string text() {
        restore();
        return file_bytes(path_);
    }

private:
    void restore() {
        if (saved_ < 0)
            return;
        std::fflush(stderr);
        ::dup2(saved_, 2);
        ::close(saved_);
        saved_ = -1;
    }
    std::string path_;
    int saved_ = -1;
};

// Writes an index the way the format-2 code left it: the families meta,
// files, extents and buckets only (`extra` adds one, as a later format
// might), a superblock of `version` and one extent.
void write_old_index(const std::string& dir, meta::Superblock sb, std::uint32_t version,
                     const char* extra = nullptr) {
    rocksdb::DBOptions dbo;
    dbo.create_if_missing = true;
    dbo.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const char* n : {"default", "meta", "files", "extents", "buckets"})
        descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    if (extra != nullptr)
        descs.emplace_back(extra, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> h;
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(dbo, dir, descs, &h, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    sb.version = version;
    const auto sbv = meta::encode(sb);
    REQUIRE(db->Put(rocksdb::WriteOptions(), h[1], meta::kSuperblockKey.data(), sbv).ok());
    // A format-2 extent: layout 2, 32-bit checksums.
    std::string ext("\2", 1);
    for (std::uint32_t f : {0u, 0u, 0u, 4096u, 0u, 1u, 0xdeadbeefu})
        meta::put_be32(ext, f);
    REQUIRE(db->Put(rocksdb::WriteOptions(), h[3], meta::extent_key(1, 4096), ext).ok());
    for (auto* x : h)
        REQUIRE(db->DestroyColumnFamilyHandle(x).ok());
    REQUIRE(db->Close().ok());
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
        SUBCASE("larger than its filesystem: refused before anything is written") {
            c.cache_size = 1ull << 50; // 1 PiB
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::BadValue);
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
        SUBCASE("another bucket size is refused; another cache size resizes") {
            auto o = c;
            o.bucket_size = 128u << 10;
            auto d = open_cache_device(o);
            REQUIRE_FALSE(d);
            CHECK(d.error().message.find("bucket_size") != std::string::npos);
            CHECK(d.error().message.find("fixed") != std::string::npos);
            o = c;
            o.cache_size = 8u << 20;
            d = open_cache_device(o);
            REQUIRE(d);
            CHECK((*d)->superblock().cache_size == 8u << 20);
            CHECK((*d)->superblock().bucket_count == 31);
            d->reset();
            CHECK(file_size(c.dir + "/data") == 8u << 20);
            o.cache_size = 2 * o.bucket_size; // below the 3-bucket floor
            d = open_cache_device(o);
            REQUIRE_FALSE(d);
            CHECK(d.error().message.find("too small") != std::string::npos);
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
        SUBCASE("a newer version is refused and left untouched") {
            {
                meta::StoreOptions so;
                auto ms = meta::MetaStore::open(c.dir + "/index", so);
                REQUIRE(ms);
                auto v = (*ms)->get(meta::Cf::meta, meta::kSuperblockKey);
                meta::Superblock sb;
                REQUIRE(meta::decode_superblock(**v, sb) == meta::SbDecode::ok);
                uuid = sb.uuid;
                sb.version = 99;
                auto b = (*ms)->batch();
                b.put(meta::Cf::meta, meta::kSuperblockKey, meta::encode(sb));
                REQUIRE((*ms)->write(b, true));
            }
            const auto sb_before =
                meta::MetaStore::peek(c.dir + "/index", meta::Cf::meta, meta::kSuperblockKey);
            REQUIRE(sb_before);
            const auto data_before = file_bytes(c.dir + "/data");
            for (int i = 0; i < 2; ++i) {
                auto d = open_cache_device(c);
                REQUIRE_FALSE(d);
                CHECK(d.error().code == Errc::Foreign);
                CHECK(d.error().message.find("unknown format version 99") != std::string::npos);
                CHECK(d.error().message.find("-o reformat") != std::string::npos);
            }
            auto sb_after =
                meta::MetaStore::peek(c.dir + "/index", meta::Cf::meta, meta::kSuperblockKey);
            REQUIRE(sb_after);
            CHECK(**sb_after == **sb_before);
            CHECK(file_bytes(c.dir + "/data") == data_before);
        }
        SUBCASE("a newer version with other column families is refused as such") {
            auto d0 = open_cache_device(c);
            REQUIRE(d0);
            auto sb = (*d0)->superblock();
            d0->reset();
            REQUIRE(meta::MetaStore::destroy(c.dir + "/index"));
            write_old_index(c.dir + "/index", sb, 99, "from_the_future");
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::Foreign);
            CHECK(d.error().message.find("unknown format version 99") != std::string::npos);
            auto still = meta::MetaStore::peek(c.dir + "/index", meta::Cf::extents,
                                               meta::extent_key(1, 4096));
            REQUIRE(still);
            CHECK(still->has_value());
        }
        SUBCASE("an older format of another backing is refused and left untouched") {
            auto d0 = open_cache_device(c);
            REQUIRE(d0);
            auto sb = (*d0)->superblock();
            d0->reset();
            REQUIRE(meta::MetaStore::destroy(c.dir + "/index"));
            sb.backing_path = "/srv/someone-else";
            write_old_index(c.dir + "/index", sb, 2);
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::Foreign);
            CHECK(d.error().message.find("another backing") != std::string::npos);
            auto still = meta::MetaStore::peek(c.dir + "/index", meta::Cf::extents,
                                               meta::extent_key(1, 4096));
            REQUIRE(still);
            CHECK(still->has_value());
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
        SUBCASE("a superblock that decodes but is out of its bounds") {
            // data_offset is in no other check (the data header does not
            // carry it): before superblock_problem a wrong one was used for
            // every read and write of the device.
            meta::Superblock sb;
            {
                meta::StoreOptions so;
                auto ms = meta::MetaStore::open(c.dir + "/index", so);
                REQUIRE(ms);
                auto v = (*ms)->get(meta::Cf::meta, meta::kSuperblockKey);
                REQUIRE(meta::decode_superblock(**v, sb) == meta::SbDecode::ok);
                CHECK(meta::superblock_problem(sb).empty());
                sb.data_offset = ~std::uint64_t{0} - sb.bucket_size + 1; // wraps the size check
                auto b = (*ms)->batch();
                b.put(meta::Cf::meta, meta::kSuperblockKey, meta::encode(sb));
                REQUIRE((*ms)->write(b));
            }
            auto d = open_cache_device(c);
            REQUIRE_FALSE(d);
            CHECK(d.error().code == Errc::MetaCorrupt);
            CHECK(d.error().message.find("damaged") != std::string::npos);
            CHECK(d.error().message.find("data_offset") != std::string::npos);
        }
        SUBCASE("a data file that is not this index's") {
            int fd = ::open((c.dir + "/data").c_str(), O_RDWR);
            REQUIRE(fd >= 0);
            // One byte of the uuid flipped (a fixed byte written there
            // would be the uuid's own one time in 256).
            char b = 0;
            REQUIRE(::pread(fd, &b, 1, 20) == 1);
            b = static_cast<char>(~b);
            REQUIRE(::pwrite(fd, &b, 1, 20) == 1);
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

    TEST_CASE("a cache of an older format is dropped with a warning and made anew") {
        test::TmpDir tmp;
        auto c = config_for(tmp);
        meta::Superblock old_sb;
        {
            auto d = open_cache_device(c);
            REQUIRE(d);
            old_sb = (*d)->superblock();
        }
        REQUIRE(meta::MetaStore::destroy(c.dir + "/index"));
        std::uint32_t version = 2;
        bool four_families = true;
        SUBCASE("format 2") {
            version = 2;
        }
        SUBCASE("format 1") {
            version = 1;
        }
        SUBCASE("format 2 superblock in an index with all families") {
            four_families = false;
        }
        if (four_families) {
            write_old_index(c.dir + "/index", old_sb, version);
        } else {
            meta::StoreOptions so;
            so.create_if_missing = true;
            auto ms = meta::MetaStore::open(c.dir + "/index", so);
            REQUIRE(ms);
            auto sb = old_sb;
            sb.version = version;
            auto b = (*ms)->batch();
            b.put(meta::Cf::meta, meta::kSuperblockKey, meta::encode(sb));
            b.put(meta::Cf::extents, meta::extent_key(1, 4096), "old extent");
            REQUIRE((*ms)->write(b, true));
        }
        REQUIRE(
            meta::MetaStore::peek(c.dir + "/index", meta::Cf::extents, meta::extent_key(1, 4096))
                ->has_value());

        c.cache_size = 0; // as a service would mount it: the size it was given is kept
        StderrCapture err(tmp / "stderr");
        auto d = open_cache_device(c);
        const std::string logged = err.text();
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        CHECK((*d)->formatted_now());
        CHECK((*d)->superblock().version == meta::kFormatVersion);
        CHECK((*d)->superblock().uuid != old_sb.uuid);
        CHECK((*d)->superblock().cache_size == old_sb.cache_size);
        CHECK((*d)->superblock().bucket_count == old_sb.bucket_count);
        CHECK(logged.find("format " + std::to_string(version)) != std::string::npos);
        CHECK(logged.find("dropped") != std::string::npos);
        CHECK(logged.find("format-3") != std::string::npos);
        // The old extents are gone; the new families are there.
        auto& ms = (*d)->meta();
        CHECK_FALSE(ms.get(meta::Cf::extents, meta::extent_key(1, 4096))->has_value());
        {
            auto cur = ms.cursor(meta::Cf::extents); // must not outlive the store
            cur.seek_to_first();
            CHECK_FALSE(cur.valid());
        }
        auto b = ms.batch();
        b.put(meta::Cf::dirty, meta::dirty_key(1, 0), meta::encode_dirty_len(1));
        b.put(meta::Cf::file_ids, meta::file_id_key(1), meta::file_key({1, 2}));
        CHECK(ms.write(b));
        d->reset();
        // And it reopens as an ordinary format-3 cache.
        auto again = open_cache_device(c);
        REQUIRE_MESSAGE(again, (again ? "" : again.error().message));
        CHECK_FALSE((*again)->formatted_now());
    }

    TEST_CASE("a cache of more than 2^32 - 1 buckets is refused at format time") {
        test::TmpDir tmp;
        auto c = config_for(tmp);
        c.bucket_size = 512;
        c.cache_size = 512 * ((1ull << 32) + 8); // 2^32 + 7 buckets after the header slot
        auto d = open_cache_device(c);
        REQUIRE_FALSE(d);
        CHECK(d.error().code == Errc::BadValue); // before the free-space check
        const auto& m = d.error().message;
        CHECK(m.find("cache_size 2147483652K with bucket_size 512 makes") != std::string::npos);
        CHECK(m.find("bucket_size 512") != std::string::npos);
        CHECK(m.find("4294967295") != std::string::npos);
        struct stat st {};
        CHECK(::stat((c.dir + "/data").c_str(), &st) != 0);
        CHECK(::stat((c.dir + "/index/CURRENT").c_str(), &st) != 0);
    }

    TEST_CASE("the cache is its owner's alone, whatever the umask") {
        test::TmpDir tmp;
        auto c = config_for(tmp);
        UmaskGuard um(0);
        SUBCASE("a cache directory we create is 0700") {
            c.dir = tmp / "made/by/us";
            REQUIRE(open_cache_device(c));
            CHECK(mode_of(tmp / "made") == 0700);
            CHECK(mode_of(c.dir) == 0700);
        }
        SUBCASE("a cache directory the user made 0755 keeps its mode") {
            REQUIRE(::mkdir(c.dir.c_str(), 0755) == 0);
            REQUIRE(open_cache_device(c));
            CHECK(mode_of(c.dir) == 0755);
        }
        SUBCASE("an existing cache made looser is tightened") {
            { REQUIRE(open_cache_device(c)); }
            REQUIRE(::chmod(c.dir.c_str(), 0755) == 0);
            REQUIRE(::chmod((c.dir + "/index").c_str(), 0755) == 0);
            REQUIRE(::chmod((c.dir + "/data").c_str(), 0644) == 0);
            for (const auto& f : entries(c.dir + "/index"))
                REQUIRE(::chmod(f.c_str(), 0644) == 0);
            auto d = open_cache_device(c);
            REQUIRE(d);
            CHECK_FALSE((*d)->formatted_now());
        }
        CHECK(mode_of(c.dir + "/index") == 0700);
        CHECK(mode_of(c.dir + "/data") == 0600);
        const auto index_files = entries(c.dir + "/index");
        CHECK(index_files.size() > 3);
        for (const auto& f : index_files) {
            CAPTURE(f);
            CHECK((mode_of(f) & 077) == 0);
        }

        // Another user can read neither the data nor any index file.
        if (::getuid() != 0) {
            MESSAGE("not root: cannot test as another uid");
            return;
        }
        std::vector<std::string> secret = index_files;
        secret.push_back(c.dir + "/data");
        secret.push_back(c.dir + "/index");
        const std::string probe = mode_of(c.dir) == 0755 ? c.dir : tmp.path();
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)
                ::_exit(100);
            // Not vacuous: the directory above the secrets can be opened.
            const int pfd = ::open(probe.c_str(), O_RDONLY | O_DIRECTORY);
            if (pfd < 0)
                ::_exit(101);
            ::close(pfd);
            int readable = 0;
            for (const auto& f : secret) {
                const int fd = ::open(f.c_str(), O_RDONLY);
                if (fd >= 0) {
                    ++readable;
                    ::close(fd);
                } else if (errno != EACCES) {
                    ::_exit(102);
                }
            }
            ::_exit(readable);
        }
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }

    TEST_CASE("a cache formatted without a backing becomes the first mounted one's") {
        test::TmpDir tmp;
        auto c = config_for(tmp);
        auto unowned = c;
        unowned.backing = BackingIdentity{}; // as `overcache format` makes a new one
        REQUIRE(open_cache_device(unowned));
        {
            auto d = open_cache_device(c);
            REQUIRE(d);
            CHECK((*d)->superblock().backing_path == c.backing.path);
            CHECK((*d)->superblock().backing_root_ino == c.backing.root_ino);
        }
        auto other = c;
        other.backing.path = "/srv/other";
        auto d = open_cache_device(other);
        REQUIRE_FALSE(d);
        CHECK(d.error().message.find("another backing") != std::string::npos);
    }
}
