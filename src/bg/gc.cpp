// DOC: garbage collection of the cache, on the GC strand only. A pass asks
// the Allocator to free buckets (store/allocator.cpp: least recently used,
// never pinned by a write in flight, never holding dirty data; gen bump,
// record written, then free). GC never waits for foreground work: it takes
// no foreground write point, holds no lock a request waits on across I/O,
// and a full cache just makes foreground fills skip. Errors are logged and
// the pass is retried at the next kick.
#include "overcache/bg/gc.hpp"

#include "util/log.hpp"

#include <boost/asio/post.hpp>
#include <future>

namespace overcache::bg {

Gc::Gc(Strand strand, store::Allocator& alloc, meta::MetaStore& meta, GcParams p)
    : strand_(std::move(strand)), alloc_(alloc), meta_(meta), params_(p) {}

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
    const std::size_t target = force ? std::max(params_.high_free, free_now + 1) : params_.high_free;
    std::size_t freed = 0;
    if (free_now < target) {
        auto r = alloc_.reclaim(target - free_now);
        if (!r)
            log::error("gc: cannot record freed buckets: ", to_string(r.error()));
        else
            freed = *r;
    }
    if (force) {
        // An explicit pass also compacts the extents, so that the stale ones
        // leave the index now (the compaction filter drops them).
        if (auto r = meta_.compact_extents(); !r)
            log::warn("gc: compacting the index: ", to_string(r.error()));
    }
    std::lock_guard lk(stats_mu_);
    ++stats_.runs;
    stats_.buckets_reclaimed += freed;
}

} // namespace overcache::bg
