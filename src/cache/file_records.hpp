// FileRecords: a file's record in the index and the coherency rule around
// it. Every call is made by the file's owner (FileState::mu held) and
// changes the record and the extents together, in one batch.
#pragma once

#include "cache/dirty_files.hpp"
#include "cache/file_table.hpp"
#include "overcache/cache/extent_index.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/util/result.hpp"

#include <atomic>
#include <functional>
#include <string>
#include <sys/stat.h>

namespace overcache::cache {

// Whether `r` still describes the backing file whose fstat is `st`.
bool same_file(const meta::FileRecord& r, const struct stat& st);
// Copies the backing's size, mtime, ctime and inode into `r`.
void take_attrs(meta::FileRecord& r, const struct stat& st);
// The current time as unix nanoseconds (the cache's mtime of dirty files).
std::int64_t now_ns();

class FileRecords {
public:
    FileRecords(meta::MetaStore& meta, ExtentIndex& index, DirtyFiles& dirty,
                std::string backing_root);
    // Reads the FileId counter.
    Result<void> start();

    // All of these: st.mu held.
    // Reads the record once per FileState (later calls keep what memory has).
    Result<void> load(FileState& st);
    // Compares the record with `backing` (the backing's attributes from
    // before a change of ours, or at open): on a difference the file was
    // changed behind the mount, so its extents are dropped, its epoch bumped
    // and `backing` recorded. true when it dropped. A file with dirty data
    // goes through on_conflict first (our version is saved beside it); one
    // whose writeback was cut short (kFileWritingBack) is not a change: the
    // backing's attributes are taken and the dirty data kept.
    Result<bool> revalidate(FileState& st, const struct stat& backing);
    // A record for a file the index has none of (fd: any fd on the file).
    Result<void> create(FileState& st, int fd, const struct stat& backing);
    // Records `after` as the backing's state after our own change.
    Result<void> record_after(FileState& st, const struct stat& after);
    // Commits `t` (the caller's extent changes) with `rec` as the file's new
    // record, in one batch; the dirty list follows rec's kFileAhead. sync:
    // with a synced WAL.
    Result<void> commit(FileState& st, ExtentTxn& t, const meta::FileRecord& rec,
                        bool sync = false);
    // Drops every extent of the file (our own truncate to 0, O_TRUNC) and
    // records `after`.
    Result<void> drop(FileState& st, const struct stat& after, std::uint32_t set_flags = 0);
    // Sets or clears record flags.
    Result<void> set_flags(FileState& st, std::uint32_t set, std::uint32_t clear);
    // Where the backing has no file handles, the record keeps the file's
    // path below the backing root current (renames through the mount).
    Result<void> update_path(FileState& st, int fd);
    // The file's last name is gone: its extents and record go.
    Result<void> remove(FileState& st);

    std::uint64_t invalidated() const { return invalidated_.load(std::memory_order_relaxed); }

    // Test seam: called by revalidate() with st.mu held, after the record
    // was compared and before anything is written.
    std::function<void(FileState&)> after_compare;
    // Called by revalidate() (st.mu held) before it drops a file whose dirty
    // data the backing does not have: saves that data elsewhere. false: it
    // could not, and the file is left as it is (revalidate fails).
    std::function<bool(FileState&, const struct stat& backing)> on_conflict;

private:
    void publish(FileState& st, const meta::FileRecord& rec);
    std::string rel_path(int fd) const;

    meta::MetaStore& meta_;
    ExtentIndex& index_;
    DirtyFiles& dirty_;
    const std::string root_;
    std::mutex id_mu_;
    meta::FileId next_fid_ = 1; // guarded by id_mu_
    std::atomic<std::uint64_t> invalidated_{0};
};

} // namespace overcache::cache
