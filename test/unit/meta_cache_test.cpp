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
    void record(const std::function<void()>& during = [] {}) {
        const int fd = ::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        auto rec = names->record_listing(fd, st);
        REQUIRE(rec);
        DIR* d = ::fdopendir(fd);
        REQUIRE(d != nullptr);
        bool first = true;
        while (const dirent* e = ::readdir(d)) {
            rec->add(e->d_name, e->d_ino, e->d_type);
            if (first)
                during();
            first = false;
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

    f.touch("new");
    struct stat child {};
    REQUIRE(::lstat((f.tree + "/new").c_str(), &child) == 0);
    f.names->name_added(k, f.dir_stat(), "new", child);
    REQUIRE(::unlink((f.tree + "/goes").c_str()) == 0);
    f.names->name_removed(k, f.dir_stat(), "goes");

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
