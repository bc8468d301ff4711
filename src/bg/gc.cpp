// DOC: garbage collection of the cache, on the GC strand only. A pass frees
// buckets: it picks the least recently used full buckets, bumps their gens
// (every extent in them is stale from that instant: the read path compares
// gens), writes their free records, and only after that write puts them on
// the free list. Then it sweeps the extents column family, deleting extents
// whose gen is stale, in small batches. GC never waits for foreground work:
// it takes no buckets, holds the allocator lock only for bookkeeping, and a
// full cache just makes foreground fills skip. Errors are logged and the pass
// is retried at the next kick.
#include "overcache/bg/gc.hpp"

#include "overcache/meta/key_codec.hpp"
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

void Gc::drop_file(meta::FileId file) {
    if (stopping_.load(std::memory_order_relaxed))
        return;
    boost::asio::post(strand_, [this, file] {
        auto b = meta_.batch();
        b.del_range(meta::Cf::extents, meta::extent_key(file, 0), meta::extent_prefix_end(file));
        if (auto r = meta_.write(b); !r)
            log::warn("gc: cannot drop the extents of file ", file, ": ", to_string(r.error()));
        std::lock_guard lk(stats_mu_);
        ++stats_.files_dropped;
    });
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
    reclaim(force ? std::max(params_.high_free, free_now + 1) : params_.high_free);
    sweep();
    std::lock_guard lk(stats_mu_);
    ++stats_.runs;
}

void Gc::reclaim(std::size_t target_free) {
    const std::size_t free_now = alloc_.free_count();
    if (free_now >= target_free)
        return;
    auto victims = alloc_.pick_victims(target_free - free_now);
    if (victims.empty())
        return;
    auto b = meta_.batch();
    for (auto v : victims)
        b.put(meta::Cf::buckets, meta::bucket_key(v), meta::encode(alloc_.invalidate(v)));
    if (auto r = meta_.write(b); !r) {
        // The gens are bumped in memory already, so the buckets' extents are
        // stale for this run; freeing them without a durable record could
        // let a restart revive the old gen. Keep them out of use.
        log::error("gc: cannot record freed buckets: ", to_string(r.error()));
        return;
    }
    alloc_.release(victims);
    std::lock_guard lk(stats_mu_);
    stats_.buckets_reclaimed += victims.size();
}

void Gc::sweep() {
    constexpr std::size_t kBatch = 1024;
    auto cur = meta_.cursor(meta::Cf::extents);
    auto b = meta_.batch();
    std::uint64_t removed = 0;
    meta::ExtentValue v; // reused: a sweep may decode millions of extents
    for (cur.seek_to_first(); cur.valid() && !stopping_.load(std::memory_order_relaxed);
         cur.next()) {
        if (meta::decode_extent(cur.value(), v) && alloc_.current(v.bucket, v.gen))
            continue;
        b.del(meta::Cf::extents, cur.key());
        ++removed;
        if (b.count() >= kBatch) {
            if (auto r = meta_.write(b); !r) {
                log::warn("gc: sweep: ", to_string(r.error()));
                return;
            }
            b = meta_.batch();
        }
    }
    if (auto s = cur.status(); !s)
        log::warn("gc: sweep: ", to_string(s.error()));
    if (b.count() > 0)
        if (auto r = meta_.write(b); !r)
            log::warn("gc: sweep: ", to_string(r.error()));
    std::lock_guard lk(stats_mu_);
    stats_.stale_extents_removed += removed;
}

} // namespace overcache::bg
