// Writeback: copies dirty extents to the backing on writeback's own
// executor, file by file, in offset order, neighbours coalesced into large
// writes; syncs the backing file; then marks the extents clean in one
// RocksDB batch. It never waits for a foreground resource: it takes no
// write point and no FileState::write_mu, and holds a file's backing_mu for
// one bounded batch at a time (the foreground may wait for that batch, never
// the other way round).
#pragma once

#include "cache/cache_core.hpp"
#include "bg/writeback_rate.hpp"
#include "overcache/bg/executors.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>

namespace overcache::cache {

struct WritebackStats {
    std::uint64_t bytes = 0;      // written back since start
    std::uint64_t errors = 0;     // batches that failed (retried later)
    std::uint64_t lost = 0;       // dirty bytes that failed their checksum
    std::uint64_t rate = 0;       // bytes/s allowed now (UINT64_MAX: no limit)
    std::uint64_t target = 0;     // dirty bytes writeback aims to stay under
    std::string last_error;       // empty when none yet
};

class Writeback {
public:
    Writeback(CacheCore& core, bg::Strand strand);
    ~Writeback();

    // Starts the periodic pass (about once a second).
    void start();
    // New dirty data, or a change of settings: a pass soon.
    void kick();
    // Writes back every file dirty now and calls `done` when the backing
    // has synced them all, or with the first error (the rest is still tried).
    void flush(Done<void> done);
    // Writes back every dirty byte of `st` now, on the calling thread: on
    // success every byte that was dirty when it was called is on the
    // backing and synced there. The caller holds none of st's locks but may
    // hold its write_mu.
    Result<void> write_back_file(FileState& st);
    // Runs a pass on the writeback executor and waits for it (tests).
    void pass_now();
    // Cancels the timer and fails pending flushes; the executor is stopped
    // by its owner afterwards.
    void stop();

    WritebackStats stats() const;
    // Bytes copied to the backing, runs written out to its disk and syncs
    // done so far, counted as each returns (stats().bytes moves once per
    // batch): how a watchdog over the daemon's stop tells slow from stuck.
    std::uint64_t moved() const noexcept { return moved_.load(std::memory_order_relaxed); }

    // Test seam: a batch's extents are chosen and the record marked
    // kFileWritingBack; nothing is copied yet (backing_mu held, mu not).
    std::function<void(FileState&)> hooks_before_copy;
    // Test seam: a batch is about to start at `from` (no lock held).
    std::function<void(FileState&, std::uint64_t from)> hooks_before_batch;

private:
    void schedule();
    void pass();
    // One file, from the pass: opens the backing, writes back, records the
    // outcome (backoff on failure).
    Result<void> run_file(const meta::FileKey& key, std::uint64_t budget, std::uint64_t& spent);
    // Opens `st`'s backing file and writes back up to `budget` bytes;
    // `whole`: every byte dirty when it began (see write_back_file).
    Result<void> write_back(FileState& st, std::uint64_t budget, std::uint64_t& spent, bool whole);
    // Batches from offset 0 to the end (or the budget). `complete` is
    // cleared unless every extent chosen was written and marked clean.
    Result<void> write_back_round(FileState& st, int fd, std::uint64_t budget,
                                  std::uint64_t& spent, bool& complete);
    // Copies one batch (at most `max_bytes`, at least one extent) of `st`'s
    // dirty extents that start at or after `from` to `fd`. Sets `next_from`
    // past them, and `more` when dirty extents remain after them.
    // `pass_seq`: the file's write_seq when the pass over it began (set by
    // its first batch, the one from 0): the last batch marks the file clean
    // only if nothing was written since, below `from` included.
    // `complete` is cleared when an extent it chose was replaced or moved
    // before it could be marked clean (it stays dirty).
    Result<void> batch(FileState& st, int fd, std::uint64_t from, std::uint64_t max_bytes,
                       std::uint64_t& written, std::uint64_t& next_from, bool& more,
                       std::uint64_t& pass_seq, bool& complete);
    Result<UniqueFd> open_backing(FileState& st);
    void note_error(const std::string& what);
    // The file's dirty data cannot be written where it belongs (the file
    // is gone from the backing): saved aside, then dropped.
    void orphaned(FileState& st, const std::string& why);

    CacheCore& core_;
    bg::Strand strand_;
    bg::StrandTimer timer_;
    UniqueFd root_; // the backing root, for reopening files by handle or path
    bool stopped_ = false; // on the strand
    std::atomic<bool> stopping_{false};
    std::atomic<bool> kicked_{false};
    std::atomic<std::uint64_t> moved_{0};

    struct Flush {
        std::vector<meta::FileKey> files;
        Done<void> done;
    };
    std::deque<Flush> flushes_; // on the strand
    bg::WritebackRate rate_;    // on the strand
    std::chrono::steady_clock::time_point last_pass_{}; // on the strand
    // Per file: no retry before this time after an error (on the strand).
    std::map<std::pair<std::uint64_t, std::uint64_t>,
             std::pair<std::chrono::steady_clock::time_point, std::chrono::seconds>>
        backoff_;

    mutable std::mutex stats_mu_; // a leaf
    WritebackStats stats_;        // guarded by stats_mu_
    std::chrono::steady_clock::time_point last_log_{}; // guarded by stats_mu_
    std::uint64_t unlogged_errors_ = 0;                  // guarded by stats_mu_
};

} // namespace overcache::cache
