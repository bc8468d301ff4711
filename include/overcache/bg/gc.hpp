// Gc: reclaim on its own executor. When free buckets fall below the low
// watermark it has the Allocator free the least recently used buckets that
// hold no dirty data and no write in flight (a gen bump each) until the high
// watermark. Stale extents are not swept: they read as misses, the owner of
// a file deletes those it overlaps when it writes, and the index's
// compaction filter drops the rest, so GC never deletes a key it read
// earlier.
#pragma once

#include "overcache/bg/executors.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/store/allocator.hpp"

#include <atomic>
#include <cstdint>
#include <mutex>

namespace overcache::bg {

struct GcParams {
    std::size_t low_free = 1;  // start reclaiming below this many free buckets
    std::size_t high_free = 2; // ... and stop at this many
};

struct GcStats {
    std::uint64_t runs = 0;
    std::uint64_t buckets_reclaimed = 0;
};

class Gc {
public:
    // Everything GC does runs on `strand` (an executor of the GC context).
    Gc(Strand strand, store::Allocator& alloc, meta::MetaStore& meta, GcParams p);

    // Reclaims if free buckets are below the low watermark. Cheap, callable
    // from any thread; never waits.
    void kick();
    // Forces a reclaim pass, whatever the watermarks, and a compaction of
    // the extents (tests, `gc`).
    void trigger();
    // Waits until the work queued on the GC strand so far has run. Never call
    // it from the strand itself.
    void wait_idle();
    // No new work starts after this; queued work finishes quickly.
    void stop();

    GcStats stats() const;

private:
    void run(bool force);

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
