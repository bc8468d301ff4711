// MetaCache: the one owner of the backing's directory listings kept in the
// index (the dentries and dirs families, meta/names_codec.hpp). A listing
// is recorded while the mount reads the directory from the backing, and
// counts as whole only if the directory did not change meanwhile (the same
// mtime and ctime at its end as at its start) and had not changed just
// before: timestamps are coarse (a kernel tick, or a second on some
// backings), so a change in the same tick as the reading would go unseen,
// git's "racy" entries. A directory changed within `racy_window` of the
// reading is listed again at its next opendir. Changes made through the
// mount keep a whole listing right (a name added or removed at once). The
// listings answer `ls` while the backing is offline, and say for sure that
// a name is not there.
//
// It also keeps each file's attributes (and a symlink's target) as the
// mount last saw them, so that a name in a whole listing can be looked up
// while the backing is offline even if the mount never looked it up
// before. A listing vouches only for attributes seen since its reading
// began: an older record may be of a file that had the inode number before
// (deleted behind the mount, the number reused).
//
// Keys are backing identities (meta::FileKey), made by the data path's
// key_of from an open descriptor; a descriptor-less caller (the backing
// offline) uses known_key, which knows every filesystem key_of has seen.
#pragma once

#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/meta/names_codec.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <sys/types.h>
#include <unordered_set>
#include <utility>
#include <vector>

namespace overcache::cache {

class MetaCache {
public:
    using KeyOf = std::function<meta::FileKey(int fd, const struct stat& st)>;
    using KnownKey = std::function<std::optional<meta::FileKey>(dev_t dev, ino_t ino)>;
    MetaCache(meta::MetaStore& meta, KeyOf key_of, KnownKey known_key,
              std::chrono::nanoseconds racy_window = std::chrono::seconds(2));

    meta::FileKey key_of(int fd, const struct stat& st) const { return key_of_(fd, st); }
    std::optional<meta::FileKey> known_key(dev_t dev, ino_t ino) const {
        return known_key_(dev, ino);
    }

    // A listing being read from the backing. Entries are written as they
    // come, in batches; only finish() on an unchanged directory makes the
    // listing whole. Dropped unfinished, the listing stays not whole.
    class Recorder {
    public:
        ~Recorder();
        Recorder(const Recorder&) = delete;
        Recorder& operator=(const Recorder&) = delete;
        void add(std::string_view name, ino_t ino, unsigned char type);
        // The listing reached its end; `now` is the directory's lstat now.
        // Whole if it matches the one the recording began with.
        void finish(const struct stat& now);
        // Writes what was added so far (tests: a reading seen half-way).
        void flush_for_test() { flush(); }

    private:
        friend class MetaCache;
        Recorder(MetaCache& owner, meta::FileKey dir, const struct stat& began);
        void flush();
        MetaCache& owner_;
        const meta::FileKey dir_;
        const std::int64_t mtime_ns_, ctime_ns_;
        const std::int64_t began_ns_; // the clock when the reading began
        const std::uint64_t began_seq_; // the index's sequence number then
        meta::Batch batch_;
        std::uint64_t entries_ = 0;
        std::unordered_set<std::uint64_t> seen_; // name hashes read
        bool failed_ = false;
    };
    // Begins recording the listing of the directory `dir_fd` (lstat `st`)
    // about to be read from its start. nullptr: nothing to record (the
    // index has it whole as of this mtime and ctime, or another listing of
    // it is being recorded).
    std::unique_ptr<Recorder> record_listing(int dir_fd, const struct stat& st);

    // The key of the directory `dir_fd` (lstat `st`) if the index holds its
    // listing whole as of st's mtime and ctime: it can be listed from here.
    std::optional<meta::FileKey> current_listing(int dir_fd, const struct stat& st);
    // Whether `dir` has a whole listing (and its record: the directory's
    // mtime and ctime it is right for).
    std::optional<meta::DirRecord> whole(const meta::FileKey& dir) const;
    struct Entry {
        std::string_view name;
        meta::DentryValue value;
        off_t next = 0; // the offset that resumes after this entry
    };
    // The entries of `dir`'s whole listing from offset `off` (0: its start)
    // in offset order, while `emit` returns true. ENOENT: no whole listing
    // (with require_whole; a handle that found it whole at its opendir goes
    // on listing it while it is read again, as a directory that changes
    // under a reader); EIO: the index failed.
    int list(const meta::FileKey& dir, off_t off, const std::function<bool(const Entry&)>& emit,
             bool require_whole = true);
    // `name` in `dir`'s whole listing: there (with its entry), not there,
    // or unknown (no whole listing to ask, or the index failed).
    struct Found {
        enum class State { unknown, absent, present } state = State::unknown;
        meta::DentryValue value;
    };
    Found find(const meta::FileKey& dir, std::string_view name);

    // A name made or dropped through the mount in directory `dir`, whose
    // lstat was `dir_before` just before the change and is `dir_now` after
    // it. A whole listing as of `dir_before`'s times stays whole, as of
    // `dir_now`'s; one of other times is no longer whole (the directory
    // changed behind the mount too, and what else changed is unknown). The
    // entry is written either way (a recording under way sees the
    // directory change and stays not whole). `child`, the new name's lstat,
    // was asked for after `child_seen_ns` (0: now).
    void name_added(const meta::FileKey& dir, const struct stat& dir_before,
                    const struct stat& dir_now, std::string_view name, const struct stat& child,
                    std::int64_t child_seen_ns = 0);
    void name_removed(const meta::FileKey& dir, const struct stat& dir_before,
                      const struct stat& dir_now, std::string_view name);
    // `dir` is gone (rmdir through the mount): its listing goes with it, so
    // that a directory that gets its inode number later never shows it.
    void forget_listing(const meta::FileKey& dir);

    // ---- attributes ------------------------------------------------------
    // `st` is the lstat of the file `key` as the backing gave it now (and
    // `target` a symlink's target, if read): recorded.
    // `xattrs`: what a listxattr said of it then (meta::kXattrs*).
    void note_attr(const meta::FileKey& key, const struct stat& st, std::string_view target = {},
                   std::int64_t seen_ns = 0, std::uint8_t xattrs = meta::kXattrsUnknown);
    struct SeenAttr {
        struct stat st {}; // st_dev 0: the caller knows the running system's
        std::int64_t seen_ns = 0; // the wall clock when the backing gave them
        std::string target;
        std::uint8_t xattrs = meta::kXattrsUnknown;
    };
    // The attributes last recorded for `key`, whoever it was then.
    std::optional<SeenAttr> attr(const meta::FileKey& key) const;
    // The attributes of `child`, the entry of a name in `dir`'s whole
    // listing `rec`, if recorded since that listing's reading began.
    std::optional<SeenAttr> vouched_attr(const meta::DirRecord& rec,
                                         const meta::FileKey& child) const;
    // `key` is gone (its last name removed through the mount).
    void forget_attr(const meta::FileKey& key);

    // ---- size ------------------------------------------------------------
    // What the names and attributes take in the index (an estimate: the
    // table files and memtables of their families).
    std::uint64_t bytes() const;
    struct Trimmed {
        std::uint64_t listings = 0; // listings dropped (whole, or left unfinished)
        std::uint64_t attrs = 0;    // attribute records dropped
        std::uint64_t cut_seq = 0;  // records written before this were dropped
    };
    // Drops the listings and attribute records read longest ago (by the
    // index sequence number each was written at) until about `target`
    // bytes are left, and listings left unfinished; the listings and
    // attributes of pinned trees (`pinned`: their roots, followed down
    // through the kept listings) stay. Each record is re-read under its
    // key's lock before it goes: one written since the cut was chosen stays.
    // Ends with a compaction, so the space is given back.
    Result<Trimmed> trim(std::uint64_t target, const std::vector<meta::FileKey>& pinned);
    // An open directory handle serving `dir`'s listing from here keeps it
    // from trim() while the hold lives: a listing never loses its names
    // under a reader. Taken before the handle serves it.
    class ListingHold {
    public:
        ~ListingHold();
        ListingHold(const ListingHold&) = delete;
        ListingHold& operator=(const ListingHold&) = delete;

    private:
        friend class MetaCache;
        ListingHold(MetaCache& owner, const meta::FileKey& dir) : owner_(owner), dir_(dir) {}
        MetaCache& owner_;
        const meta::FileKey dir_;
    };
    // Null if the index does not hold `dir`'s listing whole (any more), or a
    // trim is dropping it right now: then list it from the backing.
    std::unique_ptr<ListingHold> hold_listing(const meta::FileKey& dir);
    // A trim() running stops at its next record (unmount); for good.
    void cancel_trim() noexcept { trim_cancelled_.store(true, std::memory_order_relaxed); }
    // Test seam: runs when trim() has read a record it will drop (a
    // listing's or attributes' key), before it takes the key's lock.
    std::function<void(const meta::FileKey&)> before_trim_drop_for_test;
    // Test seam: runs while trim() has marked a listing as being dropped
    // (under its key's lock), before it re-reads it.
    std::function<void(const meta::FileKey&)> while_dropping_for_test;

    struct Stats {
        std::uint64_t listings_recorded = 0; // made whole
        std::uint64_t listings_changed = 0;  // the directory changed while recorded, or just before
        std::uint64_t listings_served = 0;   // readdir calls answered from the index
        std::uint64_t attrs_recorded = 0;    // attribute records written
        std::uint64_t attrs_served = 0;      // offline answers from a recorded attribute
        std::uint64_t kept_answers = 0;      // online lookups/getattrs answered without the backing
        std::uint64_t trims = 0;             // trim() rounds that dropped something
        std::uint64_t listings_dropped = 0;  // by trim()
        std::uint64_t attrs_dropped = 0;     // by trim()
    };
    Stats stats() const;
    void note_served() noexcept;
    void note_attr_served() noexcept;
    void note_kept_answer() noexcept;

private:
    void done_recording(const meta::FileKey& dir) noexcept;
    // trim()'s drops, each re-checked under the key's lock: `dir`'s listing
    // if it is not being recorded and is unfinished or began before `cut`;
    // `key`'s attributes if written before `cut`.
    bool drop_listing(const meta::FileKey& dir, std::uint64_t cut);
    // `keys`: attribute records' keys in index order, read as written
    // before `cut`. Under every key lock, a fresh cursor re-reads them and
    // those still older go, in one batch (a Get each would read the table
    // files' filters again for every key of millions). How many went.
    std::uint64_t drop_attrs(const std::vector<std::string>& keys, std::uint64_t cut);
    // Serialises each key's read-then-write of its records (keep_whole,
    // name_added, note_attr, ...) with trim()'s re-check-then-drop. Never
    // held across anything but index reads and writes; name_added holds
    // two, taken together.
    std::mutex& key_mu(const meta::FileKey& k) const noexcept {
        return key_mu_[(k.fsid * 0x9E3779B97F4A7C15ull ^ k.ino) % key_mu_.size()];
    }
    // Into `b`: `dir`'s whole listing moved from `dir_before`'s times to
    // `dir_now`'s with `delta` entries more, or dropped if it was not as
    // of `dir_before`.
    void keep_whole(meta::Batch& b, const meta::FileKey& dir, const struct stat& dir_before,
                    const struct stat& dir_now, int delta);

    meta::MetaStore& meta_;
    const KeyOf key_of_;
    const KnownKey known_key_;
    const std::int64_t racy_ns_;
    // 16: drop_attrs holds them all at once (and TSan tracks at most 64
    // locks held by one thread).
    mutable std::array<std::mutex, 16> key_mu_; // before mu_
    std::atomic<bool> trim_cancelled_{false};
    mutable std::mutex mu_; // a leaf: no index I/O under it
    std::set<std::pair<std::uint64_t, std::uint64_t>> recording_; // guarded by mu_
    // Listings open handles serve (how many each), and those trim() is
    // dropping: one excludes the other. Guarded by mu_.
    std::map<std::pair<std::uint64_t, std::uint64_t>, unsigned> serving_;
    std::set<std::pair<std::uint64_t, std::uint64_t>> dropping_;
    Stats stats_;                                                    // guarded by mu_
};

} // namespace overcache::cache
