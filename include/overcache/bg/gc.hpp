// Gc: reclaim on its own executor. When free buckets fall below the low
// watermark it invalidates the least recently used full buckets (gen bump)
// until the high watermark, then sweeps the index for extents whose gen has
// moved on, and drops the extents of files the cache has forgotten.
#pragma once

#include "overcache/bg/executors.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/store/allocator.hpp"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace overcache::bg {

struct GcParams {
    std::size_t low_free = 1;  // start reclaiming below this many free buckets
    std::size_t high_free = 2; // ... and stop at this many
};

struct GcStats {
    std::uint64_t runs = 0;
    std::uint64_t buckets_reclaimed = 0;
    std::uint64_t stale_extents_removed = 0;
    std::uint64_t files_dropped = 0;
};

class Gc {
public:
    // Everything GC does runs on `strand` (an executor of the GC IoPool).
    Gc(Strand strand, store::Allocator& alloc, meta::MetaStore& meta, GcParams p);

    // Reclaims if free buckets are below the low watermark. Cheap, callable
    // from any thread; never waits.
    void kick();
    // Forces a reclaim pass and sweep, whatever the watermarks (tests, `gc`).
    void trigger();
    // Deletes every extent of `file` in the background.
    void drop_file(meta::FileId file);
    // Waits until the work queued on the GC strand so far has run. Never call
    // it from the strand itself.
    void wait_idle();
    // No new work starts after this; queued work finishes quickly.
    void stop();

    GcStats stats() const;

private:
    void run(bool force);
    void reclaim(std::size_t target_free);
    void sweep();

    Strand strand_;
    store::Allocator& alloc_;
    meta::MetaStore& meta_;
    const GcParams params_;
    std::atomic<bool> queued_{false};
    std::atomic<bool> stopping_{false};
    mutable std::mutex stats_mu_;
    GcStats stats_; // guarded by stats_mu_
};

} // namespace overcache::bg
