// DOC: the Allocator's half of a live resize (cache/live_resize.cpp drives
// it, one resize at a time). The crash rules are store/resize.cpp's: the
// index is the authority on the size, the data device is made ready for
// both sizes before the index batch that changes it and trimmed only after.
//  - grow: the new buckets' records (free, at gens above any stale extent
//    entry that names their numbers: a shrink leaves such entries, and one
//    at a matching gen would read as current) go in one synced batch with
//    the superblock; the count is published (release) only after the data
//    header, and the arrays read without the lock (gens_, last_use_) were
//    grown before, in chunks that never move;
//  - shrink: buckets >= keep are retired first: off the free lists and out
//    of the write points, so no new byte lands there. The mover copies
//    dirty and pinned extents below keep (and clean ones while they fit),
//    GC frees the clean buckets (gen bump, record written, left off the
//    lists); once every retiring bucket
//    is free and idle, one synced batch deletes their records with the new
//    superblock, then the header, the truncation, and the count drops.
//    Until then cancel_retire() gives them all back to use.
// Lock order as everywhere here: commit_mu_, then mu_.
#include "overcache/meta/key_codec.hpp"
#include "overcache/store/allocator.hpp"
#include "util/size_text.hpp"

#include <algorithm>
#include <cerrno>
#include <cstddef>

namespace overcache::store {

Result<void> Allocator::add_buckets(std::uint32_t n, const std::vector<std::uint32_t>& gens,
                                    meta::Batch batch) {
    std::lock_guard ck(commit_mu_);
    const std::uint32_t old = count_.load(std::memory_order_relaxed);
    if (n <= old || gens.size() != n - old)
        return fail(Errc::BadValue, "add_buckets: " + std::to_string(n) + " buckets is no growth");
    {
        std::lock_guard lk(mu_);
        // Past the published count nobody reads these yet: readers check
        // the count first.
        gens_.grow(n);
        last_use_.grow(n);
        slots_.resize(n);
        filled_.resize(n, 0);
        backed_.resize(n, false);
        for (std::uint32_t b = old; b < n; ++b) {
            gens_[b].store(gens[b - old], std::memory_order_relaxed);
            last_use_[b].store(0, std::memory_order_relaxed);
            slots_[b] = Slot{};
            filled_[b] = 0;
            // A data file's new length is sparse: the bucket gets its space
            // when first handed out, as any bucket without it.
            backed_[b] = space_ == nullptr;
            batch.put(meta::Cf::buckets, meta::bucket_key(b),
                      meta::encode(
                          meta::BucketRecord{gens[b - old], meta::BucketState::free, 0, 0, 0, 0}));
        }
    }
    return meta_.write(batch, true);
}

void Allocator::publish_grow(std::uint32_t n) {
    std::lock_guard lk(mu_);
    const std::uint32_t old = count_.load(std::memory_order_relaxed);
    retire_ = n;
    for (std::uint32_t b = old; b < n; ++b)
        list_free_locked(b);
    count_.store(n, std::memory_order_release);
}

Allocator::ShrinkNeed Allocator::shrink_need_locked(std::uint32_t keep) const {
    ShrinkNeed need;
    const std::uint32_t count = count_.load(std::memory_order_relaxed);
    for (std::uint32_t b = 0; b < count; ++b) {
        const Slot& s = slots_[b];
        need.dirty_bytes += s.dirty;
        need.pinned_bytes += s.pinned;
        if (s.dirty == 0 && s.pinned == 0)
            continue;
        if (b < keep)
            ++need.held_below;
        else
            need.move_bytes += std::min<std::uint64_t>(s.live, std::uint64_t{s.dirty} + s.pinned);
    }
    // The copies go in whole blocks into new buckets (one more for the
    // last, partly filled, and one for the open bucket GC may hold), and
    // the reserve stays free for GC.
    const std::uint64_t moved_buckets = (need.move_bytes + bucket_size_ - 1) / bucket_size_;
    const std::uint64_t want = std::uint64_t{need.held_below} + moved_buckets +
                               (need.move_bytes > 0 ? 2 : 0) + reserve_.load();
    need.need = static_cast<std::uint32_t>(std::min<std::uint64_t>(want, UINT32_MAX));
    need.fits = want <= keep;
    return need;
}

Allocator::ShrinkNeed Allocator::shrink_need(std::uint32_t keep) const {
    std::lock_guard lk(mu_);
    return shrink_need_locked(keep);
}

Result<void> Allocator::retire_from(std::uint32_t keep) {
    {
        std::lock_guard lk(mu_);
        const std::uint32_t count = count_.load(std::memory_order_relaxed);
        if (keep >= count || keep == 0)
            return fail(Errc::BadValue, "retire_from: " + std::to_string(keep) + " of " +
                                            std::to_string(count) + " buckets is no shrink");
        if (retire_ != count)
            return fail_sys(EBUSY, "another resize is running");
        if (const auto n = shrink_need_locked(keep); !n.fits)
            return fail(Errc::CacheFull,
                        "the cache holds " + size_text(n.dirty_bytes) + " of dirty data and " +
                            size_text(n.pinned_bytes) + " of pinned data, which need " +
                            std::to_string(n.need) + " buckets of " + size_text(bucket_size_) +
                            " (" + size_text(std::uint64_t{n.need} * bucket_size_) +
                            ", the GC reserve included), and a cache of " +
                            size_text((std::uint64_t{keep} + 1) * bucket_size_) + " has " +
                            std::to_string(keep) +
                            "; nothing was changed (run `overcache flush MOUNTPOINT` to write "
                            "dirty data back, unpin, or choose a larger size)");
    }
    if (before_retire)
        before_retire();
    std::lock_guard lk(mu_);
    const std::uint32_t count = count_.load(std::memory_order_relaxed);
    if (retire_ != count)
        return fail_sys(EBUSY, "another resize is running");
    retire_ = keep;
    const auto past = [keep](std::uint32_t b) { return b >= keep; };
    free_.erase(std::remove_if(free_.begin(), free_.end(), past), free_.end());
    fresh_.erase(std::remove_if(fresh_.begin(), fresh_.end(), past), fresh_.end());
    for (std::uint32_t b = keep; b < count; ++b) {
        Slot& s = slots_[b];
        // An open bucket of a write point: full from now on; the write
        // point lets go of it at its next alloc (it owns it no more).
        if (s.state == meta::BucketState::open && s.owner != nullptr) {
            s.state = meta::BucketState::full;
            s.owner = nullptr;
        }
    }
    return {};
}

std::uint32_t Allocator::retiring_from() const {
    std::lock_guard lk(mu_);
    return retire_;
}

std::vector<BucketUsage> Allocator::retiring_held(std::size_t n) const {
    std::vector<BucketUsage> out;
    std::lock_guard lk(mu_);
    const std::uint32_t count = count_.load(std::memory_order_relaxed);
    for (std::uint32_t b = retire_; b < count && out.size() < n; ++b) {
        const Slot& s = slots_[b];
        if (s.state == meta::BucketState::full && s.pins == 0 && (s.dirty != 0 || s.pinned != 0))
            out.push_back(BucketUsage{b, gens_[b].load(std::memory_order_relaxed), s.live, s.dirty,
                                      s.pinned});
    }
    return out;
}

std::vector<BucketUsage> Allocator::retiring_clean(std::size_t n) const {
    std::vector<BucketUsage> out;
    std::vector<std::uint64_t> used; // last_use of out[i]
    {
        std::lock_guard lk(mu_);
        const std::uint32_t count = count_.load(std::memory_order_relaxed);
        for (std::uint32_t b = retire_; b < count; ++b) {
            const Slot& s = slots_[b];
            if (s.state == meta::BucketState::full && s.pins == 0 && s.dirty == 0 &&
                s.pinned == 0 && s.live != 0) {
                out.push_back(
                    BucketUsage{b, gens_[b].load(std::memory_order_relaxed), s.live, 0, 0});
                used.push_back(last_use_[b].load(std::memory_order_relaxed));
            }
        }
    }
    std::vector<std::size_t> order(out.size());
    for (std::size_t i = 0; i < order.size(); ++i)
        order[i] = i;
    const std::size_t take = std::min(n, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(take), order.end(),
                      [&used](std::size_t a, std::size_t b) { return used[a] > used[b]; });
    std::vector<BucketUsage> hottest;
    for (std::size_t i = 0; i < take; ++i)
        hottest.push_back(out[order[i]]);
    return hottest;
}

Result<std::size_t> Allocator::reclaim_retiring(const std::vector<std::uint32_t>& spared) {
    std::lock_guard ck(commit_mu_);
    std::vector<std::uint32_t> victims;
    {
        std::lock_guard lk(mu_);
        const std::uint32_t count = count_.load(std::memory_order_relaxed);
        for (std::uint32_t b = retire_; b < count; ++b) {
            const Slot& s = slots_[b];
            if (s.state == meta::BucketState::full && s.pins == 0 && s.dirty == 0 &&
                s.pinned == 0 && std::find(spared.begin(), spared.end(), b) == spared.end())
                victims.push_back(b);
        }
    }
    if (victims.empty())
        return std::size_t{0};
    return free_victims(victims);
}

std::size_t Allocator::retiring_busy() const {
    std::lock_guard lk(mu_);
    std::size_t busy = 0;
    const std::uint32_t count = count_.load(std::memory_order_relaxed);
    for (std::uint32_t b = retire_; b < count; ++b)
        busy += slots_[b].state != meta::BucketState::free || slots_[b].pins != 0 ? 1 : 0;
    return busy;
}

void Allocator::cancel_retire() {
    std::lock_guard lk(mu_);
    const std::uint32_t from = retire_;
    retire_ = count_.load(std::memory_order_relaxed);
    for (std::uint32_t b = from; b < retire_; ++b)
        if (slots_[b].state == meta::BucketState::free)
            list_free_locked(b);
}

Result<void> Allocator::drop_retired(meta::Batch batch) {
    std::lock_guard ck(commit_mu_);
    {
        std::lock_guard lk(mu_);
        const std::uint32_t count = count_.load(std::memory_order_relaxed);
        if (retire_ >= count)
            return fail(Errc::BadValue, "drop_retired: no bucket is retiring");
        for (std::uint32_t b = retire_; b < count; ++b)
            if (slots_[b].state != meta::BucketState::free || slots_[b].pins != 0)
                return fail_sys(EBUSY, "bucket " + std::to_string(b) + " is still in use");
        // No record of theirs is written after this delete: commit()
        // accounts only current extents (none are: every one was freed,
        // its gen bumped), reclaim and save_all skip free buckets, and
        // nothing hands them out.
        batch.del_range(meta::Cf::buckets, meta::bucket_key(retire_), meta::bucket_key(count));
    }
    return meta_.write(batch, true);
}

void Allocator::publish_shrink() {
    std::lock_guard lk(mu_);
    const std::uint32_t keep = retire_;
    count_.store(keep, std::memory_order_release);
    // Nothing refers to the slots past the count any more (free, no pins);
    // the atomics stay (readers may still hold an old count) and are reset
    // by a later grow.
    slots_.resize(keep);
    filled_.resize(keep);
    backed_.resize(keep);
}

} // namespace overcache::store
