// WritePath: every change of a file's bytes made through the mount (write,
// truncate, fallocate, copy_file_range), and fsync/lseek, in writethrough,
// writearound and writeback modes. A writeback write that finds no room
// waits as a parked write (parked_writes.hpp), not on a FUSE thread.
#pragma once

#include "cache/cache_core.hpp"
#include "cache/cached_file.hpp"
#include "cache/parked_writes.hpp"
#include "cache/write_buffers.hpp"
#include "overcache/bg/executors.hpp"

#include <functional>
#include <optional>

namespace overcache::cache {

// Where a writeback write went.
enum class DirtyOutcome {
    cached,
    no_room,      // no bucket to be had now (only the reserve is left)
    not_cacheable // the file or the cache cannot take them (uncached, degraded)
};

// A writeback write queued for the cache (FileState::commit_queue).
// Whichever thread commits its group places its bytes on the cache device,
// commits them to the index and settles it: answers `done` (a FUSE write:
// the writer thread has gone back to its requests), or else hands the
// outcome to `settled` (a parked write retried, whose thread waits for it).
struct QueuedDirty {
    QueuedDirty(CachedFile& f, const char* d, std::size_t n, std::uint64_t at, bool st)
        : file(&f), data(d), len(n), off(at), stamp(st) {}
    CachedFile* file;           // the open it came through: alive until answered
    const char* data = nullptr; // the bytes placed (checksummed when staged)
    std::size_t len = 0;
    std::uint64_t off = 0;
    bool stamp = false;
    ExtentIndex::Placement placed;
    bool placed_by_writer = false; // a large write, placed before it queued
    WriteBuffers::Buffer bytes;    // owns `data` for a FUSE write
    Done<std::size_t> done;
    std::function<void(Result<DirtyOutcome>)> settled;
    Result<DirtyOutcome> out = DirtyOutcome::not_cacheable;
};

class WritePath {
public:
    // Parked writes are retried on `park_strand` (a foreground-class executor).
    WritePath(CacheCore& core, const CacheHooks& hooks, bg::Strand park_strand);

    void write(CachedFile& f, WriteSource& src, off_t off, Done<std::size_t> done);
    // Buckets were freed: parked writes retry.
    void wake_parked() { parked_.wake(); }
    // Answers every parked write (around the cache); parks no more.
    void stop() { parked_.stop(); }
    ParkedStats parked_stats() const { return parked_.stats(); }
    // writeback_wait_max changed (seconds; below 0 taken as 0).
    void set_wait_max(double seconds) {
        parked_.set_wait_max(std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::duration<double>(std::max(0.0, seconds))));
    }
    void fsync(CachedFile& f, bool datasync, Done<void> done);
    Result<ChangeOut> truncate(int fd, bool fd_is_open, std::uint64_t size);
    Result<void> fallocate(CachedFile& f, int mode, off_t off, off_t len);
    Result<std::size_t> copy_file_range(CachedFile& in, off_t off_in, CachedFile& out,
                                        off_t off_out, std::size_t len, unsigned flags);
    Result<off_t> lseek(CachedFile& f, off_t off, int whence);

private:
    // What a change leaves in the cache for the range it touched.
    struct CacheUpdate {
        std::uint64_t start = 0;
        std::uint64_t end = 0;        // UINT64_MAX: to the end of the file
        const char* data = nullptr;   // the new bytes (writethrough), else punch
        // The file's size afterwards as the cache shows it while the file is
        // ahead of the backing: at least `size` (a write, an allocation),
        // exactly `size` (a truncate), or unchanged.
        enum class Size { keep, at_least, exact } size_rule = Size::keep;
        std::uint64_t size = 0;
        // The cache mode the bytes were written under (a per-path policy);
        // unset: the mount's, read when the cache is updated.
        std::optional<config::CacheMode> mode{};
    };
    // Compares the backing (fstat of `fd`, now) with the record (st's
    // write_mu and backing_mu held): a change behind the mount drops the
    // cache first (saving dirty data aside). true when it did.
    Result<bool> check_backing(FileState& st, int fd);
    using Dirty = DirtyOutcome;
    // Writeback, for a parked write's retry: puts the bytes in the cache as
    // dirty and returns once they are committed. `stamp`: the write sets
    // the file's mtime (not for the kernel's writeback, whose mtime comes
    // in a setattr).
    Result<Dirty> write_dirty(CachedFile& f, const char* data, std::size_t len, std::uint64_t off,
                              bool stamp);
    // Queues a write for the cache. The first thread to find no commit
    // running places and commits what is queued, group after group, until
    // the queue is empty, and settles each write; the others return at once.
    void commit_dirty(std::unique_ptr<QueuedDirty> w);
    // Puts the group's bytes on the cache device, in as few device writes
    // as their places allow (skipping those placed by their writer); each
    // write's `out` says where it stands (cached: placed, not committed).
    void place_group(const std::vector<QueuedDirty*>& group);
    // Places and commits `group`, then settles and deletes every write in
    // it (the queue owns them); leaves it empty; never throws.
    void settle_group(std::vector<QueuedDirty*>& group) noexcept;
    // Answers a FUSE write of a committed group (`synced`: the group's sync
    // for O_SYNC/O_DSYNC opens), or hands a parked one its outcome.
    void answer(QueuedDirty& w, const Result<void>& synced);
    // Commits the placed writes of `group` (write_mu and mu taken here): as
    // few index batches as the writes allow, each write's outcome in its
    // `out`.
    void commit_group(CachedFile& f, const std::vector<QueuedDirty*>& group);
    // The file range a write's punch touches: its own, widened to the
    // extents it cuts. Writes whose spans are apart can share a batch (a
    // punch reads the index, not the batch it goes into).
    Result<std::pair<std::uint64_t, std::uint64_t>> punch_span(meta::FileId fid, std::uint64_t off,
                                                               std::uint64_t end);
    // After write_dirty put a write's bytes in the cache: durable first for
    // an O_SYNC/O_DSYNC open; writeback is told.
    Result<std::size_t> dirty_written(CachedFile& f, std::size_t len);
    // Writeback mode, no room in the cache: the bytes go to the backing,
    // replacing any dirty bytes of the range.
    Result<std::size_t> write_around(CachedFile& f, const char* data, std::size_t len,
                                     std::uint64_t off);
    // Writeback: whether [off, off + len) of the file may hold dirty bytes
    // (true when the index cannot say).
    bool overlaps_dirty(FileState& st, std::uint64_t off, std::size_t len);
    // Whether waiting for room can end in the cache: writeback runs, or GC
    // has clean buckets to reclaim.
    bool room_may_come() const;
    // Parks a copy of the write; false (and `done` untouched) when it cannot.
    bool park(CachedFile& f, const char* data, std::size_t len, std::uint64_t off, bool stamp,
              Done<std::size_t>& done);
    ParkedWrites::Tried retry_parked(ParkedWrite& w);
    // Records the backing's `after` for the file's own change; a file ahead
    // of the backing also takes the change's size and a new mtime.
    void record_change(FileState& st, const CacheUpdate& u, const struct stat& after);
    // The protocol every change follows: under the file's write lock, check
    // the backing against the record (a change behind the mount drops the
    // cache first), run `op` on the backing, then under the owner lock
    // update the extents and record what the backing now looks like.
    template <class Op>
    Result<ChangeOut> change(FileState& st, int stat_fd, Op&& op);
    // The same with `pre` run first, under write_mu only (writeback of the
    // file before a change that needs the backing complete).
    template <class Pre, class Op>
    Result<ChangeOut> change(FileState& st, int stat_fd, Pre&& pre, Op&& op);
    void update_cache(FileState& st, const CacheUpdate& u);
    // Punches the file's clean extents, keeping its dirty ones (owner lock
    // held): after a change that failed with EIO and may yet land.
    void drop_clean(FileState& st);

    CacheCore& core_;
    const CacheHooks& hooks_;
    WriteBuffers buffers_;
    ParkedWrites parked_;
};

} // namespace overcache::cache
