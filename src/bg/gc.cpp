// DOC: garbage collection of the cache, on the GC strand only. A pass asks
// the Allocator to free buckets (store/allocator.cpp: never pinned by a
// write in flight, never holding dirty data; empty ones first, then least
// recently used; gen bump, record written, then free). When that leaves
// free buckets under the target, moving GC runs in rounds: the Allocator
// names the full buckets with the least live data, the BucketMover
// (cache/mover.cpp) copies their live extents, dirty ones included, through
// GC's own write point — the only one allowed into the reserve — and the
// buckets it emptied are reclaimed like any other. GC never waits for
// foreground work: it takes no foreground write point, holds no lock a
// request waits on across I/O, and a full cache just makes foreground fills
// skip. Errors are logged and the pass is retried at the next kick. While
// the filesystem holding a cache data file is below cache_min_free, the
// buckets a pass frees have their space punched (Allocator::give_back), so
// the cache shrinks back towards the floor instead of holding it.
#include "overcache/bg/gc.hpp"

#include "util/log.hpp"

#include <boost/asio/post.hpp>
#include <cerrno>
#include <chrono>
#include <future>

namespace overcache::bg {

Gc::Gc(Strand strand, store::Allocator& alloc, meta::MetaStore& meta, GcParams p,
       BucketMover* mover)
    : strand_(std::move(strand)), alloc_(alloc), meta_(meta), params_(p), mover_(mover) {}

void Gc::set_watermarks(std::size_t low_free, std::size_t high_free) {
    params_.high_free.set(high_free);
    params_.low_free.set(low_free);
    kick();
}

void Gc::kick() {
    if (stopping_.load(std::memory_order_relaxed) || alloc_.free_count() >= params_.low_free)
        return;
    if (queued_.exchange(true))
        return; // a pass is already queued and will see the current state
    boost::asio::post(strand_, [this] {
        queued_.store(false);
        run(false);
    });
}

void Gc::trigger() {
    if (stopping_.load(std::memory_order_relaxed))
        return;
    boost::asio::post(strand_, [this] { run(true); });
}

void Gc::wait_idle() {
    std::promise<void> done;
    auto f = done.get_future();
    boost::asio::post(strand_, [&done] { done.set_value(); });
    f.wait();
}

void Gc::stop() {
    stopping_.store(true);
}

GcStats Gc::stats() const {
    std::lock_guard lk(stats_mu_);
    return stats_;
}

void Gc::run(bool force) {
    if (stopping_.load())
        return;
    const std::size_t free_now = alloc_.free_count();
    if (!force && free_now >= params_.low_free)
        return;
    const auto started = std::chrono::steady_clock::now();
    const std::size_t target =
        force ? std::max<std::size_t>(params_.high_free, free_now + 1) : params_.high_free.get();
    std::size_t freed = 0;
    if (free_now < target) {
        auto r = alloc_.reclaim(target - free_now);
        if (!r)
            log::error("gc: cannot record freed buckets: ", to_string(r.error()));
        else
            freed = *r;
    }
    // Reclaim could not get there: what holds the space is live (often
    // dirty or pinned) data spread thin over many buckets.
    if (mover_ != nullptr && alloc_.free_count() < target)
        freed += compact(target, force);
    // Short of free space on the cache's filesystem: what was freed goes
    // back to it rather than waiting on the free list (cache_min_free).
    const std::size_t given = freed > 0 ? alloc_.give_back(freed) : 0;
    if (force) {
        // An explicit pass also compacts the extents, so that the stale ones
        // leave the index now (the compaction filter drops them).
        if (auto r = meta_.compact_extents(); !r)
            log::warn("gc: compacting the index: ", to_string(r.error()));
    }
    const auto took = std::chrono::steady_clock::now() - started;
    std::lock_guard lk(stats_mu_);
    ++stats_.runs;
    stats_.last_run_us = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(took).count());
    stats_.buckets_reclaimed += freed;
    stats_.buckets_given_back += given;
}

} // namespace overcache::bg

namespace overcache::bg {

std::size_t Gc::compact(std::size_t target, bool force) {
    // Each round moves at most move_batch buckets' live data: a bounded
    // stretch of work on the strand, and the index scanned once a round.
    constexpr int kMaxRounds = 4;
    const std::uint64_t max_live = alloc_.bucket_size() * params_.move_below_percent / 100;
    std::size_t freed = 0;
    for (int round = 0; round < kMaxRounds && !stopping_.load(); ++round) {
        if (alloc_.free_count() >= target)
            break;
        auto cands = alloc_.fragmented(max_live, params_.move_batch);
        if (cands.empty())
            break;
        if (!force && cands == fruitless_)
            break; // nothing changed since they could not be moved
        auto r = mover_->move(wp_, cands);
        if (!r) {
            log::error("gc: moving GC: ", to_string(r.error()));
            std::lock_guard lk(stats_mu_);
            ++stats_.move_errors;
            break;
        }
        std::size_t got = 0;
        if (r->emptied > 0) {
            // Empty buckets go first, so this frees the ones just emptied.
            auto f = alloc_.reclaim(r->emptied);
            if (!f)
                log::error("gc: cannot record freed buckets: ", to_string(f.error()));
            else
                got = *f;
        }
        freed += got;
        {
            std::lock_guard lk(stats_mu_);
            stats_.moved_bytes += r->bytes;
            stats_.buckets_moved += got;
        }
        if (r->emptied == 0) {
            fruitless_ = std::move(cands);
            break;
        }
        fruitless_.clear();
    }
    return freed;
}

} // namespace overcache::bg
