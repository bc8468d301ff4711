// Allocator: the one owner of bucket state. It hands out space through write
// points (one per kind of work: foreground, GC, later writeback), pins the
// buckets that have writes in flight so GC never reclaims them under a
// write, keeps per-bucket live and dirty bytes exact, and is the only code
// that writes bucket records: commit() writes a caller's index change in the
// same RocksDB batch as the bucket records it accounts for. All state is in
// memory and rebuilt at start-up from the buckets column family (no device
// scan).
#pragma once

#include "overcache/meta/meta_store.hpp"
#include "overcache/meta/schema.hpp"
#include "overcache/util/result.hpp"
#include "overcache/util/stable_array.hpp"
#include "overcache/util/tunable.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <vector>

namespace overcache::store {

class Allocator;

// Where buckets get their space on the device. A file-backed cache gets a
// bucket's bytes the first time it is used and may give them back (see
// FileSpace); without a BucketSpace every bucket has its space (a block
// device, or a cache preallocated whole).
class BucketSpace {
public:
    virtual ~BucketSpace() = default;
    // At start-up: every bucket already has its space.
    virtual bool all_backed() const = 0;
    // Gives `bucket` its space on the device (ENOSPC: the cache is full).
    virtual Result<void> back(std::uint32_t bucket) = 0;
    // Gives the space of `bucket`, which holds nothing, back.
    virtual Result<void> release(std::uint32_t bucket) = 0;
    // Whether a bucket without space may be given some now (the filesystem
    // has room above its floor). Cheap: called for allocations.
    virtual bool room_for_fresh() = 0;
};

// An open bucket that one kind of work appends to. Foreground work (fills,
// writethrough writes) and GC each have their own, so GC's copies never
// queue behind a foreground bucket that waits for GC to free space. Only a
// write point made with `may_use_reserve` (GC's) takes the last free buckets.
class WritePoint {
public:
    WritePoint(const char* name, bool may_use_reserve) : name_(name), reserve_(may_use_reserve) {}
    WritePoint(const WritePoint&) = delete;
    WritePoint& operator=(const WritePoint&) = delete;
    const char* name() const { return name_; }

private:
    friend class Allocator;
    const char* name_;
    const bool reserve_;
    std::optional<std::uint32_t> bucket_; // guarded by Allocator::mu_
};

// Keeps GC from reclaiming a bucket while bytes are being written into it
// and until the extent that points at them is committed (or abandoned).
class BucketPin {
public:
    BucketPin() = default;
    BucketPin(BucketPin&& o) noexcept : a_(o.a_), bucket_(o.bucket_) { o.a_ = nullptr; }
    BucketPin& operator=(BucketPin&& o) noexcept;
    BucketPin(const BucketPin&) = delete;
    BucketPin& operator=(const BucketPin&) = delete;
    ~BucketPin() { reset(); }
    void reset() noexcept;
    explicit operator bool() const { return a_ != nullptr; }

private:
    friend class Allocator;
    BucketPin(Allocator* a, std::uint32_t b) : a_(a), bucket_(b) {}
    Allocator* a_ = nullptr;
    std::uint32_t bucket_ = 0;
};

struct Allocation {
    std::uint32_t bucket = 0;
    std::uint32_t gen = 0;
    std::uint32_t offset = 0; // inside the bucket; a multiple of the allocator's alignment
    BucketPin pin;            // held until the extent is committed or given up
};

// What an index change does to a bucket's accounting. Applied at commit only
// if the bucket still has `gen` (an extent in a bucket GC reclaimed since it
// was read accounts for nothing any more).
struct BucketDelta {
    std::uint32_t bucket = 0;
    std::uint32_t gen = 0;
    std::int64_t live = 0;
    std::int64_t dirty = 0;
    std::int64_t pinned = 0; // bytes of pinned extents (user.overcache.pin)
};

// An index change under construction: the batch and the bucket deltas that
// go with it. Built by the owner of the change, committed by the Allocator.
struct IndexTxn {
    explicit IndexTxn(meta::Batch b) : batch(std::move(b)) {}
    meta::Batch batch;
    std::vector<BucketDelta> deltas;
    void account(std::uint32_t bucket, std::uint32_t gen, std::int64_t live, std::int64_t dirty = 0,
                 std::int64_t pinned = 0) {
        deltas.push_back(BucketDelta{bucket, gen, live, dirty, pinned});
    }
    // An extent of `len` bytes with `flags` (meta::kExtent*) comes (+1) or
    // goes (-1): its live bytes, and its dirty and pinned bytes if flagged.
    void account_extent(std::uint32_t bucket, std::uint32_t gen, std::int64_t len,
                        std::uint32_t flags) {
        account(bucket, gen, len, (flags & meta::kExtentDirty) != 0 ? len : 0,
                (flags & meta::kExtentPinned) != 0 ? len : 0);
    }
    bool empty() const { return batch.count() == 0 && deltas.empty(); }
};

// A bucket moving GC may compact: full, unpinned, and mostly dead.
struct BucketUsage {
    std::uint32_t bucket = 0;
    std::uint32_t gen = 0;
    std::uint32_t live = 0;
    std::uint32_t dirty = 0;
    std::uint32_t pinned = 0;
    bool operator==(const BucketUsage&) const = default;
};

struct AllocatorStats {
    std::uint64_t live_bytes = 0;
    std::uint64_t dirty_bytes = 0;
    std::uint64_t pinned_bytes = 0;   // of pinned extents (user.overcache.pin)
    std::uint64_t used_bytes = 0;     // appended since buckets were last freed (live + dead)
    std::uint64_t pinned = 0;         // buckets with writes in flight
    std::uint64_t dirty_buckets = 0;  // buckets holding dirty data
    std::uint64_t reclaimable = 0;    // full buckets reclaim() may free now
    std::uint64_t backed_buckets = 0; // buckets with their space on the device
};

// How the buckets are used, as bcache's priority_stats shows it (the index
// lives in RocksDB, not in buckets: there are no metadata buckets).
struct BucketHistogram {
    std::uint64_t unused = 0; // free
    std::uint64_t clean = 0;  // hold data (or are open), none of it dirty
    std::uint64_t dirty = 0;  // hold dirty data
    // How long ago the buckets that are not free were last hit or filled,
    // in allocations since (the LRU clock): the least, the quartiles and the
    // most, of the buckets reclaim picks from (it frees the oldest first).
    std::array<std::uint64_t, 5> age{}; // 0, 25, 50, 75, 100 %
};

// Which clean, non-empty buckets reclaim() frees first (bcache's
// cache_replacement_policy). Empty ones (live 0) go first under every
// policy: they cost nothing to free.
enum class ReplacementPolicy {
    lru,    // least recently hit or filled
    fifo,   // filled longest ago, whatever its hits since
    random, // any
};

class Allocator {
public:
    // `reserve`: free buckets that only a reserve write point may take.
    // `align`: every allocation starts at a multiple of it inside its bucket
    // (the cache device's block size), so each extent owns whole blocks;
    // bucket_size is a multiple of it.
    Allocator(meta::MetaStore& meta, std::uint32_t bucket_count, std::uint64_t bucket_size,
              std::uint32_t reserve, std::uint32_t align = 4096);

    // Start-up, before load(): where buckets get their space (null, the
    // default: every bucket has it). Buckets that hold or held data
    // (a record that is not free) have it; free ones are taken to have none
    // unless space->all_backed(), and get it again when first handed out.
    // Outlives the Allocator.
    void set_space(BucketSpace* space) { space_ = space; }

    // Start-up: apply the stored record of a bucket (buckets without one are
    // free at gen 0), then finish_load() builds the free list.
    void load(std::uint32_t bucket, const meta::BucketRecord& r);
    void finish_load();
    // Reads every bucket record from the index (load + finish_load).
    Result<void> load_all();

    // `len` (<= bucket_size) bytes in `wp`'s open bucket, opening a new one
    // when it is full. nullopt when no bucket can be had (only the reserve is
    // left and `wp` may not take it): the caller skips, it never waits here.
    // Free buckets that have their space go first; one without is given
    // space (BucketSpace::back, outside the locks) before it is handed out,
    // and only while BucketSpace::room_for_fresh() (a reserve write point,
    // GC's, ignores that floor: it frees more than it takes). No space to
    // be had is the same as no bucket.
    std::optional<Allocation> alloc(WritePoint& wp, std::uint32_t len);

    // Writes `txn` and the records of every bucket its deltas touch, in one
    // batch, with the deltas applied. The only writer of bucket records: the
    // on-disk order of a bucket's records is the order of its changes in
    // memory, so a gen can never go backwards on disk.
    Result<void> commit(IndexTxn& txn, bool sync = false);

    // `bucket` < bucket_count().
    std::uint32_t gen(std::uint32_t bucket) const {
        return gens_[bucket].load(std::memory_order_acquire);
    }
    bool current(std::uint32_t bucket, std::uint32_t gen) const {
        return bucket < count_.load(std::memory_order_acquire) && this->gen(bucket) == gen;
    }
    // A hit: the bucket becomes the most recently used.
    void touch(std::uint32_t bucket);

    // GC: frees up to `n` of the full buckets that are neither pinned (a
    // write in flight) nor hold dirty data or pinned extents, empty ones
    // (live 0: moving GC emptied them) first, then in the order of
    // replacement(), read at each call: bumps their gens (every extent in
    // them is stale from that instant), commits their free records, then
    // puts them on the free list. Returns how many were freed.
    Result<std::size_t> reclaim(std::size_t n);

    // GC, after freeing buckets: while the space's room_for_fresh() is false,
    // gives back the space of up to `n` free buckets that have it (the most
    // recently freed first; punched outside the locks) and counts them as
    // buckets without space. Returns how many were given back.
    std::size_t give_back(std::size_t n);

    // Moving GC: up to `n` full, unpinned buckets holding some but fewer
    // than `max_live` live bytes, least live first. Dirty ones included:
    // they are the buckets reclaim cannot free.
    std::vector<BucketUsage> fragmented(std::uint64_t max_live, std::size_t n) const;
    // Bytes `wp` can still take in its open bucket (0 when it has none).
    std::uint64_t room(const WritePoint& wp) const;
    // What an allocation of `len` bytes uses of a bucket (whole blocks).
    std::uint64_t footprint(std::uint64_t len) const { return (len + align_ - 1) / align_ * align_; }

    // The bucket's current record (an open bucket is recorded as full).
    meta::BucketRecord record(std::uint32_t bucket) const;
    // Records of every bucket that is not free (for a clean stop: last_use).
    Result<void> save_all();

    // The live bucket count: it changes with a live resize (below), so a
    // reader takes it once per use.
    std::uint32_t bucket_count() const { return count_.load(std::memory_order_acquire); }
    std::uint64_t bucket_size() const { return bucket_size_; }
    std::uint32_t reserve() const { return reserve_.load(std::memory_order_relaxed); }
    // A resize sets the reserve that goes with the new count.
    void set_reserve(std::uint32_t r) { reserve_.store(r, std::memory_order_relaxed); }

    // Live resize (cache/live_resize.cpp drives it, one at a time; see the
    // DOC of allocator.cpp for the order of each step).
    //
    // Grow, step 1: writes the records of buckets [bucket_count(), n), free
    // at `gens` (one per new bucket: above any stale extent entry that
    // names its number), together with `batch` (the new superblock), in one
    // synced write. Nothing is handed out yet: an error changes nothing.
    Result<void> add_buckets(std::uint32_t n, const std::vector<std::uint32_t>& gens,
                             meta::Batch batch);
    // Grow, step 2 (after the data header): the new buckets join the free
    // lists (without space where there is a BucketSpace) and the count
    // becomes `n`.
    void publish_grow(std::uint32_t n);

    // Shrink to `keep` buckets. What must move out of buckets >= keep
    // (dirty or pinned bytes) and whether it fits below keep:
    struct ShrinkNeed {
        std::uint64_t move_bytes = 0;  // dirty or pinned bytes in buckets >= keep
        std::uint64_t dirty_bytes = 0; // all dirty bytes
        std::uint64_t pinned_bytes = 0;
        std::uint32_t held_below = 0; // buckets < keep that hold dirty or pinned bytes
        std::uint32_t need = 0;       // buckets below keep the data must have
        bool fits = true;
    };
    ShrinkNeed shrink_need(std::uint32_t keep) const;
    // Marks buckets >= keep retiring: off the free lists, out of every write
    // point (an open one is closed at its write point's next alloc), never
    // handed out again while retiring. Refused (CacheFull, message naming
    // the sizes) with nothing changed when shrink_need(keep) does not fit.
    Result<void> retire_from(std::uint32_t keep);
    // The first retiring bucket (bucket_count() when none retire).
    std::uint32_t retiring_from() const;
    // Retiring buckets, full and without writes in flight, that hold dirty or
    // pinned bytes (the mover takes those out), at most `n`.
    std::vector<BucketUsage> retiring_held(std::size_t n) const;
    // Retiring buckets, full and without writes in flight, that hold only
    // clean data, most recently used first, at most `n`: what a shrink
    // keeps (moves below the cut) while there is room for it.
    std::vector<BucketUsage> retiring_clean(std::size_t n) const;
    // Frees every retiring bucket reclaim() could free (clean, unpinned, no
    // write in flight) except the ones in `spared` (clean data a shrink
    // still means to move): gen bump, record written, and left off the
    // free lists. Returns how many.
    Result<std::size_t> reclaim_retiring(const std::vector<std::uint32_t>& spared = {});
    // Retiring buckets not yet free and idle (the shrink waits for them).
    std::size_t retiring_busy() const;
    // Gives the retiring buckets back to use (a shrink that stopped).
    void cancel_retire();
    // Shrink, last index step: once every retiring bucket is free and idle,
    // deletes their records (one range) with `batch` (the new superblock) in
    // one synced write. While some are busy (retiring_busy() > 0): EBUSY,
    // nothing written. Then publish_shrink(), after the data header and the
    // truncation: the count drops and current() is false past it.
    Result<void> drop_retired(meta::Batch batch);
    void publish_shrink();
    // Free buckets alloc() can hand out now: those with their space, and
    // those without while room_for_fresh().
    std::size_t free_count() const;
    std::size_t backed_count() const; // buckets with their space on the device
    std::uint64_t used_bytes() const;
    AllocatorStats stats() const; // walks every bucket: for the control file
    // Walks and sorts every bucket: for the control file only.
    BucketHistogram histogram() const;
    std::uint64_t dirty_bytes() const; // cheap: for every write
    // Bytes of pinned extents (user.overcache.pin), and how many there may
    // be: kPinnedShareDiv-th of the buckets reclaim may free, so pinned
    // data never takes the room that writeback and fills need (past it,
    // pin fetches and marks no more: see CachingPath).
    std::uint64_t pinned_bytes() const;
    std::uint64_t pinned_cap() const;
    static constexpr std::uint64_t kPinnedShareDiv = 2;
    std::uint64_t tick() const { return tick_.load(std::memory_order_relaxed); }

    // The order reclaim() frees clean buckets in; a live setting.
    ReplacementPolicy replacement() const { return replacement_.get(); }
    void set_replacement(ReplacementPolicy p) { replacement_.set(p); }
    // Test seam: the random policy's generator, seeded so a test repeats.
    void seed_random(std::uint64_t seed);

    // Test seam: called by reclaim() after it picked its victims and before
    // it bumps their gens, with commit_mu_ held (so it must not commit).
    std::function<void(const std::vector<std::uint32_t>&)> before_reclaim;
    // Test seam: called by retire_from() after it chose to go ahead and
    // before it takes the buckets out of use (no lock held).
    std::function<void()> before_retire;
    // Called by reclaim() once freed buckets are on the free list, with
    // commit_mu_ held (so it must only post work): writes waiting for space
    // retry. Set once, before any reclaim.
    std::function<void()> after_free;

private:
    friend class BucketPin;
    struct Slot {
        meta::BucketState state = meta::BucketState::free;
        std::uint32_t fill = 0;
        std::uint32_t live = 0;
        std::uint32_t dirty = 0;
        std::uint32_t pinned = 0; // bytes of pinned extents; <= live
        std::uint32_t pins = 0;
        // The write point whose open bucket this is (null: none). alloc()
        // gives a write point its bucket back only while it still owns it,
        // so retire_from() can close a bucket without knowing the write point.
        const WritePoint* owner = nullptr;
    };
    void unpin(std::uint32_t bucket) noexcept;
    // Frees `victims` (commit_mu_ held): gen bump, records written synced,
    // then free (on a free list unless retiring). Returns how many.
    Result<std::size_t> free_victims(const std::vector<std::uint32_t>& victims);
    // A free bucket goes back on its list, unless it is retiring (mu_ held).
    void list_free_locked(std::uint32_t b);
    ShrinkNeed shrink_need_locked(std::uint32_t keep) const;      // mu_ held
    meta::BucketRecord record_locked(std::uint32_t bucket) const; // mu_ held
    meta::BucketRecord record_of(std::uint32_t bucket, const Slot& s) const; // mu_ held

    meta::MetaStore& meta_;
    // Release-stored after the arrays cover it (grown under commit_mu_ and
    // mu_); readers load it with acquire before they index gens_/last_use_.
    std::atomic<std::uint32_t> count_;
    const std::uint64_t bucket_size_;
    std::atomic<std::uint32_t> reserve_;
    const std::uint32_t align_;
    // Read without the lock, so they never move: chunks that only grow.
    StableArray<std::atomic<std::uint32_t>> gens_;
    StableArray<std::atomic<std::uint64_t>> last_use_; // LRU tick, relaxed
    std::uint32_t retire_ = 0; // guarded by mu_; first retiring bucket (count_ when none)
    std::atomic<std::uint64_t> tick_{1};
    Tunable<ReplacementPolicy> replacement_ = ReplacementPolicy::lru;

    // Serialises commits and reclaims (each computes bucket records and
    // writes them): before mu_. Held across an index write, never across
    // device or backing I/O.
    std::mutex commit_mu_;
    mutable std::mutex mu_;
    std::vector<Slot> slots_;        // guarded by mu_
    std::deque<std::uint32_t> free_; // guarded by mu_; free buckets with their space
    // The tick of each bucket's last allocation (when it was filled), for
    // fifo; not recorded: start-up takes the record's last_use instead.
    std::vector<std::uint64_t> filled_;           // guarded by mu_
    std::mt19937_64 rng_{std::random_device{}()}; // guarded by commit_mu_
    std::uint64_t used_bytes_ = 0;                // guarded by mu_
    std::uint64_t live_bytes_ = 0;                // guarded by mu_
    std::uint64_t dirty_bytes_ = 0;               // guarded by mu_
    std::uint64_t pinned_bytes_ = 0;              // guarded by mu_

    // Lazily allocated space (a data file): free buckets without space on
    // the device, and which buckets have it.
    BucketSpace* space_ = nullptr;            // set before load
    std::deque<std::uint32_t> fresh_;         // guarded by mu_
    std::vector<bool> backed_;                // guarded by mu_
    std::atomic<bool> space_warned_{false};   // the data file could not grow: logged
    std::atomic<bool> floor_logged_{false};   // cache_min_free stopped growth: logged
    std::atomic<bool> release_warned_{false}; // giving space back failed: logged
};

} // namespace overcache::store
