// Gc: reclaim and moving GC on their own executor. When free buckets fall
// below the low watermark it has the Allocator free buckets that hold no
// dirty data and no write in flight (empty ones first, then the least
// recently used) until the high watermark. When that cannot get there —
// the space is held by buckets that are mostly dead but still hold some
// live (often dirty) bytes — moving GC compacts the emptiest of them: a
// BucketMover copies their live extents through GC's own write point, which
// alone may take the reserved buckets, and the emptied buckets are then
// reclaimed as above. A bucket with dirty bytes is never invalidated: it is
// freed only once none are left in it. Stale extents are not swept: they
// read as misses, the owner of a file deletes those it overlaps when it
// writes, and the index's compaction filter drops the rest, so GC never
// deletes a key it read earlier.
#pragma once

#include "overcache/bg/executors.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/util/result.hpp"

#include "overcache/util/tunable.hpp"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace overcache::bg {

struct GcParams {
    // Live settings (gc_low_percent, gc_high_percent): set_watermarks.
    Tunable<std::size_t> low_free = std::size_t{1};  // start reclaiming below this many free buckets
    Tunable<std::size_t> high_free = std::size_t{2}; // ... and stop at this many
    // Moving GC compacts only buckets with less live data than this share
    // of a bucket: above it a move copies much to free little.
    unsigned move_below_percent = 50;
    // Buckets one moving round considers (and scans the index for).
    std::size_t move_batch = 8;
};

struct GcStats {
    std::uint64_t runs = 0;
    std::uint64_t last_run_us = 0; // how long the last pass took, moving GC included
    std::uint64_t buckets_reclaimed = 0;
    std::uint64_t moved_bytes = 0;   // live bytes moving GC copied and committed
    std::uint64_t buckets_moved = 0; // buckets moving GC emptied
    std::uint64_t move_errors = 0;
    // freed buckets whose space went back to the filesystem (cache_min_free)
    std::uint64_t buckets_given_back = 0;
};

struct MoveOutcome {
    std::uint64_t bytes = 0;   // live bytes now at their new place
    std::uint64_t extents = 0; // extents moved
    std::size_t emptied = 0;   // victims left with no live byte (reclaim frees them)
};

// Moving GC's other half, which knows files and extents (cache/mover.cpp):
// GC picks candidate buckets, the mover empties what it can of them. Runs
// on the GC strand only; it must never take a foreground write point or
// wait for a FUSE thread.
class BucketMover {
public:
    virtual ~BucketMover() = default;
    // Moves the live extents of as many of `candidates` (least live first)
    // as fit where `wp` can write and free more buckets than they take.
    virtual Result<MoveOutcome> move(store::WritePoint& wp,
                                     const std::vector<store::BucketUsage>& candidates) = 0;
    // A shrink: copies the extents of `buckets` that must stay (dirty or
    // pinned) through `wp`, whatever that frees; clean ones too when
    // `with_clean` (there is room to keep them), else they stay behind and
    // go with their bucket.
    virtual Result<MoveOutcome> evacuate(store::WritePoint& wp,
                                         const std::vector<store::BucketUsage>& buckets,
                                         bool with_clean) = 0;
};

class Gc {
public:
    // Everything GC does runs on `strand` (an executor of the GC context).
    // `mover` (may be null: no moving GC) outlives the Gc.
    Gc(Strand strand, store::Allocator& alloc, meta::MetaStore& meta, GcParams p,
       BucketMover* mover = nullptr);

    // Reclaims if free buckets are below the low watermark. Cheap, callable
    // from any thread; never waits.
    void kick();
    // New watermarks (a live gc_low_percent/gc_high_percent), then a kick.
    void set_watermarks(std::size_t low_free, std::size_t high_free);
    // Forces a reclaim pass, whatever the watermarks, and a compaction of
    // the extents (tests, `gc`).
    void trigger();
    // A live shrink's step, on the GC strand (gc_evacuate.cpp): has the
    // mover take the dirty and pinned extents out of the retiring buckets,
    // and the clean data of the most recently used ones while the buckets
    // below the cut have room to spare for it; frees the retiring buckets
    // that are clean (Allocator::reclaim_retiring), but those it still
    // means to move; then calls `done` with how many retiring buckets are
    // still busy (held, open, or with writes in flight). Never waits for
    // them. After stop(): ESHUTDOWN.
    void evacuate(std::function<void(Result<std::size_t>)> done);
    // Waits until the work queued on the GC strand so far has run. Never call
    // it from the strand itself.
    void wait_idle();
    // No new work starts after this; queued work finishes quickly.
    void stop();

    GcStats stats() const;
    // GC's write point (strand: gc): tests look at what it holds.
    const store::WritePoint& write_point() const { return wp_; }

private:
    void run(bool force);
    // Moving rounds until `target` free buckets or no progress. Returns the
    // buckets freed.
    std::size_t compact(std::size_t target, bool force);
    // How many retiring buckets of clean data a shrink can still keep: the
    // free buckets below the cut past the reserve, the high watermark (so
    // keeping them never makes GC evict other data) and what the dirty and
    // pinned data still to move needs; one spare for a partly filled bucket.
    std::size_t clean_room() const;

    Strand strand_;
    store::Allocator& alloc_;
    meta::MetaStore& meta_;
    const GcParams params_;
    BucketMover* const mover_;
    // Moving GC's copies go here; the only write point that may take the
    // reserve (strand: gc).
    store::WritePoint wp_{"gc", true};
    // The candidates of the last round that moved nothing: an unforced pass
    // does not scan the index again for the same ones (strand: gc).
    std::vector<store::BucketUsage> fruitless_;
    std::atomic<bool> queued_{false};
    std::atomic<bool> stopping_{false};
    mutable std::mutex stats_mu_;
    GcStats stats_; // guarded by stats_mu_
};

} // namespace overcache::bg
