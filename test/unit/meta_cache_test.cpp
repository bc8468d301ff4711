// Directory listings in the index (cache/meta_cache.hpp): a listing read in
// full from an unchanged directory is whole; one whose directory changed
// while it was read is not; offsets resume where a listing was cut, across
// calls; names changed through the mount keep a whole listing right; and
// the names codec refuses damaged records.
#include "overcache/cache/meta_cache.hpp"
#include "overcache/meta/names_codec.hpp"
#include "tmp_dir.hpp"

#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <map>
#include <set>
#include <thread>
#include <chrono>
#include <functional>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace overcache;
using cache::MetaCache;

namespace {

struct Fixture {
    test::TmpDir tmp{"overcache-meta-cache"};
    std::string tree = tmp.path() + "/tree";
    std::unique_ptr<meta::MetaStore> store;
    std::unique_ptr<MetaCache> names;

    // `racy`: how recent a change keeps a listing from being whole (none
    // by default, so that a tree made just now lists whole).
    explicit Fixture(std::chrono::nanoseconds racy = std::chrono::nanoseconds(0)) : racy_(racy) {
        REQUIRE(::mkdir(tree.c_str(), 0755) == 0);
        open_index();
    }
    std::chrono::nanoseconds racy_;
    void open_index() {
        names.reset();
        store.reset();
        meta::StoreOptions o;
        o.create_if_missing = true;
        auto ms = meta::MetaStore::open(tmp.path() + "/index", o);
        REQUIRE_MESSAGE(ms, (ms ? "" : to_string(ms.error())));
        store = std::move(*ms);
        // The identity the data path would give: (st_dev, st_ino).
        names = std::make_unique<MetaCache>(
            *store,
            [](int, const struct stat& st) {
                return meta::FileKey{static_cast<std::uint64_t>(st.st_dev), st.st_ino};
            },
            [](dev_t d, ino_t i) {
                return std::optional<meta::FileKey>(meta::FileKey{static_cast<std::uint64_t>(d), i});
            },
            racy_);
    }
    void touch(const std::string& name) {
        const int fd = ::open((tree + "/" + name).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        ::close(fd);
    }
    struct stat dir_stat() const {
        struct stat st {};
        REQUIRE(::lstat(tree.c_str(), &st) == 0);
        return st;
    }
    meta::FileKey dir_key() const {
        const struct stat st = dir_stat();
        return {static_cast<std::uint64_t>(st.st_dev), st.st_ino};
    }
    // Reads the directory as readdir does and records it; `during` runs
    // between the first entry and the end.
    void record(const std::function<void()>& during = [] {}) { record_at(tree, 1, false, during); }
    // Records the directory at `path`; `during` runs after its first
    // `after` entries were added (and written to the index, with `flush`).
    void record_at(const std::string& path, int after, bool flush,
                   const std::function<void()>& during) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        auto rec = names->record_listing(fd, st);
        REQUIRE(rec);
        DIR* d = ::fdopendir(fd);
        REQUIRE(d != nullptr);
        int n = 0;
        while (const dirent* e = ::readdir(d)) {
            rec->add(e->d_name, e->d_ino, e->d_type);
            if (++n == after && during) {
                if (flush)
                    rec->flush_for_test();
                during();
            }
        }
        struct stat now {};
        REQUIRE(::fstat(::dirfd(d), &now) == 0);
        rec->finish(now);
        ::closedir(d);
    }
    // The listing from `off`, at most `max` entries; the offset after them.
    std::vector<std::string> list(off_t off, std::size_t max, off_t* next = nullptr) {
        std::vector<std::string> out;
        off_t last = off;
        const int err = names->list(dir_key(), off, [&](const MetaCache::Entry& e) {
            if (out.size() == max)
                return false;
            CHECK(e.next > last); // offsets only grow
            last = e.next;
            out.emplace_back(e.name);
            return true;
        });
        CHECK(err == 0);
        if (next)
            *next = last;
        return out;
    }
};

std::set<std::string> as_set(const std::vector<std::string>& v) {
    return {v.begin(), v.end()};
}

} // namespace

TEST_CASE("a listing read whole from an unchanged directory is whole, and lists it") {
    Fixture f;
    for (int i = 0; i < 1500; ++i) // past a batch of entries
        f.touch("f" + std::to_string(i));
    CHECK_FALSE(f.names->whole(f.dir_key()));
    CHECK(f.names->list(f.dir_key(), 0, [](const MetaCache::Entry&) { return true; }) == ENOENT);
    f.record();
    auto rec = f.names->whole(f.dir_key());
    REQUIRE(rec);
    CHECK(rec->entries == 1502); // with . and ..
    std::set<std::string> want{".", ".."};
    for (int i = 0; i < 1500; ++i)
        want.insert("f" + std::to_string(i));
    CHECK(as_set(f.list(0, 100000)) == want);
    CHECK(f.names->stats().listings_recorded == 1);

    // Unchanged since: nothing to record again.
    const int fd = ::open(f.tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const struct stat st = f.dir_stat();
    CHECK(f.names->record_listing(fd, st) == nullptr);
    ::close(fd);

    // It outlives the index's closing (a remount).
    f.open_index();
    CHECK(as_set(f.list(0, 100000)) == want);
}

TEST_CASE("offsets resume a listing where it was cut, across calls, in any order") {
    Fixture f;
    for (int i = 0; i < 300; ++i)
        f.touch("name-" + std::to_string(i));
    f.record();
    const auto all = f.list(0, 100000);
    REQUIRE(all.size() == 302);
    // In slices of 7, each call resuming at the offset the last one gave.
    std::vector<std::string> sliced;
    off_t off = 0;
    std::map<std::size_t, off_t> offset_at; // position -> offset resuming there
    for (;;) {
        offset_at[sliced.size()] = off;
        const auto part = f.list(off, 7, &off);
        if (part.empty())
            break;
        sliced.insert(sliced.end(), part.begin(), part.end());
    }
    CHECK(sliced == all);
    // telldir/seekdir: an offset given earlier still resumes at its place.
    for (auto [pos, o] : offset_at) {
        CAPTURE(pos);
        const auto rest = f.list(o, 3);
        for (std::size_t i = 0; i < rest.size(); ++i)
            CHECK(rest[i] == all[pos + i]);
    }
}

TEST_CASE("a directory that changes while it is read, or just before, leaves its listing not "
          "whole") {
    // Timestamps are coarse: a change in the tick the reading began in may
    // leave them as they were. Within the window, the listing waits.
    Fixture f(std::chrono::milliseconds(300));
    f.touch("a");
    f.record(); // changed just now: not whole yet
    CHECK_FALSE(f.names->whole(f.dir_key()));
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    f.record([&] { f.touch("late"); }); // changed while read
    CHECK_FALSE(f.names->whole(f.dir_key()));
    CHECK(f.names->stats().listings_changed == 2);
    // A later reading, once the directory has settled, records it.
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    f.record();
    REQUIRE(f.names->whole(f.dir_key()));
    CHECK(as_set(f.list(0, 100)) == std::set<std::string>{".", "..", "a", "late"});
}

TEST_CASE("a reading drops the names gone since, and a handle listing the old one lists on") {
    Fixture f;
    f.touch("a");
    f.touch("b");
    f.record();
    REQUIRE(f.names->whole(f.dir_key()));
    REQUIRE(::unlink((f.tree + "/b").c_str()) == 0);
    f.touch("c");

    const int fd = ::open(f.tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const struct stat st = f.dir_stat();
    CHECK_FALSE(f.names->current_listing(fd, st)); // changed since
    auto rec = f.names->record_listing(fd, st);
    REQUIRE(rec);
    rec->add("a", 1, DT_REG);
    rec->flush_for_test();
    // Not whole for a new opendir; a handle that opened it whole still
    // lists (what it lists may change under it, as a directory does).
    CHECK(f.names->list(f.dir_key(), 0, [](const MetaCache::Entry&) { return true; }) == ENOENT);
    std::set<std::string> during;
    CHECK(f.names->list(
              f.dir_key(), 0,
              [&](const MetaCache::Entry& e) {
                  during.emplace(e.name);
                  return true;
              },
              false) == 0);
    CHECK(during == std::set<std::string>{".", "..", "a", "b"});
    rec.reset();
    ::close(fd);

    f.record();
    REQUIRE(f.names->whole(f.dir_key()));
    CHECK(as_set(f.list(0, 100)) == std::set<std::string>{".", "..", "a", "c"});
    CHECK(f.names->find(f.dir_key(), "b").state == MetaCache::Found::State::absent);
}

TEST_CASE("one recording of a directory at a time") {
    Fixture f;
    const int fd = ::open(f.tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const struct stat st = f.dir_stat();
    auto first = f.names->record_listing(fd, st);
    REQUIRE(first);
    CHECK(f.names->record_listing(fd, st) == nullptr);
    first.reset(); // dropped unfinished: not whole, and free to record again
    CHECK_FALSE(f.names->whole(f.dir_key()));
    CHECK(f.names->record_listing(fd, st) != nullptr);
    ::close(fd);
}

TEST_CASE("names changed through the mount keep a whole listing whole and right") {
    Fixture f;
    f.touch("stays");
    f.touch("goes");
    f.record();
    const meta::FileKey k = f.dir_key();

    struct stat was = f.dir_stat();
    f.touch("new");
    struct stat child {};
    REQUIRE(::lstat((f.tree + "/new").c_str(), &child) == 0);
    f.names->name_added(k, was, f.dir_stat(), "new", child);
    was = f.dir_stat();
    REQUIRE(::unlink((f.tree + "/goes").c_str()) == 0);
    f.names->name_removed(k, was, f.dir_stat(), "goes");

    auto rec = f.names->whole(k);
    REQUIRE(rec);
    const struct stat now = f.dir_stat();
    CHECK(rec->mtime_ns == now.st_mtim.tv_sec * 1000000000ll + now.st_mtim.tv_nsec);
    CHECK(as_set(f.list(0, 100)) == std::set<std::string>{".", "..", "stays", "new"});
    auto found = f.names->find(k, "new");
    CHECK(found.state == MetaCache::Found::State::present);
    CHECK(found.value.child.ino == child.st_ino);
    CHECK(found.value.type == DT_REG);
    CHECK(f.names->find(k, "goes").state == MetaCache::Found::State::absent);

    // A change behind the mount between the kept listing and ours: the
    // listing cannot say what else changed, and is whole no more.
    was = f.dir_stat();
    std::this_thread::sleep_for(std::chrono::milliseconds(20)); // a new mtime: clocks are coarse
    f.touch("behind");
    const struct stat seen = f.dir_stat();
    f.touch("ours");
    REQUIRE(::lstat((f.tree + "/ours").c_str(), &child) == 0);
    CHECK(seen.st_mtim.tv_nsec != was.st_mtim.tv_nsec);
    f.names->name_added(k, seen, f.dir_stat(), "ours", child);
    CHECK_FALSE(f.names->whole(k));
    CHECK(f.names->find(k, "ours").state == MetaCache::Found::State::unknown);
    f.record();
    REQUIRE(f.names->whole(k));

    f.names->forget_listing(k);
    CHECK_FALSE(f.names->whole(k));
    CHECK(f.names->find(k, "stays").state == MetaCache::Found::State::unknown);
    CHECK(f.names->list(k, 0, [](const MetaCache::Entry&) { return true; }) == ENOENT);
}

TEST_CASE("the names codec: keys in hash order, damaged records refused") {
    const meta::FileKey dir{7, 42};
    const std::string k = meta::dentry_key(dir, "hello");
    meta::DentryKey d;
    REQUIRE(meta::decode_dentry_key(k, d));
    CHECK(d.dir == dir);
    CHECK(d.name == "hello");
    CHECK(d.hash == meta::name_hash("hello"));
    CHECK(d.hash >= 1);
    CHECK(d.hash < (std::uint64_t{1} << 62) + 2);
    CHECK(k >= meta::dentry_seek_key(dir, d.hash));
    CHECK(k < meta::dentry_seek_key(dir, d.hash + 1));
    CHECK(k < meta::dentry_key_end(dir));
    CHECK(meta::dentry_key_end(dir) < meta::dentry_seek_key({7, 43}, 0));
    // A key whose hash does not match its name is damaged.
    std::string bad = k;
    bad.back() = 'X';
    CHECK_FALSE(meta::decode_dentry_key(bad, d));
    CHECK_FALSE(meta::decode_dentry_key(k.substr(0, 24), d)); // no name

    const meta::DentryValue v{{1, 2}, DT_DIR};
    const std::string ev = meta::encode(v);
    REQUIRE(meta::decode_dentry(ev));
    CHECK(*meta::decode_dentry(ev) == v);
    for (std::size_t n = 0; n < ev.size(); ++n)
        CHECK_FALSE(meta::decode_dentry(ev.substr(0, n)));
    CHECK_FALSE(meta::decode_dentry(ev + "x"));
    std::string wrong_layout = ev;
    wrong_layout[0] = 9;
    CHECK_FALSE(meta::decode_dentry(wrong_layout));

    const meta::DirRecord r{123, 456, 789};
    const std::string er = meta::encode(r);
    REQUIRE(meta::decode_dir_record(er));
    CHECK(*meta::decode_dir_record(er) == r);
    for (std::size_t n = 0; n < er.size(); ++n)
        CHECK_FALSE(meta::decode_dir_record(er.substr(0, n)));
    CHECK_FALSE(meta::decode_dir_record(er + "x"));
}

TEST_CASE("attributes in the index: kept across a reopen; a listing vouches only for those seen "
          "since its reading began") {
    Fixture f;
    f.touch("old");
    f.touch("fresh");
    REQUIRE(::symlink("old", (f.tree + "/link").c_str()) == 0);
    auto lstat_of = [&](const std::string& name) {
        struct stat st {};
        REQUIRE(::lstat((f.tree + "/" + name).c_str(), &st) == 0);
        return st;
    };
    auto key_of = [](const struct stat& st) {
        return meta::FileKey{static_cast<std::uint64_t>(st.st_dev), st.st_ino};
    };
    const struct stat old_st = lstat_of("old");
    const struct stat fresh_st = lstat_of("fresh");
    const struct stat link_st = lstat_of("link");
    // "old" is seen before the listing is read: it may be a file that had
    // the number before, as far as the listing knows.
    f.names->note_attr(key_of(old_st), old_st);
    f.record();
    f.names->note_attr(key_of(fresh_st), fresh_st);
    f.names->note_attr(key_of(link_st), link_st, "old");
    auto rec = f.names->whole(f.dir_key());
    REQUIRE(rec);

    REQUIRE(f.names->attr(key_of(old_st)));
    CHECK_FALSE(f.names->vouched_attr(*rec, key_of(old_st)));
    auto fresh = f.names->vouched_attr(*rec, key_of(fresh_st));
    REQUIRE(fresh);
    CHECK(fresh->st.st_ino == fresh_st.st_ino);
    CHECK(fresh->st.st_mode == fresh_st.st_mode);
    CHECK(fresh->st.st_size == fresh_st.st_size);
    CHECK(fresh->st.st_uid == fresh_st.st_uid);
    CHECK(fresh->st.st_nlink == fresh_st.st_nlink);
    CHECK(fresh->st.st_mtim.tv_sec == fresh_st.st_mtim.tv_sec);
    CHECK(fresh->st.st_mtim.tv_nsec == fresh_st.st_mtim.tv_nsec);
    CHECK(fresh->st.st_ctim.tv_nsec == fresh_st.st_ctim.tv_nsec);
    CHECK(fresh->target.empty());

    // Seen again: vouched now. A name made through the mount comes with its
    // attributes, in the same batch.
    f.names->note_attr(key_of(old_st), old_st);
    CHECK(f.names->vouched_attr(*rec, key_of(old_st)));
    const struct stat before_made = f.dir_stat();
    f.touch("made");
    const struct stat made_st = lstat_of("made");
    f.names->name_added(f.dir_key(), before_made, f.dir_stat(), "made", made_st);
    rec = f.names->whole(f.dir_key());
    REQUIRE(rec);
    CHECK(f.names->vouched_attr(*rec, key_of(made_st)));
    CHECK(f.names->stats().attrs_recorded == 4);

    f.open_index(); // a new daemon over the same index
    rec = f.names->whole(f.dir_key());
    REQUIRE(rec);
    auto link = f.names->vouched_attr(*rec, key_of(link_st));
    REQUIRE(link);
    CHECK(S_ISLNK(link->st.st_mode));
    CHECK(link->target == "old");
    CHECK(f.names->vouched_attr(*rec, key_of(fresh_st)));
    // Read again, the listing vouches for nothing seen before.
    f.touch("later");
    f.record();
    rec = f.names->whole(f.dir_key());
    REQUIRE(rec);
    CHECK_FALSE(f.names->vouched_attr(*rec, key_of(fresh_st)));
    CHECK(f.names->attr(key_of(fresh_st)));
    f.names->forget_attr(key_of(fresh_st));
    CHECK_FALSE(f.names->attr(key_of(fresh_st)));
}

TEST_CASE("the attributes codec: round trip, damaged records refused; a listing from before "
          "attributes vouches for none") {
    meta::AttrRecord r;
    r.mode = S_IFLNK | 0777;
    r.uid = 1000;
    r.gid = 100;
    r.blksize = 4096;
    r.nlink = 1;
    r.size = 5;
    r.blocks = 0;
    r.rdev = 0;
    r.atime_ns = -5; // before 1970
    r.mtime_ns = 1700000000123456789;
    r.ctime_ns = 1700000000987654321;
    r.seen_seq = 77;
    r.xattrs = meta::kXattrsSome;
    r.target = "a/b/c";
    const std::string e = meta::encode(r);
    REQUIRE(meta::decode_attr_record(e));
    CHECK(*meta::decode_attr_record(e) == r);
    for (std::size_t n = 0; n < e.size(); ++n)
        CHECK_FALSE(meta::decode_attr_record(e.substr(0, n)));
    CHECK_FALSE(meta::decode_attr_record(e + "x"));
    std::string wrong_layout = e;
    wrong_layout[0] = 9;
    CHECK_FALSE(meta::decode_attr_record(wrong_layout));
    meta::AttrRecord file = r;
    file.mode = S_IFREG | 0644; // a target on a regular file: damaged
    CHECK_FALSE(meta::decode_attr_record(meta::encode(file)));
    file.target.clear();
    CHECK(meta::decode_attr_record(meta::encode(file)));
    meta::AttrRecord huge = r;
    huge.target.assign(5000, 'x');
    CHECK_FALSE(meta::decode_attr_record(meta::encode(huge)));
    // The xattrs byte: one of four values.
    constexpr std::size_t kXattrsAt = 1 + 4 * 4 + 9 * 8;
    std::string bad_xattrs = e;
    bad_xattrs[kXattrsAt] = 4;
    CHECK_FALSE(meta::decode_attr_record(bad_xattrs));
    // Layout 1 (before the xattrs byte) still reads, knowing nothing of them.
    std::string attr_v1 = e;
    attr_v1.erase(kXattrsAt, 1);
    attr_v1[0] = 1;
    auto old_attr = meta::decode_attr_record(attr_v1);
    REQUIRE(old_attr);
    CHECK(old_attr->xattrs == meta::kXattrsUnknown);
    CHECK(old_attr->target == r.target);
    CHECK(old_attr->ctime_ns == r.ctime_ns);

    // Layout 1 of a DirRecord (no sequence number) still reads, vouching
    // for no attributes.
    std::string v1 = meta::encode(meta::DirRecord{1, 2, 3, 4});
    v1.resize(v1.size() - 8);
    v1[0] = 1;
    auto old = meta::decode_dir_record(v1);
    REQUIRE(old);
    CHECK(old->entries == 3);
    CHECK(old->began_seq == ~std::uint64_t{0});
    std::string v2_short = meta::encode(meta::DirRecord{1, 2, 3, 4});
    v2_short.resize(v2_short.size() - 8); // layout 2 without its field
    CHECK_FALSE(meta::decode_dir_record(v2_short));
}

namespace {

// Ten directories a0..a9 of 200 files each, each listed (a0 first) and
// its files' attributes recorded after its listing: a0's are the oldest.
struct Aged : Fixture {
    static constexpr int kDirs = 10, kFiles = 200;
    std::string dir(int i) const { return tree + "/a" + std::to_string(i); }
    static meta::FileKey key_of(const struct stat& st) {
        return {static_cast<std::uint64_t>(st.st_dev), st.st_ino};
    }
    meta::FileKey dir_key_of(int i) const {
        struct stat st {};
        REQUIRE(::lstat(dir(i).c_str(), &st) == 0);
        return key_of(st);
    }
    meta::FileKey file_key_of(int i, int j) const {
        struct stat st {};
        REQUIRE(::lstat((dir(i) + "/f" + std::to_string(j)).c_str(), &st) == 0);
        return key_of(st);
    }
    // Records directory i's listing; `during` runs after half of it was
    // written to the index, before its end (nullptr: straight through).
    void record_dir(int i, const std::function<void()>& during = nullptr) {
        record_at(dir(i), kFiles / 2, true, during);
    }
    void note_files(int i) {
        for (int j = 0; j < kFiles; ++j) {
            struct stat st {};
            REQUIRE(::lstat((dir(i) + "/f" + std::to_string(j)).c_str(), &st) == 0);
            names->note_attr(key_of(st), st);
        }
    }
    Aged() {
        for (int i = 0; i < kDirs; ++i) {
            REQUIRE(::mkdir(dir(i).c_str(), 0755) == 0);
            for (int j = 0; j < kFiles; ++j)
                touch("a" + std::to_string(i) + "/f" + std::to_string(j));
        }
        for (int i = 0; i < kDirs; ++i) {
            record_dir(i);
            note_files(i);
        }
    }
    std::size_t listed(int i) {
        std::size_t n = 0;
        CHECK(names->list(dir_key_of(i), 0, [&](const MetaCache::Entry&) {
            ++n;
            return true;
        }) == 0);
        return n;
    }
};

} // namespace

TEST_CASE("trim drops the listings and attributes read longest ago until under the target; "
          "the newest and pinned trees stay, and the space is given back") {
    Aged f;
    REQUIRE(f.store->flush()); // table files: sizes the estimate sees
    const std::uint64_t used = f.names->bytes();
    REQUIRE(used > 0);
    // a2 is pinned (a tree: its listing, then its files).
    auto r = f.names->trim(used / 2, {f.dir_key_of(2)});
    REQUIRE(r);
    CHECK(r->listings >= 3);
    CHECK(r->attrs >= 3 * Aged::kFiles);
    CHECK(f.names->bytes() < used);
    MESSAGE("trim: " << used << " -> " << f.names->bytes() << " bytes (target " << used / 2
                     << "), dropped " << r->listings << " listings, " << r->attrs << " attrs");
    // The oldest went, listing and attributes.
    CHECK_FALSE(f.names->whole(f.dir_key_of(0)));
    CHECK(f.names->list(f.dir_key_of(0), 0, [](const MetaCache::Entry&) { return true; }) ==
          ENOENT);
    CHECK_FALSE(f.names->attr(f.file_key_of(0, 7)));
    CHECK(f.names->find(f.dir_key_of(1), "f3").state == MetaCache::Found::State::unknown);
    // The pinned tree, though among the oldest, stays whole.
    auto pinned = f.names->whole(f.dir_key_of(2));
    REQUIRE(pinned);
    CHECK(f.listed(2) == Aged::kFiles + 2);
    CHECK(f.names->vouched_attr(*pinned, f.file_key_of(2, 7)));
    // The newest stay, whole and vouching for their files.
    auto newest = f.names->whole(f.dir_key_of(9));
    REQUIRE(newest);
    CHECK(f.listed(9) == Aged::kFiles + 2);
    CHECK(f.names->vouched_attr(*newest, f.file_key_of(9, 7)));
    CHECK(f.names->stats().listings_dropped == r->listings);
    CHECK(f.names->stats().attrs_dropped == r->attrs);
    // Under the target: nothing to do.
    auto again = f.names->trim(used * 2, {});
    REQUIRE(again);
    CHECK(again->listings + again->attrs == 0);
}

TEST_CASE("trim re-checks each record before it drops it: read again or written again since "
          "the cut, it stays") {
    Aged f;
    const meta::FileKey kept_attr = f.file_key_of(3, 5);
    const meta::FileKey a1 = f.dir_key_of(1);
    bool relisted = false, reseen = false;
    f.names->before_trim_drop_for_test = [&](const meta::FileKey& k) {
        // Read by the trim as older than its cut, not dropped yet: a1 is
        // listed again, one file of a3 is seen again.
        if (k == a1 && !relisted) {
            relisted = true;
            f.touch("a1/new");
            ::usleep(10000);
            f.record_dir(1);
        } else if (k == kept_attr && !reseen) {
            reseen = true;
            struct stat st {};
            REQUIRE(::lstat((f.dir(3) + "/f5").c_str(), &st) == 0);
            f.names->note_attr(kept_attr, st);
        }
    };
    auto r = f.names->trim(1, {}); // everything older than now
    REQUIRE(r);
    CHECK(relisted);
    CHECK(reseen);
    CHECK(r->listings >= Aged::kDirs - 1);
    REQUIRE(f.names->whole(a1));
    CHECK(f.listed(1) == Aged::kFiles + 3);
    CHECK(f.names->attr(kept_attr));
    CHECK_FALSE(f.names->attr(f.file_key_of(3, 6)));
    CHECK_FALSE(f.names->whole(f.dir_key_of(3)));
}

TEST_CASE("trim leaves a listing being recorded alone: it ends whole with every name") {
    Aged f;
    REQUIRE(::unlink((f.dir(4) + "/f0").c_str()) == 0); // changed: read again below
    ::usleep(10000);
    f.record_dir(4, [&] {
        // Half of a4's entries are in the index, its record not yet.
        auto r = f.names->trim(1, {});
        REQUIRE(r);
        CHECK(r->listings >= Aged::kDirs - 1);
    });
    REQUIRE(f.names->whole(f.dir_key_of(4)));
    CHECK(f.listed(4) == Aged::kFiles + 1);
}

TEST_CASE("trim keeps the listing an open handle serves; a handle cannot take a listing being "
          "dropped") {
    Aged f;
    const meta::FileKey a5 = f.dir_key_of(5), a6 = f.dir_key_of(6);
    auto hold = f.names->hold_listing(a5);
    REQUIRE(hold);
    bool tried = false;
    f.names->while_dropping_for_test = [&](const meta::FileKey& k) {
        if (k == a6 && !tried) {
            tried = true;
            CHECK_FALSE(f.names->hold_listing(a6));
        }
    };
    auto r = f.names->trim(1, {});
    REQUIRE(r);
    CHECK(tried);
    REQUIRE(f.names->whole(a5));
    CHECK(f.listed(5) == Aged::kFiles + 2);
    CHECK_FALSE(f.names->whole(a6));
    CHECK_FALSE(f.names->hold_listing(a6)); // gone: list it from the backing
    // Released, it goes at the next trim.
    hold.reset();
    r = f.names->trim(1, {});
    REQUIRE(r);
    CHECK_FALSE(f.names->whole(a5));
}
