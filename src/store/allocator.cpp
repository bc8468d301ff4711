// DOC: the bucket allocator, sole owner of bucket state. Data is appended to
// the open bucket of a write point and reclaimed a whole bucket at a time:
// GC bumps the bucket's gen, which invalidates every extent in it without
// touching the index, and only after the new record is written returns it
// to the free list. Invariants:
//  - a bucket with a pin (a write in flight) is never reclaimed, so a fill
//    never lands in reused space and its extent's gen is still the bucket's
//    gen when it commits; nor is one holding dirty bytes or pinned bytes
//    (extents of files under user.overcache.pin);
//  - bucket records are written only by commit() and reclaim(), both under
//    commit_mu_, from the in-memory state at that moment: the records on
//    disk follow memory's order and gens only grow;
//  - live/dirty/pinned bytes change only through commit()'s deltas, applied only
//    when the bucket still has the delta's gen, and reset by reclaim;
//  - the last `reserve` free buckets go only to a reserve write point
//    (moving GC's), so GC can always copy live data out of mostly dead
//    buckets and free them, however full foreground work has made the cache;
//  - with a BucketSpace (a lazily allocated data file), no bucket is handed
//    out before it has its space on the device: free buckets with space
//    (free_) go first, one without (fresh_) is given space first, and only
//    while the filesystem has room above cache_min_free.
// Which clean buckets reclaim frees first is the replacement policy (lru,
// fifo, random: cache_replacement_policy); no policy frees a pinned or dirty one.
// Gens and LRU ticks are atomics so the read path checks them lock-free; they
// sit in chunks that never move (StableArray) because a live resize changes
// the bucket count (allocator_resize.cpp), published with release after the
// arrays cover it.
// Lock order: commit_mu_, then mu_; mu_ is never held across I/O.
#include "overcache/store/allocator.hpp"

#include "overcache/meta/key_codec.hpp"
#include "util/log.hpp"

#include <algorithm>
#include <map>

namespace overcache::store {

BucketPin& BucketPin::operator=(BucketPin&& o) noexcept {
    if (this != &o) {
        reset();
        a_ = o.a_;
        bucket_ = o.bucket_;
        o.a_ = nullptr;
    }
    return *this;
}

void BucketPin::reset() noexcept {
    if (a_ != nullptr)
        a_->unpin(bucket_);
    a_ = nullptr;
}

Allocator::Allocator(meta::MetaStore& meta, std::uint32_t bucket_count, std::uint64_t bucket_size,
                     std::uint32_t reserve, std::uint32_t align)
    : meta_(meta), count_(bucket_count), bucket_size_(bucket_size), reserve_(reserve),
      align_(std::max<std::uint32_t>(1, align)),
      // Sized for every bucket number there can be (a live grow adds chunks).
      gens_(std::uint64_t{UINT32_MAX} + 1), last_use_(std::uint64_t{UINT32_MAX} + 1),
      retire_(bucket_count), slots_(bucket_count), filled_(bucket_count, 0),
      backed_(bucket_count, false) {
    gens_.grow(bucket_count); // value-initialised: gen 0, tick 0
    last_use_.grow(bucket_count);
}

void Allocator::load(std::uint32_t bucket, const meta::BucketRecord& r) {
    if (bucket >= count_.load(std::memory_order_relaxed))
        return;
    std::lock_guard lk(mu_);
    gens_[bucket].store(r.gen, std::memory_order_relaxed);
    last_use_[bucket].store(r.last_use, std::memory_order_relaxed);
    filled_[bucket] = r.last_use;
    // A bucket open when the daemon stopped is not appended to again: its
    // tail may hold bytes of fills whose extents never reached the index.
    auto& s = slots_[bucket];
    const bool free = r.state == meta::BucketState::free;
    s.state = free ? meta::BucketState::free : meta::BucketState::full;
    s.fill =
        free ? 0 : std::min<std::uint32_t>(r.fill_bytes, static_cast<std::uint32_t>(bucket_size_));
    s.live = free ? 0 : std::min(r.live_bytes, s.fill);
    s.dirty = free ? 0 : std::min(r.dirty_bytes, s.live);
    s.pinned = free ? 0 : std::min(r.pinned_bytes, s.live);
    // It holds data, so it has its space. A free one may have been punched.
    backed_[bucket] = !free;
    if (r.last_use >= tick_.load(std::memory_order_relaxed))
        tick_.store(r.last_use + 1, std::memory_order_relaxed);
}

void Allocator::finish_load() {
    std::lock_guard lk(mu_);
    free_.clear();
    fresh_.clear();
    used_bytes_ = live_bytes_ = dirty_bytes_ = pinned_bytes_ = 0;
    const bool all_backed = space_ == nullptr || space_->all_backed();
    for (std::uint32_t b = 0; b < count_; ++b) {
        const auto& s = slots_[b];
        if (all_backed)
            backed_[b] = true;
        if (s.state == meta::BucketState::free) {
            (backed_[b] ? free_ : fresh_).push_back(b);
        } else {
            used_bytes_ += s.fill;
            live_bytes_ += s.live;
            dirty_bytes_ += s.dirty;
            pinned_bytes_ += s.pinned;
        }
    }
}

Result<void> Allocator::load_all() {
    auto cur = meta_.cursor(meta::Cf::buckets);
    for (cur.seek_to_first(); cur.valid(); cur.next()) {
        std::uint32_t b = 0;
        if (!meta::decode_bucket_key(cur.key(), b))
            continue;
        if (auto r = meta::decode_bucket(cur.value())) {
            load(b, *r);
        } else {
            // A damaged record: its gen is unknown, so no gen is safe to hand
            // out again without a scan. Keep the bucket out of use (full, at
            // a gen far from any in use) until GC reclaims it, which bumps
            // and rewrites it.
            log::warn("cache: damaged record of bucket ", b, "; it will be reclaimed");
            load(b, meta::BucketRecord{0xffff0000u, meta::BucketState::full, 0, 0, 0, 0});
        }
    }
    finish_load();
    return cur.status();
}

std::optional<Allocation> Allocator::alloc(WritePoint& wp, std::uint32_t len) {
    if (len == 0 || len > bucket_size_)
        return std::nullopt;
    const std::uint64_t need = (std::uint64_t{len} + align_ - 1) / align_ * align_;
    // Whether a bucket without space may be given some: asked only when the
    // write point needs a new bucket and there are such buckets (it may read
    // statvfs, never under mu_). GC's write point ignores the free-space
    // floor: it frees more than it takes.
    std::optional<bool> fresh_ok;
    if (space_ == nullptr || wp.reserve_)
        fresh_ok = true;
    std::unique_lock lk(mu_);
    for (;;) {
        if (wp.bucket_) {
            const std::uint32_t b = *wp.bucket_;
            // Closed under it (retire_from), gone with a shrink, or full: a
            // new bucket. An owned bucket is open and below the cut.
            const bool mine = b < retire_ && slots_[b].owner == &wp;
            if (!mine || bucket_size_ - slots_[b].fill < need) {
                if (mine) {
                    slots_[b].state = meta::BucketState::full;
                    slots_[b].owner = nullptr;
                }
                wp.bucket_.reset();
            }
        }
        if (wp.bucket_)
            break;
        if (!fresh_ok && !fresh_.empty()) {
            lk.unlock();
            fresh_ok = space_->room_for_fresh();
            lk.lock();
            continue; // the lists may have changed meanwhile
        }
        const bool fresh_allowed = fresh_ok.value_or(false); // unset: there are none
        const std::size_t usable = free_.size() + (fresh_allowed ? fresh_.size() : 0);
        const std::uint32_t reserve = reserve_.load(std::memory_order_relaxed);
        if (!fresh_allowed && !fresh_.empty() && free_.size() <= reserve &&
            !floor_logged_.exchange(true))
            log::info("cache: the filesystem holding the cache is down to cache_min_free; the "
                      "cache takes no more space from it for now");
        if (usable == 0 || (usable <= reserve && !wp.reserve_))
            return std::nullopt;
        if (!free_.empty()) {
            wp.bucket_ = free_.front();
            free_.pop_front();
            slots_[*wp.bucket_].state = meta::BucketState::open;
            slots_[*wp.bucket_].fill = 0;
            slots_[*wp.bucket_].owner = &wp;
            break;
        }
        // A bucket without space: off every list (open, in no write point:
        // GC leaves it alone) while it gets some, without the lock.
        const std::uint32_t fb = fresh_.front();
        fresh_.pop_front();
        slots_[fb].state = meta::BucketState::open;
        lk.unlock();
        auto r = space_->back(fb);
        lk.lock();
        slots_[fb].state = meta::BucketState::free;
        if (!r) {
            if (fb < retire_) // else retired meanwhile: it stays off the lists
                fresh_.push_front(fb);
            if (!space_warned_.exchange(true))
                log::warn("cache: the cache data file cannot grow (", to_string(r.error()),
                          "); the cache takes no more space until some is free");
            return std::nullopt;
        }
        space_warned_.store(false, std::memory_order_relaxed);
        floor_logged_.store(false, std::memory_order_relaxed);
        backed_[fb] = true;
        if (fb >= retire_)
            continue; // retired meanwhile: it stays off the lists
        // Another thread may have opened a bucket for `wp` meanwhile: then
        // this one waits on the free list.
        free_.push_front(fb);
    }
    const std::uint32_t b = *wp.bucket_;
    Allocation a;
    a.bucket = b;
    a.gen = gens_[b].load(std::memory_order_relaxed);
    a.offset = slots_[b].fill;
    // Whole blocks: the tail of the last one is padding nobody else uses.
    slots_[b].fill += static_cast<std::uint32_t>(need);
    used_bytes_ += need;
    ++slots_[b].pins;
    a.pin = BucketPin(this, b);
    const std::uint64_t t = tick_.fetch_add(1, std::memory_order_relaxed);
    last_use_[b].store(t, std::memory_order_relaxed);
    filled_[b] = t;
    return a;
}

void Allocator::unpin(std::uint32_t bucket) noexcept {
    std::lock_guard lk(mu_);
    OC_ASSERT(slots_[bucket].pins > 0);
    --slots_[bucket].pins;
}

meta::BucketRecord Allocator::record_locked(std::uint32_t bucket) const {
    if (bucket >= slots_.size())
        return meta::BucketRecord{}; // gone with a shrink: holds nothing
    return record_of(bucket, slots_[bucket]);
}

meta::BucketRecord Allocator::record_of(std::uint32_t bucket, const Slot& s) const {
    return meta::BucketRecord{gens_[bucket].load(std::memory_order_relaxed),
                              s.state == meta::BucketState::free ? meta::BucketState::free
                                                                 : meta::BucketState::full,
                              s.fill,
                              s.live,
                              s.dirty,
                              last_use_[bucket].load(std::memory_order_relaxed),
                              s.pinned};
}

Result<void> Allocator::commit(IndexTxn& txn, bool sync) {
    std::lock_guard ck(commit_mu_);
    // The slots as they will be once the batch is written; applied to
    // memory only after the write succeeds.
    std::map<std::uint32_t, Slot> next;
    {
        std::lock_guard lk(mu_);
        for (const auto& d : txn.deltas) {
            if (d.bucket >= count_.load(std::memory_order_relaxed) ||
                gens_[d.bucket].load(std::memory_order_relaxed) != d.gen)
                continue; // reclaimed since: its bytes count for nothing now
            auto [it, fresh] = next.try_emplace(d.bucket, slots_[d.bucket]);
            Slot& s = it->second;
            const auto clamp = [](std::int64_t v, std::uint32_t hi) {
                return static_cast<std::uint32_t>(std::clamp<std::int64_t>(v, 0, hi));
            };
            if (static_cast<std::int64_t>(s.live) + d.live < 0 ||
                static_cast<std::int64_t>(s.dirty) + d.dirty < 0 ||
                static_cast<std::int64_t>(s.pinned) + d.pinned < 0)
                log::warn("cache: bucket ", d.bucket, " accounting went below zero; clamped");
            s.live = clamp(static_cast<std::int64_t>(s.live) + d.live, s.fill);
            s.dirty = clamp(static_cast<std::int64_t>(s.dirty) + d.dirty, s.live);
            s.pinned = clamp(static_cast<std::int64_t>(s.pinned) + d.pinned, s.live);
        }
        for (const auto& [b, s] : next)
            txn.batch.put(meta::Cf::buckets, meta::bucket_key(b), meta::encode(record_of(b, s)));
    }
    if (txn.batch.count() == 0)
        return {};
    if (auto r = meta_.write(txn.batch, sync); !r)
        return r;
    std::lock_guard lk(mu_);
    for (const auto& [b, s] : next) {
        auto& cur = slots_[b];
        live_bytes_ += s.live;
        live_bytes_ -= cur.live;
        dirty_bytes_ += s.dirty;
        dirty_bytes_ -= cur.dirty;
        pinned_bytes_ += s.pinned;
        pinned_bytes_ -= cur.pinned;
        cur.live = s.live;
        cur.dirty = s.dirty;
        cur.pinned = s.pinned;
    }
    return {};
}

void Allocator::touch(std::uint32_t bucket) {
    // Every FUSE thread's hits come here: no read-modify-write of the shared
    // tick and no store when the bucket already has it, so concurrent hits do
    // not bounce cache lines. The tick advances with allocations, so hits are
    // ordered by fill epochs, which is what reclaim needs: touched since the
    // last fills, or not.
    if (bucket >= count_.load(std::memory_order_acquire))
        return;
    const std::uint64_t t = tick_.load(std::memory_order_relaxed);
    if (last_use_[bucket].load(std::memory_order_relaxed) != t)
        last_use_[bucket].store(t, std::memory_order_relaxed);
}

void Allocator::seed_random(std::uint64_t seed) {
    std::lock_guard ck(commit_mu_);
    rng_.seed(seed);
}

Result<std::size_t> Allocator::reclaim(std::size_t n) {
    std::lock_guard ck(commit_mu_);
    const ReplacementPolicy policy = replacement_.get();
    std::vector<std::uint32_t> victims;
    {
        std::vector<std::pair<std::uint64_t, std::uint32_t>> cands;
        std::lock_guard lk(mu_);
        for (std::uint32_t b = 0; b < count_; ++b) {
            const auto& s = slots_[b];
            if (s.state != meta::BucketState::full || s.pins != 0 || s.dirty != 0 || s.pinned != 0)
                continue;
            // An empty bucket costs nothing to free: it goes first under
            // every policy; the others by the policy's key, least first.
            std::uint64_t key = 0;
            if (s.live != 0) {
                switch (policy) {
                case ReplacementPolicy::lru:
                    key = last_use_[b].load(std::memory_order_relaxed) + 1;
                    break;
                case ReplacementPolicy::fifo:
                    key = filled_[b] + 1;
                    break;
                case ReplacementPolicy::random:
                    key = (rng_() >> 1) + 1;
                    break;
                }
            }
            cands.emplace_back(key, b);
        }
        n = std::min(n, cands.size());
        std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(n),
                          cands.end());
        for (std::size_t i = 0; i < n; ++i)
            victims.push_back(cands[i].second);
    }
    if (victims.empty())
        return std::size_t{0};
    if (before_reclaim)
        before_reclaim(victims);
    return free_victims(victims);
}

Result<std::size_t> Allocator::free_victims(const std::vector<std::uint32_t>& victims) {
    auto batch = meta_.batch();
    std::vector<std::uint32_t> taken;
    {
        std::lock_guard lk(mu_);
        for (auto b : victims) {
            auto& s = slots_[b];
            // Pinned since it was picked (a write point cannot reopen a full
            // bucket, but a pin taken just before can still be in flight).
            if (s.state != meta::BucketState::full || s.pins != 0 || s.dirty != 0 || s.pinned != 0)
                continue;
            const std::uint32_t g = gens_[b].load(std::memory_order_relaxed) + 1;
            // Stale from this instant: readers compare gens after reading.
            gens_[b].store(g, std::memory_order_release);
            used_bytes_ -= s.fill;
            live_bytes_ -= s.live;
            s.fill = s.live = 0;
            // Out of every write point and off the free list until the
            // record is written.
            s.state = meta::BucketState::open;
            batch.put(
                meta::Cf::buckets, meta::bucket_key(b),
                meta::encode(meta::BucketRecord{g, meta::BucketState::free, 0, 0, 0,
                                                last_use_[b].load(std::memory_order_relaxed)}));
            taken.push_back(b);
        }
    }
    if (taken.empty())
        return std::size_t{0};
    // Synced: the bucket is about to be written again, and a lost gen bump
    // (power loss dropping the WAL's tail) would bring back extents that
    // point into it, fsynced dirty ones among them, over new bytes.
    if (auto r = meta_.write(batch, true); !r) {
        // The gens are bumped in memory, so the buckets' extents are stale
        // for this run; freeing them without a durable record could let a
        // restart revive the old gen. Keep them out of use (full, empty):
        // the next reclaim retries them.
        std::lock_guard lk(mu_);
        for (auto b : taken)
            slots_[b].state = meta::BucketState::full;
        return fail(r.error());
    }
    {
        std::lock_guard lk(mu_);
        for (auto b : taken) {
            slots_[b].state = meta::BucketState::free;
            list_free_locked(b);
        }
    }
    if (after_free)
        after_free(); // commit_mu_ still held: it must only post
    return taken.size();
}

void Allocator::list_free_locked(std::uint32_t b) {
    if (b >= retire_)
        return; // retiring: free, and never handed out again
    (backed_[b] ? free_ : fresh_).push_back(b);
}

std::size_t Allocator::give_back(std::size_t n) {
    if (space_ == nullptr || n == 0 || space_->room_for_fresh())
        return 0;
    std::vector<std::uint32_t> taken;
    {
        std::lock_guard lk(mu_);
        while (taken.size() < n && !free_.empty()) {
            const std::uint32_t b = free_.back();
            free_.pop_back();
            slots_[b].state = meta::BucketState::open; // on no list while punched
            taken.push_back(b);
        }
    }
    std::size_t given = 0;
    for (auto b : taken) {
        auto r = space_->release(b);
        if (!r && !release_warned_.exchange(true)) // e.g. no hole punching there: once
            log::warn("cache: ", to_string(r.error()), "; freed buckets keep their space");
        std::lock_guard lk(mu_);
        slots_[b].state = meta::BucketState::free;
        if (r) {
            backed_[b] = false;
            ++given;
        }
        list_free_locked(b);
    }
    return given;
}

std::vector<BucketUsage> Allocator::fragmented(std::uint64_t max_live, std::size_t n) const {
    std::vector<BucketUsage> out;
    {
        std::lock_guard lk(mu_);
        for (std::uint32_t b = 0; b < count_; ++b) {
            const auto& s = slots_[b];
            // live 0 is reclaim's (nothing to move); an open bucket is still
            // being appended to.
            if (s.state == meta::BucketState::full && s.pins == 0 && s.live != 0 &&
                s.live < max_live)
                out.push_back(BucketUsage{b, gens_[b].load(std::memory_order_relaxed), s.live,
                                          s.dirty, s.pinned});
        }
    }
    std::sort(out.begin(), out.end(), [](const BucketUsage& x, const BucketUsage& y) {
        return x.live != y.live ? x.live < y.live : x.bucket < y.bucket;
    });
    if (out.size() > n)
        out.resize(n);
    return out;
}

std::uint64_t Allocator::room(const WritePoint& wp) const {
    std::lock_guard lk(mu_);
    // A bucket retired (or gone) under the write point takes nothing more.
    if (!wp.bucket_ || *wp.bucket_ >= retire_ || slots_[*wp.bucket_].owner != &wp)
        return 0;
    return bucket_size_ - slots_[*wp.bucket_].fill;
}

meta::BucketRecord Allocator::record(std::uint32_t bucket) const {
    std::lock_guard lk(mu_);
    return record_locked(bucket);
}

Result<void> Allocator::save_all() {
    std::lock_guard ck(commit_mu_);
    auto b = meta_.batch();
    {
        std::lock_guard lk(mu_);
        for (std::uint32_t i = 0; i < count_; ++i)
            if (slots_[i].state != meta::BucketState::free)
                b.put(meta::Cf::buckets, meta::bucket_key(i), meta::encode(record_locked(i)));
    }
    return meta_.write(b);
}

std::size_t Allocator::free_count() const {
    std::size_t backed = 0, fresh = 0;
    {
        std::lock_guard lk(mu_);
        backed = free_.size();
        fresh = fresh_.size();
    }
    // Only a cache that still has buckets without space asks the
    // filesystem (GC's kick asks this at every write).
    if (fresh == 0 || space_ == nullptr || space_->room_for_fresh())
        return backed + fresh;
    return backed;
}

std::size_t Allocator::backed_count() const {
    std::lock_guard lk(mu_);
    return static_cast<std::size_t>(std::count(backed_.begin(), backed_.end(), true));
}

std::uint64_t Allocator::used_bytes() const {
    std::lock_guard lk(mu_);
    return used_bytes_;
}

AllocatorStats Allocator::stats() const {
    std::lock_guard lk(mu_);
    AllocatorStats s;
    s.live_bytes = live_bytes_;
    s.dirty_bytes = dirty_bytes_;
    s.pinned_bytes = pinned_bytes_;
    s.used_bytes = used_bytes_;
    s.backed_buckets = static_cast<std::uint64_t>(std::count(backed_.begin(), backed_.end(), true));
    for (const auto& sl : slots_) {
        s.pinned += sl.pins != 0 ? 1 : 0;
        s.dirty_buckets += sl.dirty != 0 ? 1 : 0;
        s.reclaimable +=
            sl.state == meta::BucketState::full && sl.pins == 0 && sl.dirty == 0 && sl.pinned == 0
                ? 1
                : 0;
    }
    return s;
}

BucketHistogram Allocator::histogram() const {
    BucketHistogram h;
    std::vector<std::uint64_t> ages;
    ages.reserve(count_);
    const std::uint64_t now = tick_.load(std::memory_order_relaxed);
    {
        std::lock_guard lk(mu_);
        for (std::uint32_t b = 0; b < count_; ++b) {
            const Slot& sl = slots_[b];
            if (sl.state == meta::BucketState::free) {
                ++h.unused;
                continue;
            }
            ++(sl.dirty != 0 ? h.dirty : h.clean);
            const std::uint64_t used = last_use_[b].load(std::memory_order_relaxed);
            ages.push_back(now > used ? now - used : 0);
        }
    }
    // Sorted outside the lock: allocations do not wait for the control file.
    std::sort(ages.begin(), ages.end());
    if (!ages.empty())
        for (std::size_t q = 0; q < h.age.size(); ++q)
            h.age[q] = ages[(ages.size() - 1) * q / (h.age.size() - 1)];
    return h;
}

std::uint64_t Allocator::dirty_bytes() const {
    std::lock_guard lk(mu_);
    return dirty_bytes_;
}

std::uint64_t Allocator::pinned_bytes() const {
    std::lock_guard lk(mu_);
    return pinned_bytes_;
}

std::uint64_t Allocator::pinned_cap() const {
    const std::uint32_t count = bucket_count(), reserve = this->reserve();
    const std::uint64_t usable = count > reserve ? count - reserve : 0;
    return usable * bucket_size_ / kPinnedShareDiv;
}

} // namespace overcache::store
