// DOC: live resize of a mounted cache, on its own strand of the GC
// executor. The crash-ordering rules are those of the offline resize
// (store/resize.cpp): the data device is made ready for both sizes before
// the one synced index batch that changes the superblock, and trimmed only
// after it; the data header follows the index (a lagging header is
// repaired at open). In memory the new count is published last, so until
// then nothing is handed out past the old end (grow) and nothing is read
// past the new one that was not already stale (shrink).
//  - grow: extend the data file (sparse, synced); a read-only scan of the
//    extents finds stale entries that name the new bucket numbers (a
//    shrink leaves them: the extent index has owners, nobody else deletes
//    a key) so the new buckets start at a gen above them; one synced batch
//    writes their records and the superblock; the header; publish.
//  - shrink to K buckets: refused up front when the dirty and pinned data
//    cannot fit below K (nothing changed). Otherwise buckets >= K retire
//    (never handed out again); rounds on the GC strand move dirty and
//    pinned extents below K, and the most recently used clean data while
//    there is room for it, and free the rest (bg::Gc::evacuate); a
//    bucket with a write in flight is waited for by another round, never
//    by blocking. When they are all free: one synced batch deletes their
//    records with the new superblock; the header; the truncation; publish.
//    New dirty data that makes it stop fitting, an error, no progress for
//    stall_limit, or the mount stopping: the retirement is cancelled (the
//    buckets go back to use) and the error reported.
// Stale extent entries past a new, smaller end stay: current() rejects
// them, the compaction filter drops them, and a later grow starts above.
#include "cache/live_resize.hpp"

#include "overcache/meta/key_codec.hpp"
#include "overcache/store/resize.hpp"
#include "util/log.hpp"
#include "util/size_text.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>

namespace overcache::cache {
namespace {

// `e` with what was being done in front of its message; its code and errno
// stay (they are what the control write answers with).
Unexpected failed(Error e, const std::string& doing) {
    e.message = doing + ": " + e.message;
    return fail(std::move(e));
}

} // namespace

LiveResize::LiveResize(CacheCore& core, bg::Gc& gc, bg::Strand strand,
                       std::function<void()> changed)
    : core_(core), gc_(gc), strand_(std::move(strand)), changed_(std::move(changed)),
      timer_(strand_) {}

void LiveResize::resize(std::uint64_t size, Done<std::uint64_t> done) {
    // Decided under the lock, answered outside it (end() takes it too).
    bool stopping = false, busy = false;
    {
        std::lock_guard lk(mu_);
        stopping = stopping_;
        busy = active_;
        if (!stopping && !busy)
            active_ = true;
    }
    if (stopping)
        return done(fail_sys(ESHUTDOWN, "the mount is shutting down"));
    if (busy)
        return done(fail_sys(EBUSY, "another change of cache_size is still running"));
    boost::asio::post(strand_, [this, size, done = std::move(done)]() mutable {
        done_ = std::move(done);
        run(size);
    });
}

void LiveResize::stop() {
    std::unique_lock lk(mu_);
    stopping_ = true;
    // A round in flight ends at its next step (a retry timer is short).
    idle_cv_.wait(lk, [this] { return !active_; });
}

void LiveResize::end(Result<std::uint64_t> r) {
    auto done = std::move(done_);
    done_ = nullptr;
    {
        std::lock_guard lk(mu_);
        active_ = false;
    }
    idle_cv_.notify_all();
    done(std::move(r));
}

void LiveResize::run(std::uint64_t size) {
    const std::uint64_t bucket_size = core_.alloc.bucket_size();
    auto usable = store::usable_cache_size(size, bucket_size);
    if (!usable)
        return end(fail(usable.error()));
    if (core_.degraded.load())
        return end(fail_sys(EIO, "the cache is degraded (cache device errors); cache_size can "
                                 "change at the next mount"));
    const std::uint64_t now = core_.dev->cache_size();
    if (*usable == now)
        return end(now);
    target_ = *usable;
    if (*usable > now) {
        auto r = grow(*usable);
        if (!r)
            return end(failed(r.error(), "cannot grow the cache from " + size_text(now) + " to " +
                                             size_text(*usable)));
        log::info("cache: cache_size ", size_text(now), " -> ", size_text(*usable));
        return end(*usable);
    }
    keep_ = static_cast<std::uint32_t>(*usable / bucket_size - 1);
    if (auto r = core_.alloc.retire_from(keep_); !r)
        return end(failed(r.error(), "cannot shrink the cache from " + size_text(now) + " to " +
                                         size_text(*usable)));
    log::info("cache: shrinking from ", size_text(now), " to ", size_text(*usable),
              ": moving dirty and pinned data, and the clean data that fits, out of the buckets "
              "past the new end");
    last_busy_ = SIZE_MAX;
    progress_at_ = std::chrono::steady_clock::now();
    shrink_round();
}

Result<std::uint64_t> LiveResize::grow(std::uint64_t size) {
    auto& dev = *core_.dev;
    const std::uint32_t old = core_.alloc.bucket_count();
    const auto n = static_cast<std::uint32_t>(size / core_.alloc.bucket_size() - 1);
    // Data first: a longer file is harmless to the cache as it is.
    if (auto r = dev.prepare_grow(size); !r)
        return fail(r.error());
    auto gens = gens_above_stale(old, n);
    if (!gens)
        return fail(gens.error());
    auto batch = dev.meta().batch();
    batch.put(meta::Cf::meta, meta::kSuperblockKey, meta::encode(dev.superblock_for(size)));
    if (auto r = core_.alloc.add_buckets(n, *gens, std::move(batch)); !r)
        return fail(r.error());
    // The index has the new size from here on: a header that lags it is
    // repaired at the next open, so a failure here is not the resize's.
    if (auto r = dev.write_header(size); !r)
        log::warn("cache: ", to_string(r.error()), "; the next mount repairs it");
    core_.alloc.publish_grow(n);
    dev.set_cache_size(size);
    changed_();
    return size;
}

Result<std::vector<std::uint32_t>> LiveResize::gens_above_stale(std::uint32_t old,
                                                                std::uint32_t n) {
    std::vector<std::uint32_t> gens(n - old, 0);
    auto cur = core_.dev->meta().cursor(meta::Cf::extents);
    meta::ExtentValue v;
    for (cur.seek_to_first(); cur.valid(); cur.next()) {
        if (!meta::decode_extent(cur.value(), v) || v.bucket < old || v.bucket >= n)
            continue;
        // An entry at the last gen cannot be passed: it does not match a
        // new bucket's gen until that wraps, after 2^32 reclaims.
        if (v.gen != UINT32_MAX)
            gens[v.bucket - old] = std::max(gens[v.bucket - old], v.gen + 1);
    }
    if (auto st = cur.status(); !st)
        return fail(st.error());
    return gens;
}

void LiveResize::retry_later(std::chrono::milliseconds after) {
    timer_.expires_after(after);
    timer_.async_wait([this](const boost::system::error_code&) { shrink_round(); });
}

void LiveResize::shrink_round() {
    const std::uint64_t from = core_.dev->cache_size();
    auto stop_with = [&](Error e) {
        core_.alloc.cancel_retire();
        log::warn("cache: shrinking to ", size_text(target_), " stopped: ", e.message,
                  "; cache_size stays ", size_text(from));
        e.message = "cannot shrink the cache from " + size_text(from) + " to " +
                    size_text(target_) + ": " + e.message + "; cache_size stays " + size_text(from);
        end(fail(std::move(e)));
    };
    bool stopping = false;
    {
        std::lock_guard lk(mu_);
        stopping = stopping_;
    }
    // Outside the lock: end() takes it.
    if (stopping)
        return stop_with(Error{Errc::Sys, ESHUTDOWN, "the mount is shutting down"});
    if (const auto need = core_.alloc.shrink_need(keep_); !need.fits)
        return stop_with(Error{Errc::CacheFull, 0,
                               "the dirty and pinned data (" + size_text(need.dirty_bytes) +
                                   " dirty, " + size_text(need.pinned_bytes) +
                                   " pinned) grew past what " + size_text(target_) + " can hold (" +
                                   std::to_string(need.need) + " buckets needed, " +
                                   std::to_string(keep_) + " there)"});
    gc_.evacuate([this](Result<std::size_t> busy) {
        boost::asio::post(strand_, [this, busy = std::move(busy)]() mutable {
            if (!busy) {
                core_.alloc.cancel_retire();
                Error e = std::move(busy).error();
                e.message = "cannot shrink the cache to " + size_text(target_) + ": " + e.message +
                            "; nothing was changed";
                return end(fail(std::move(e)));
            }
            if (*busy == 0)
                return shrink_finish();
            if (between_rounds)
                between_rounds(*busy);
            const auto now = std::chrono::steady_clock::now();
            if (*busy < last_busy_) {
                last_busy_ = *busy;
                progress_at_ = now;
                return retry_later(std::chrono::milliseconds(0));
            }
            if (now - progress_at_ > stall_limit) {
                core_.alloc.cancel_retire();
                log::warn("cache: shrinking to ", size_text(target_), " stopped: ", *busy,
                          " buckets past the new end stayed in use; they are back in use");
                return end(fail_sys(
                    EBUSY, "cannot shrink the cache to " + size_text(target_) + ": " +
                               std::to_string(*busy) +
                               " buckets past the new end stayed in use (writes in flight or "
                               "data that could not be moved); nothing was changed"));
            }
            retry_later(std::chrono::milliseconds(10));
        });
    });
}

void LiveResize::shrink_finish() {
    auto& dev = *core_.dev;
    const std::uint64_t from = dev.cache_size();
    auto batch = dev.meta().batch();
    batch.put(meta::Cf::meta, meta::kSuperblockKey, meta::encode(dev.superblock_for(target_)));
    if (auto r = core_.alloc.drop_retired(std::move(batch)); !r) {
        if (r.error().code == Errc::Sys && r.error().sys_errno == EBUSY)
            return retry_later(std::chrono::milliseconds(10)); // a pin came and goes
        core_.alloc.cancel_retire();
        Error e = r.error();
        e.message += "; nothing was changed";
        return end(failed(std::move(e), "cannot shrink the cache to " + size_text(target_)));
    }
    // The index has the new size: what follows cannot undo it, and a
    // header or a file longer than it says is repaired or harmless.
    if (auto r = dev.write_header(target_); !r)
        log::warn("cache: ", to_string(r.error()), "; the next mount repairs it");
    if (auto r = dev.trim(target_); !r)
        log::warn("cache: ", to_string(r.error()), "; the data file keeps its old length");
    core_.alloc.publish_shrink();
    dev.set_cache_size(target_);
    changed_();
    log::info("cache: cache_size ", size_text(from), " -> ", size_text(target_));
    end(target_);
}

} // namespace overcache::cache
