// DeferredWrites: small dirty writes whose bytes also travel in the index
// batch that commits their extents, as BlueStore defers small writes. The
// bytes still go to the cache device at once (reads find them there), but
// that write need not be durable: after a power cut the record in the WAL
// puts them back (replay(), at start-up, before anything reads the device).
// So an fsync after small writes costs one flush, the WAL's, instead of a
// device fdatasync followed by the WAL's.
//
// A record is keyed by where the bytes went: (bucket, gen, offset in the
// bucket), in Cf::meta under "deferred/" (key_codec.hpp). It leaves the index
//  - in retire(), once the device has been synced after it was written;
//  - in the batch that frees its bucket (Allocator::reclaim): by then its
//    bytes are dead or clean (on the backing, synced there), so nothing
//    needs them, and a record must never be replayed over the bucket's next
//    use. The gen in the key keeps a record of a bucket's next use apart
//    from one of its last, so no delete can hit a newer record;
//  - in replay(), once written and synced.
// Only the write path adds records; retire(), forget_bucket() (under the
// allocator's commit lock) and replay() delete them, each only keys it knows.
#pragma once

#include "overcache/cache/extent_index.hpp"
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/util/result.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

namespace overcache::cache {

struct DeferredStats {
    std::uint64_t records = 0;  // in the index now
    std::uint64_t bytes = 0;    // their bytes
    std::uint64_t written = 0;  // writes deferred since start-up
    std::uint64_t retired = 0;  // records retired since start-up
    std::uint64_t replayed = 0; // records written again at start-up
};

class DeferredWrites {
public:
    // Writes of at most `max_len` bytes are deferred (0: none).
    DeferredWrites(store::CacheDevice& dev, store::Allocator& alloc, std::uint64_t max_len);

    bool wants(std::uint64_t len) const { return len > 0 && len <= max_len_; }
    // Stages a record for each piece of `pl` (which place() wrote from
    // `data`) into `b`, the batch that commits the pieces' extents. Call
    // before stage_placement(), which empties `pl`.
    void stage(meta::Batch& b, const ExtentIndex::Placement& pl, const char* data);
    // A dirty write that was not deferred reached the device: the next
    // sync_device() must sync it.
    void wrote_direct() { direct_written_.fetch_add(1, std::memory_order_acq_rel); }
    // Before a WAL sync that makes dirty extents durable: syncs the device
    // if a dirty write that was not deferred reached it since the last sync.
    Result<void> sync_device();
    // Allocator::reclaim, building the batch that frees `bucket` (its
    // locks held: this only adds to `b`): deletes the bucket's records.
    void forget_bucket(meta::Batch& b, std::uint32_t bucket);
    // Syncs the device and deletes every record written before the sync.
    // Called from the writeback executor about once a second, by writers
    // past the hard budget, and at a clean stop. A retire already running
    // makes this a no-op.
    Result<void> retire();
    // Records hold more than the budget: writers retire themselves.
    bool over_hard_budget() const;
    // Start-up, after the allocator has loaded and before any device read:
    // writes every record of a current bucket gen back to the device, syncs
    // it and deletes the records.
    Result<void> replay();
    DeferredStats stats() const;

    // Test seam: retire() has taken its keys and is about to sync the
    // device (no lock held).
    std::function<void()> before_retire_sync;

private:
    store::CacheDevice& dev_;
    store::Allocator& alloc_;
    const std::uint64_t max_len_;
    mutable std::mutex mu_;                          // guards live_, bytes_
    std::map<meta::DeferredKey, std::uint32_t> live_; // record -> its bytes
    std::uint64_t bytes_ = 0;
    std::mutex retire_mu_; // one retire at a time
    std::atomic<std::uint64_t> direct_written_{0}, direct_synced_{0};
    std::atomic<std::uint64_t> written_{0}, retired_{0}, replayed_{0};
};

} // namespace overcache::cache
