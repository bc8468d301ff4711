// DOC: the bucket allocator. Data is appended to one open bucket (the
// foreground write point) and reclaimed a whole bucket at a time: GC bumps
// the bucket's gen, which invalidates every extent in it without touching
// the index, and only then returns it to the free list. Gens and LRU ticks
// are atomics so the read path checks them without the lock; everything else
// is guarded by mu_, which is never held across I/O. The last `reserve_`
// free buckets are never handed to the foreground.
#include "overcache/store/allocator.hpp"

#include "util/log.hpp"

#include <algorithm>

namespace overcache::store {

Allocator::Allocator(std::uint32_t bucket_count, std::uint64_t bucket_size, std::uint32_t reserve)
    : count_(bucket_count), bucket_size_(bucket_size), reserve_(reserve),
      gens_(new std::atomic<std::uint32_t>[bucket_count]),
      last_use_(new std::atomic<std::uint64_t>[bucket_count]), slots_(bucket_count) {
    for (std::uint32_t b = 0; b < count_; ++b) {
        gens_[b].store(0, std::memory_order_relaxed);
        last_use_[b].store(0, std::memory_order_relaxed);
    }
}

void Allocator::load(std::uint32_t bucket, const meta::BucketRecord& r) {
    if (bucket >= count_)
        return;
    std::lock_guard lk(mu_);
    gens_[bucket].store(r.gen, std::memory_order_relaxed);
    last_use_[bucket].store(r.last_use, std::memory_order_relaxed);
    // A bucket open when the daemon stopped is not appended to again: its
    // tail may hold bytes of fills whose extents never reached the index.
    slots_[bucket].state =
        r.state == meta::BucketState::free ? meta::BucketState::free : meta::BucketState::full;
    slots_[bucket].fill = r.state == meta::BucketState::free ? 0 : r.fill_bytes;
    if (r.last_use >= tick_.load(std::memory_order_relaxed))
        tick_.store(r.last_use + 1, std::memory_order_relaxed);
}

void Allocator::finish_load() {
    std::lock_guard lk(mu_);
    free_.clear();
    used_bytes_ = 0;
    for (std::uint32_t b = 0; b < count_; ++b) {
        if (slots_[b].state == meta::BucketState::free)
            free_.push_back(b);
        else
            used_bytes_ += slots_[b].fill;
    }
}

std::optional<Allocation> Allocator::alloc(std::uint32_t len) {
    if (len == 0 || len > bucket_size_)
        return std::nullopt;
    std::lock_guard lk(mu_);
    if (open_ && bucket_size_ - slots_[*open_].fill < len) {
        slots_[*open_].state = meta::BucketState::full;
        open_.reset();
    }
    if (!open_) {
        if (free_.size() <= reserve_)
            return std::nullopt;
        open_ = free_.front();
        free_.pop_front();
        slots_[*open_].state = meta::BucketState::open;
        slots_[*open_].fill = 0;
    }
    const std::uint32_t b = *open_;
    Allocation a;
    a.bucket = b;
    a.gen = gens_[b].load(std::memory_order_relaxed);
    a.offset = slots_[b].fill;
    slots_[b].fill += len;
    used_bytes_ += len;
    const std::uint64_t t = tick_.fetch_add(1, std::memory_order_relaxed);
    last_use_[b].store(t, std::memory_order_relaxed);
    a.record = meta::BucketRecord{.gen = a.gen,
                                  .state = meta::BucketState::open,
                                  .fill_bytes = slots_[b].fill,
                                  .last_use = t};
    return a;
}

void Allocator::touch(std::uint32_t bucket) {
    // Every FUSE thread's hits come here: no read-modify-write of the shared
    // tick and no store when the bucket already has it, so concurrent hits do
    // not bounce cache lines. The tick advances with allocations, so hits are
    // ordered by fill epochs, which is what reclaim (run when fills need
    // buckets) needs: touched since the last fills, or not.
    if (bucket >= count_)
        return;
    const std::uint64_t t = tick_.load(std::memory_order_relaxed);
    if (last_use_[bucket].load(std::memory_order_relaxed) != t)
        last_use_[bucket].store(t, std::memory_order_relaxed);
}

std::vector<std::uint32_t> Allocator::pick_victims(std::size_t n) {
    std::vector<std::pair<std::uint64_t, std::uint32_t>> cands;
    {
        std::lock_guard lk(mu_);
        for (std::uint32_t b = 0; b < count_; ++b)
            if (slots_[b].state == meta::BucketState::full)
                cands.emplace_back(last_use_[b].load(std::memory_order_relaxed), b);
    }
    n = std::min(n, cands.size());
    std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(n), cands.end());
    std::vector<std::uint32_t> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
        out.push_back(cands[i].second);
    return out;
}

meta::BucketRecord Allocator::invalidate(std::uint32_t bucket) {
    OC_ASSERT(bucket < count_);
    std::lock_guard lk(mu_);
    // Only full buckets are victims and nothing but GC frees them, so the
    // state cannot have changed since pick_victims().
    OC_ASSERT(slots_[bucket].state == meta::BucketState::full);
    const std::uint32_t g = gens_[bucket].load(std::memory_order_relaxed) + 1;
    gens_[bucket].store(g, std::memory_order_release);
    used_bytes_ -= slots_[bucket].fill;
    slots_[bucket].fill = 0;
    // Not on the free list until release(): its record must be written first.
    slots_[bucket].state = meta::BucketState::open;
    return meta::BucketRecord{.gen = g,
                              .state = meta::BucketState::free,
                              .fill_bytes = 0,
                              .last_use = last_use_[bucket].load(std::memory_order_relaxed)};
}

void Allocator::release(const std::vector<std::uint32_t>& buckets) {
    std::lock_guard lk(mu_);
    for (auto b : buckets) {
        slots_[b].state = meta::BucketState::free;
        free_.push_back(b);
    }
}

meta::BucketRecord Allocator::record(std::uint32_t bucket) const {
    std::lock_guard lk(mu_);
    const auto& s = slots_[bucket];
    return meta::BucketRecord{.gen = gens_[bucket].load(std::memory_order_relaxed),
                              .state = s.state == meta::BucketState::free ? meta::BucketState::free
                                                                          : meta::BucketState::full,
                              .fill_bytes = s.fill,
                              .last_use = last_use_[bucket].load(std::memory_order_relaxed)};
}

std::size_t Allocator::free_count() const {
    std::lock_guard lk(mu_);
    return free_.size();
}

std::uint64_t Allocator::used_bytes() const {
    std::lock_guard lk(mu_);
    return used_bytes_;
}

} // namespace overcache::store
