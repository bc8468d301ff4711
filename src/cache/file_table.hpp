// FileTable: the backing files the cache is working on right now (open, or
// in the middle of a change), one FileState each, found by backing
// identity. A FileState lives exactly as long as something refers to it, so
// the table holds open files plus requests in flight, never history
// (`files_tracked` in the control file).
#pragma once

#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/schema.hpp"
#include "util/unique_fd.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace overcache::cache {

struct QueuedDirty; // write_path.hpp

// One backing file as the cache knows it.
struct FileState {
    explicit FileState(const meta::FileKey& k) : key(k) {}
    const meta::FileKey key;

    // Serialises the file's writes end to end (the backing write, then the
    // cache change), so writes of one range reach the backing and the cache
    // in the same order. Taken before mu; never by reads or fills.
    std::mutex write_mu;
    // Serialises whatever changes the backing file's bytes or size —
    // writeback's copies, and changes through the mount that reach the
    // backing (truncate, fallocate, writes around the cache) — with each
    // other and with every comparison of the record with the backing, so a
    // half-done writeback never looks like a change behind the mount.
    // After write_mu, before mu. Writeback takes it without write_mu, and
    // holds it for one bounded batch at a time, on its own thread, without
    // a deadline: a request takes it with lock_backing() (below), which
    // gives up when the backing stops answering.
    std::timed_mutex backing_mu;
    // The owner: every change of this file's record and extents is made
    // under it, from the check of the record to the commit. Before the
    // Allocator's locks.
    std::mutex mu;
    // Writeback writes whose bytes are on the cache device, waiting for
    // their index commit: the thread that finds no commit running commits
    // all that are queued, group after group until none is left, and
    // answers them (write_path.cpp, commit_dirty); the queue owns them.
    // Guarded by commit_mu, a leaf lock: nothing is taken under it and no
    // I/O runs with it held.
    std::mutex commit_mu;
    std::vector<QueuedDirty*> commit_queue;
    bool committing = false;
    bool loaded = false;                 // guarded by mu: `rec` is what the index holds
    std::optional<meta::FileRecord> rec; // guarded by mu
    // A writable fd on the backing file for writeback, dup'ed from the
    // first open that wrote dirty data (it works where reopening would not:
    // NFS root squashing); guarded by mu.
    UniqueFd wb_fd;

    // Read without mu by the read path; written under mu.
    std::atomic<meta::FileId> fid{0};
    std::atomic<std::uint64_t> epoch{0};
    // Bumped by every change of the bytes, and by an mtime the kernel sends
    // for a file ahead (keep_mtime): a batch in flight leaves it ahead.
    std::atomic<std::uint64_t> write_seq{0};
    std::atomic<std::uint64_t> size{0};      // the file's size as the cache knows it
    std::atomic<bool> uncached{false};       // no record: serve from the backing only
    // The record is ahead of the backing (kFileAhead: dirty data): the
    // backing's bytes are the file's only where no dirty extent is, and
    // past the backing's end the file reads as zeros up to `size`.
    std::atomic<bool> ahead{false};
    // Bytes went to the backing without a sync since the last fsync
    // (writeback mode: writes around the cache).
    std::atomic<bool> backing_unsynced{false};
    std::atomic<std::uint32_t> opens{0}; // CachedFiles on it (open handles)
    // Its effective user.overcache.pin as of its last open or pin (pin.cpp):
    // new extents are marked kExtentPinned. Written under mu.
    std::atomic<bool> pinned{false};
    // Its last name was removed through the mount while it is open: writeback
    // into the nameless inode is what its holders read, not an orphan.
    std::atomic<bool> unlinked_here{false};

    std::uint32_t refs = 0; // guarded by FileTable::mu_
};

class FileTable;

// A counted reference to a FileState; the entry leaves the table with the
// last one.
class StateRef {
public:
    StateRef() = default;
    StateRef(const StateRef& o);
    StateRef& operator=(const StateRef& o);
    StateRef(StateRef&& o) noexcept : t_(o.t_), s_(o.s_) { o.t_ = nullptr, o.s_ = nullptr; }
    StateRef& operator=(StateRef&& o) noexcept;
    ~StateRef() { reset(); }
    void reset() noexcept;

    FileState* operator->() const { return s_; }
    FileState& operator*() const { return *s_; }
    explicit operator bool() const { return s_ != nullptr; }

private:
    friend class FileTable;
    StateRef(FileTable* t, FileState* s) : t_(t), s_(s) {}
    FileTable* t_ = nullptr;
    FileState* s_ = nullptr;
};

class FileTable {
public:
    // The state of `key`, made (not yet loaded) if the table has none.
    StateRef acquire(const meta::FileKey& key);
    // The state of `key` if the table has one.
    StateRef find(const meta::FileKey& key);
    // The file is gone (its last name removed through the mount): its state
    // leaves the table but lives on for the references that hold it (opens
    // of the nameless file), so a new file that gets the same inode number
    // gets a state of its own, never this one's record, fd or extents.
    void detach(FileState& s);
    std::size_t size() const;

private:
    friend class StateRef;
    void add_ref(FileState* s);
    void release(FileState* s) noexcept;

    struct KeyHash {
        std::size_t operator()(const meta::FileKey& k) const noexcept {
            return std::hash<std::uint64_t>()(k.ino * 0x9e3779b97f4a7c15ull ^ k.fsid);
        }
    };
    mutable std::mutex mu_; // a leaf
    std::unordered_map<meta::FileKey, std::unique_ptr<FileState>, KeyHash> map_;
    std::vector<std::unique_ptr<FileState>> detached_; // guarded by mu_
};

} // namespace overcache::cache
