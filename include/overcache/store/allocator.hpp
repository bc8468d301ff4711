// Bucket allocator: per-bucket generations, the free list, the foreground
// write point and the LRU order GC reclaims in. All state is in memory and
// rebuilt at start-up from the buckets column family (no device scan).
#pragma once

#include "overcache/meta/schema.hpp"

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace overcache::store {

struct Allocation {
    std::uint32_t bucket = 0;
    std::uint32_t gen = 0;
    std::uint32_t offset = 0; // inside the bucket
    // The bucket's record after this allocation, for the caller to write in
    // the same batch as the extent that uses it.
    meta::BucketRecord record;
};

class Allocator {
public:
    // `reserve`: buckets foreground allocation never takes, so a full cache
    // still has room for GC's own work.
    Allocator(std::uint32_t bucket_count, std::uint64_t bucket_size, std::uint32_t reserve);

    // Start-up: apply the stored record of a bucket (buckets without one are
    // free at gen 0), then finish_load() builds the free list.
    void load(std::uint32_t bucket, const meta::BucketRecord& r);
    void finish_load();

    // Foreground: `len` (<= bucket_size) bytes in the write point, opening a
    // new bucket when it is full. nullopt when only the reserve is left: the
    // caller skips the fill, it never waits for GC.
    std::optional<Allocation> alloc(std::uint32_t len);

    std::uint32_t gen(std::uint32_t bucket) const {
        return gens_[bucket].load(std::memory_order_acquire);
    }
    bool current(std::uint32_t bucket, std::uint32_t gen) const {
        return bucket < count_ && this->gen(bucket) == gen;
    }
    // A hit: the bucket becomes the most recently used.
    void touch(std::uint32_t bucket);

    // GC: up to `n` of the least recently used full buckets (never the open
    // write point). invalidate() bumps a bucket's gen and returns its new
    // (free) record to persist; release() puts it on the free list, after the
    // record is written.
    std::vector<std::uint32_t> pick_victims(std::size_t n);
    meta::BucketRecord invalidate(std::uint32_t bucket);
    void release(const std::vector<std::uint32_t>& buckets);

    // The bucket's current record (an open bucket is recorded as full).
    meta::BucketRecord record(std::uint32_t bucket) const;

    std::uint32_t bucket_count() const { return count_; }
    std::uint64_t bucket_size() const { return bucket_size_; }
    std::uint32_t reserve() const { return reserve_; }
    std::size_t free_count() const;
    std::uint64_t used_bytes() const;
    std::uint64_t tick() const { return tick_.load(std::memory_order_relaxed); }

private:
    struct Slot {
        meta::BucketState state = meta::BucketState::free;
        std::uint32_t fill = 0;
    };

    const std::uint32_t count_;
    const std::uint64_t bucket_size_;
    const std::uint32_t reserve_;
    std::unique_ptr<std::atomic<std::uint32_t>[]> gens_;     // read without the lock
    std::unique_ptr<std::atomic<std::uint64_t>[]> last_use_; // LRU tick, relaxed
    std::atomic<std::uint64_t> tick_{1};

    mutable std::mutex mu_;
    std::vector<Slot> slots_;           // guarded by mu_
    std::deque<std::uint32_t> free_;    // guarded by mu_
    std::optional<std::uint32_t> open_; // the foreground write point; guarded by mu_
    std::uint64_t used_bytes_ = 0;      // guarded by mu_
};

} // namespace overcache::store
