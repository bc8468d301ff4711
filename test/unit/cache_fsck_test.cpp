// fsck of an unmounted cache (store/fsck.cpp): a real index and data file,
// made as the write path makes them, then damaged: a clean extent's bytes
// (found; repair drops it), a dirty extent's bytes (found; repair copies
// them to lost+found before dropping it and its dirty entry), a bucket's
// live bytes (found; repair fixes them). A healthy cache is clean and a
// check writes nothing.
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/names_codec.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/store/fsck.hpp"
#include "tmp_dir.hpp"

#include <csignal>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

using namespace overcache;
using namespace overcache::store;

namespace {

constexpr std::uint64_t kBucket = 64u << 10;

std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<char> pattern(std::uint64_t seed, std::size_t len) {
    std::vector<char> v(len);
    for (std::size_t i = 0; i < len; ++i)
        v[i] = static_cast<char>((seed * 37 + i * 11 + i / 4096) & 0xff);
    return v;
}

std::vector<std::uint64_t> block_sums(std::uint64_t start, const std::vector<char>& d) {
    std::vector<std::uint64_t> out;
    for (std::uint64_t at = start; at < start + d.size();) {
        const std::uint64_t next = std::min<std::uint64_t>(
            start + d.size(), (at / meta::kCsumBlock + 1) * meta::kCsumBlock);
        out.push_back(XXH3_64bits(d.data() + (at - start), next - at));
        at = next;
    }
    return out;
}

// A freshly formatted cache, written to as the write path would, then closed
// (fsck wants it unmounted).
struct Fixture {
    test::TmpDir tmp;
    std::string dir = tmp / "cache";
    meta::Superblock sb;

    Fixture() {
        DeviceConfig c;
        c.dir = dir;
        c.cache_size = 9 * kBucket;
        c.bucket_size = kBucket;
        c.backing = BackingIdentity{"/srv/backing", 11, 2};
        auto d = open_cache_device(c);
        REQUIRE(d);
        sb = (*d)->superblock();
    }

    std::string data() const { return dir + "/data"; }
    std::uint64_t dev_off(std::uint32_t bucket, std::uint32_t off) const {
        return sb.data_offset + std::uint64_t{bucket} * sb.bucket_size + off;
    }
};

// The index opened for writing, for setting a cache up and looking at it.
struct Index {
    std::unique_ptr<meta::MetaStore> ms;
    explicit Index(const Fixture& f) {
        auto m = meta::MetaStore::open(f.dir + "/index", meta::StoreOptions{});
        REQUIRE(m);
        ms = std::move(*m);
    }

    meta::BucketRecord bucket(std::uint32_t b) {
        auto v = ms->get(meta::Cf::buckets, meta::bucket_key(b));
        REQUIRE(v);
        if (!v->has_value())
            return {};
        auto r = meta::decode_bucket(**v);
        REQUIRE(r);
        return *r;
    }
    void put_bucket(std::uint32_t b, const meta::BucketRecord& r) {
        auto batch = ms->batch();
        batch.put(meta::Cf::buckets, meta::bucket_key(b), meta::encode(r));
        REQUIRE(ms->write(batch, true));
    }
    bool has(meta::Cf cf, const std::string& key) {
        auto v = ms->get(cf, key);
        REQUIRE(v);
        return v->has_value();
    }

    // A file's record, its file_ids entry and, when ahead, its dirty entry.
    void add_file(const Fixture&, meta::FileId id, const std::string& path, bool ahead) {
        meta::FileRecord r;
        r.file_id = id;
        r.size = 1u << 20;
        r.ino = 100 + id;
        r.path = path;
        if (ahead) {
            r.flags = meta::kFileAhead;
            r.cache_size = r.size;
        }
        const std::string key = meta::file_key(meta::FileKey{11, r.ino});
        auto batch = ms->batch();
        batch.put(meta::Cf::files, key, meta::encode(r));
        batch.put(meta::Cf::file_ids, meta::file_id_key(id), key);
        if (ahead) {
            std::string since;
            meta::put_be64(since, 12345);
            batch.put(meta::Cf::dirty, meta::dirty_key(id, 0), since);
        }
        REQUIRE(ms->write(batch, true));
    }

    // `len` bytes of `file` at `start` in bucket `b` at `off`: the bytes on
    // the data device, the extent and the bucket's accounting.
    std::vector<char> put(const Fixture& f, meta::FileId file, std::uint64_t start, std::size_t len,
                          std::uint32_t b, std::uint32_t off, bool dirty, bool pinned = false) {
        auto bytes = pattern(file * 1000 + start, len);
        {
            const int fd = ::open(f.data().c_str(), O_WRONLY | O_CLOEXEC);
            REQUIRE(fd >= 0);
            REQUIRE(::pwrite(fd, bytes.data(), len, static_cast<off_t>(f.dev_off(b, off))) ==
                    static_cast<ssize_t>(len));
            REQUIRE(::fsync(fd) == 0);
            ::close(fd);
        }
        auto rec = bucket(b);
        if (rec.state == meta::BucketState::free)
            rec.gen += 3;
        meta::ExtentValue v;
        v.bucket = b;
        v.gen = rec.gen;
        v.bucket_off = off;
        v.len = static_cast<std::uint32_t>(len);
        v.flags = (dirty ? meta::kExtentDirty : 0) | (pinned ? meta::kExtentPinned : 0);
        v.csums = block_sums(start, bytes);
        rec.state = meta::BucketState::full;
        rec.fill_bytes = std::max<std::uint32_t>(rec.fill_bytes, off + v.len);
        rec.live_bytes += v.len;
        rec.dirty_bytes += dirty ? v.len : 0;
        rec.pinned_bytes += pinned ? v.len : 0;
        auto batch = ms->batch();
        batch.put(meta::Cf::extents, meta::extent_key(file, start + len), meta::encode(v));
        batch.put(meta::Cf::buckets, meta::bucket_key(b), meta::encode(rec));
        REQUIRE(ms->write(batch, true));
        return bytes;
    }
};

// Every record of every family, read without opening the index for writing.
std::string dump(const Fixture& f) {
    std::string out;
    for (auto cf : meta::kAllCfs)
        REQUIRE(meta::MetaStore::peek_each(f.dir + "/index", cf,
                                           [&](std::string_view k, std::string_view v) {
                                               out += std::string(k) + "=" + std::string(v) + ";";
                                               return true;
                                           }));
    return out;
}

// Names, sizes and mtimes of the files in the index directory and the data
// file's: a check that writes nothing leaves them all as they were.
std::string listing(const Fixture& f) {
    std::string out;
    DIR* d = ::opendir((f.dir + "/index").c_str());
    REQUIRE(d != nullptr);
    std::map<std::string, std::string> names;
    while (const dirent* e = ::readdir(d)) {
        struct stat st {};
        const std::string p = f.dir + "/index/" + e->d_name;
        if (::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode))
            names[e->d_name] = std::to_string(st.st_size) + "@" +
                               std::to_string(st.st_mtim.tv_sec) + "." +
                               std::to_string(st.st_mtim.tv_nsec);
    }
    ::closedir(d);
    for (const auto& [n, s] : names)
        out += n + ":" + s + ";";
    struct stat st {};
    REQUIRE(::stat(f.data().c_str(), &st) == 0);
    return out + "data@" + std::to_string(st.st_mtim.tv_nsec);
}

void flip(const Fixture& f, std::uint32_t bucket, std::uint32_t off) {
    const int fd = ::open(f.data().c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    char c = 0;
    REQUIRE(::pread(fd, &c, 1, static_cast<off_t>(f.dev_off(bucket, off))) == 1);
    c = static_cast<char>(c ^ 0x5a);
    REQUIRE(::pwrite(fd, &c, 1, static_cast<off_t>(f.dev_off(bucket, off))) == 1);
    ::close(fd);
}

// A small healthy cache: two files, one clean extent each, and one dirty
// extent of the second file (ahead of its backing).
void populate(Fixture& f) {
    Index ix(f);
    ix.add_file(f, 1, "docs/a.txt", false);
    ix.add_file(f, 2, "docs/b.bin", true);
    ix.put(f, 1, 0, 20000, 0, 0, false);
    ix.put(f, 2, 0, 8192, 1, 0, false);
    ix.put(f, 2, 8192, 10000, 2, 0, true);
}

FsckReport check(const Fixture& f, bool repair) {
    auto r = fsck_cache_dir(f.dir, repair);
    REQUIRE(r);
    REQUIRE(r->fatal.empty());
    return *r;
}

} // namespace

TEST_SUITE("store") {

    TEST_CASE("store::fsck_cache_dir: a healthy cache is clean and a check writes nothing") {
        Fixture f;
        populate(f);
        const std::string before = dump(f);
        const std::string files_before = listing(f);
        auto rep = check(f, false);
        CHECK(rep.problems() == 0);
        CHECK(rep.extents == 3);
        CHECK(rep.extent_bytes == 38192);
        CHECK(rep.dirty_bytes == 10000);
        CHECK(dump(f) == before);
        CHECK(listing(f) == files_before);
        struct stat st {};
        CHECK(::stat((f.dir + "/lost+found").c_str(), &st) != 0);
        // A repair of a healthy cache changes no record either.
        rep = check(f, true);
        CHECK(rep.problems() == 0);
        CHECK(rep.repaired() == 0);
        CHECK(dump(f) == before);
    }

    TEST_CASE("store::fsck_cache_dir: a clean extent failing its checksum is dropped") {
        Fixture f;
        populate(f);
        flip(f, 0, 5000);
        auto rep = check(f, false);
        CHECK(rep.at(FsckCheck::clean_checksum).count == 1);
        CHECK(rep.at(FsckCheck::clean_checksum).bytes == 20000);
        CHECK(rep.problems() == 1);
        REQUIRE(rep.at(FsckCheck::clean_checksum).examples.size() == 1);
        CHECK(rep.at(FsckCheck::clean_checksum).examples[0].find("docs/a.txt") !=
              std::string::npos);

        rep = check(f, true);
        CHECK(rep.at(FsckCheck::clean_checksum).repaired == 1);
        CHECK(rep.repaired() == rep.problems());
        CHECK(rep.saved.empty()); // clean: the backing has the bytes
        {
            Index ix(f);
            CHECK_FALSE(ix.has(meta::Cf::extents, meta::extent_key(1, 20000)));
            CHECK(ix.bucket(0).live_bytes == 0);
        }
        CHECK(check(f, false).problems() == 0);
    }

    TEST_CASE("store::fsck_cache_dir: a dirty extent failing its checksum goes to lost+found") {
        Fixture f;
        populate(f);
        flip(f, 2, 9000);
        // The bytes as they are now, damaged: what the copy must hold.
        std::string want(10000, '\0');
        {
            const int fd = ::open(f.data().c_str(), O_RDONLY | O_CLOEXEC);
            REQUIRE(::pread(fd, want.data(), want.size(), static_cast<off_t>(f.dev_off(2, 0))) ==
                    10000);
            ::close(fd);
        }
        auto rep = check(f, false);
        CHECK(rep.at(FsckCheck::dirty_checksum).count == 1);
        CHECK(rep.at(FsckCheck::dirty_checksum).bytes == 10000);
        CHECK(rep.at(FsckCheck::clean_checksum).count == 0);
        {
            Index ix(f); // a check drops nothing
            CHECK(ix.has(meta::Cf::extents, meta::extent_key(2, 18192)));
        }

        rep = check(f, true);
        CHECK(rep.at(FsckCheck::dirty_checksum).repaired == 1);
        REQUIRE(rep.saved.size() == 1);
        const std::string copy = f.dir + "/lost+found/fsck-2-8192";
        CHECK(rep.saved[0].find(copy) == 0);
        CHECK(slurp(copy) == want);
        REQUIRE(rep.notes.size() == 1);
        CHECK(rep.notes[0].find("/docs/b.bin") != std::string::npos);
        const std::string txt = slurp(copy + ".txt");
        CHECK(txt.find("/docs/b.bin") != std::string::npos);
        CHECK(txt.find("offset 8192") != std::string::npos);
        CHECK(txt.find("length 10000") != std::string::npos);
        CHECK(txt.find("checksum") != std::string::npos);
        {
            Index ix(f);
            CHECK_FALSE(ix.has(meta::Cf::extents, meta::extent_key(2, 18192)));
            CHECK(ix.has(meta::Cf::extents, meta::extent_key(2, 8192))); // the clean one stays
            CHECK_FALSE(ix.has(meta::Cf::dirty, meta::dirty_key(2, 0)));
            CHECK(ix.bucket(2).live_bytes == 0);
            CHECK(ix.bucket(2).dirty_bytes == 0);
        }
        CHECK(check(f, false).problems() == 0);
    }

    TEST_CASE("store::fsck_cache_dir never drops a dirty extent that verifies") {
        Fixture f;
        populate(f);
        {
            // Wrong accounting in the bucket of good dirty data.
            Index ix(f);
            auto r = ix.bucket(2);
            r.live_bytes += 4096;
            ix.put_bucket(2, r);
        }
        auto rep = check(f, true);
        CHECK(rep.at(FsckCheck::bucket_accounting).count == 1);
        CHECK(rep.at(FsckCheck::bucket_accounting).repaired == 1);
        CHECK(rep.saved.empty());
        Index ix(f);
        CHECK(ix.has(meta::Cf::extents, meta::extent_key(2, 18192)));
        CHECK(ix.has(meta::Cf::dirty, meta::dirty_key(2, 0)));
    }

    TEST_CASE("store::fsck_cache_dir: wrong live bytes are found and fixed") {
        Fixture f;
        populate(f);
        {
            Index ix(f);
            auto r = ix.bucket(1);
            r.live_bytes = 60000;
            ix.put_bucket(1, r);
        }
        auto rep = check(f, false);
        CHECK(rep.at(FsckCheck::bucket_accounting).count == 1);
        CHECK(rep.problems() == 1);
        rep = check(f, true);
        CHECK(rep.at(FsckCheck::bucket_accounting).repaired == 1);
        {
            Index ix(f);
            CHECK(ix.bucket(1).live_bytes == 8192);
        }
        CHECK(check(f, false).problems() == 0);
    }

    TEST_CASE("store::fsck_cache_dir: pinned extents are accepted, their accounting checked") {
        Fixture f;
        populate(f);
        {
            Index ix(f);
            ix.add_file(f, 3, "docs/pinned", false);
            ix.put(f, 3, 0, 12000, 3, 0, false, true);
            ix.put(f, 3, 12288, 4096, 3, 12288, false, true);
        }
        CHECK(check(f, false).problems() == 0);
        {
            Index ix(f);
            auto r = ix.bucket(3);
            CHECK(r.pinned_bytes == 16096);
            r.pinned_bytes = 0; // as if a commit had been lost
            ix.put_bucket(3, r);
        }
        auto rep = check(f, false);
        CHECK(rep.at(FsckCheck::bucket_accounting).count == 1);
        rep = check(f, true);
        CHECK(rep.at(FsckCheck::bucket_accounting).repaired == 1);
        {
            Index ix(f);
            CHECK(ix.bucket(3).pinned_bytes == 16096);
            CHECK(ix.bucket(3).live_bytes == 16096);
        }
        CHECK(check(f, false).problems() == 0);
    }

    TEST_CASE("store::fsck_cache_dir: stale extents are counted, not problems") {
        Fixture f;
        populate(f);
        {
            Index ix(f);
            auto r = ix.bucket(0);
            ++r.gen; // as GC reclaiming the bucket would
            r.live_bytes = 0;
            ix.put_bucket(0, r);
        }
        auto rep = check(f, false);
        CHECK(rep.at(FsckCheck::extent_stale).count == 1);
        CHECK(rep.problems() == 0);
    }

    TEST_CASE("store::fsck_cache_dir: orphaned links are found and dropped") {
        Fixture f;
        populate(f);
        {
            Index ix(f);
            auto batch = ix.ms->batch();
            batch.put(meta::Cf::file_ids, meta::file_id_key(9),
                      meta::file_key(meta::FileKey{11, 999}));
            std::string since;
            meta::put_be64(since, 1);
            batch.put(meta::Cf::dirty, meta::dirty_key(1, 0), since); // file 1 is not ahead
            REQUIRE(ix.ms->write(batch, true));
        }
        auto rep = check(f, false);
        CHECK(rep.at(FsckCheck::file_ids).count == 1);
        CHECK(rep.at(FsckCheck::dirty_orphan).count == 1);
        rep = check(f, true);
        CHECK(rep.repaired() == 2);
        CHECK(check(f, false).problems() == 0);
    }

    TEST_CASE("store::fsck_cache_dir: of two overlapping clean extents one is dropped") {
        Fixture f;
        populate(f);
        {
            Index ix(f);
            ix.put(f, 1, 8192, 8192, 3, 0, false); // inside file 1's [0, 20000)
        }
        auto rep = check(f, false);
        CHECK(rep.at(FsckCheck::extent_overlap).count == 1);
        CHECK(rep.problems() == 1);
        rep = check(f, true);
        CHECK(rep.at(FsckCheck::extent_overlap).repaired == 1);
        CHECK(check(f, false).problems() == 0);
    }

    TEST_CASE("store::fsck_cache_dir: a dirty extent out of range is noted in lost+found; a "
              "clean one is stale (a live shrink leaves them)") {
        Fixture f;
        populate(f);
        const std::uint64_t stale = check(f, false).at(FsckCheck::extent_stale).count;
        {
            Index ix(f);
            meta::ExtentValue v;
            v.bucket = 40; // past the 8 buckets
            v.len = 4096;
            v.flags = meta::kExtentDirty;
            v.csums = {1};
            auto batch = ix.ms->batch();
            batch.put(meta::Cf::extents, meta::extent_key(2, 40960), meta::encode(v));
            v.flags = 0;
            batch.put(meta::Cf::extents, meta::extent_key(3, 4096), meta::encode(v));
            REQUIRE(ix.ms->write(batch, true));
        }
        auto rep = check(f, false);
        CHECK(rep.at(FsckCheck::extent_stale).count == stale + 1);
        CHECK(rep.at(FsckCheck::extent_range).count == 1);
        rep = check(f, true);
        CHECK(rep.at(FsckCheck::extent_range).repaired == 1);
        REQUIRE(rep.saved.size() == 1);
        const std::string txt = slurp(f.dir + "/lost+found/fsck-2-36864.txt");
        CHECK(txt.find("could not be read") != std::string::npos);
        {
            Index ix(f); // file 2's other dirty extent keeps its dirty entry
            CHECK(ix.has(meta::Cf::dirty, meta::dirty_key(2, 0)));
            CHECK(ix.has(meta::Cf::extents, meta::extent_key(2, 18192)));
        }
        CHECK(check(f, false).problems() == 0);
    }

    TEST_CASE("store::fsck_cache_dir: a damaged kept listing is dropped whole, a damaged "
              "attribute record alone, the others stay") {
        Fixture f;
        populate(f);
        const meta::FileKey good{9, 100}, bad_value{9, 200}, bad_record{9, 300};
        const meta::FileKey good_attr{9, 7}, bad_attr{9, 8};
        {
            Index ix(f);
            auto b = ix.ms->batch();
            meta::AttrRecord a;
            a.mode = S_IFREG | 0644;
            b.put(meta::Cf::attrs, meta::file_key(good_attr), meta::encode(a));
            b.put(meta::Cf::attrs, meta::file_key(bad_attr), meta::encode(a) + "junk");
            for (const auto& dir : {good, bad_value, bad_record}) {
                b.put(meta::Cf::dirs, meta::file_key(dir), meta::encode(meta::DirRecord{1, 2, 1}));
                b.put(meta::Cf::dentries, meta::dentry_key(dir, "a"),
                      meta::encode(meta::DentryValue{{9, 7}, DT_REG}));
            }
            b.put(meta::Cf::dentries, meta::dentry_key(bad_value, "b"), "junk");
            b.put(meta::Cf::dirs, meta::file_key(bad_record), "junk");
            REQUIRE(ix.ms->write(b, true));
        }
        FsckReport rep = check(f, false);
        CHECK(rep.at(FsckCheck::listings).count == 3);
        CHECK(rep.problems() == 3);
        rep = check(f, true);
        CHECK(rep.at(FsckCheck::listings).repaired == 3);
        {
            Index ix(f);
            CHECK(ix.has(meta::Cf::attrs, meta::file_key(good_attr)));
            CHECK_FALSE(ix.has(meta::Cf::attrs, meta::file_key(bad_attr)));
            CHECK(ix.has(meta::Cf::dirs, meta::file_key(good)));
            CHECK(ix.has(meta::Cf::dentries, meta::dentry_key(good, "a")));
            for (const auto& dir : {bad_value, bad_record}) {
                CHECK_FALSE(ix.has(meta::Cf::dirs, meta::file_key(dir)));
                CHECK_FALSE(ix.has(meta::Cf::dentries, meta::dentry_key(dir, "a")));
            }
        }
        CHECK(check(f, false).problems() == 0);
    }

    TEST_CASE("store::fsck_cache_dir refuses a cache in use, naming the process") {
        Fixture f;
        // A child takes the index LOCK as a mount's RocksDB does (an fcntl
        // lock: this process would not see its own).
        int ready[2];
        REQUIRE(::pipe(ready) == 0);
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            const int fd = ::open((f.dir + "/index/LOCK").c_str(), O_RDWR);
            struct flock fl {};
            fl.l_type = F_WRLCK;
            fl.l_whence = SEEK_SET;
            const char ok = fd >= 0 && ::fcntl(fd, F_SETLK, &fl) == 0 ? 'y' : 'n';
            (void)!::write(ready[1], &ok, 1);
            ::pause();
            ::_exit(0);
        }
        char ok = 0;
        REQUIRE(::read(ready[0], &ok, 1) == 1);
        auto r = fsck_cache_dir(f.dir, false);
        ::kill(child, SIGKILL);
        ::waitpid(child, nullptr, 0);
        ::close(ready[0]);
        ::close(ready[1]);
        REQUIRE(ok == 'y');
        REQUIRE_FALSE(r);
        CHECK(r.error().code == Errc::Foreign);
        CHECK(r.error().message.find("in use by a mount (process " + std::to_string(child)) !=
              std::string::npos);
        CHECK_FALSE(fsck_cache_dir(f.tmp / "nothing", false));
    }
}
