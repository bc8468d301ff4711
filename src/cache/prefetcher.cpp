// DOC: the prefetcher. `prefetch PATH` hands a file over (an fd of our
// own, its stat, the per-path policy); the prefetcher's thread opens it as
// an open through the mount would (the close-to-open check: a file changed
// behind the mount loses its stale extents first), then walks its chunks
// (fill_size, aligned) in order. A chunk the cache holds is skipped; the
// others are claimed in the read path's in-flight set (a read filling the
// same chunk is waited for; the pending-fill cap is waited on, never
// skipped), read from the backing and committed by commit_fill, the read
// path's own commit, so every race rule of fills holds: a write, truncate
// or backing change since the chunk's ticket makes it stand down (it is
// tried again), a file with dirty data is never filled. The explicit ask
// overrides sequential_cutoff and promote_after_hits. A thread of its own,
// not the fill executor: a prefetch waits for fills to drain, and waiting
// on the executor it waits for would never end. No lock is held across the
// backing read. A file the cache cannot hold fails "the cache is full",
// with how much was fetched, rather than evicting its own first chunks.
#include "cache/prefetcher.hpp"

#include "cache/fill.hpp"
#include "util/file_io.hpp"
#include "util/log.hpp"
#include "util/size_text.hpp"

#include <algorithm>
#include <cerrno>
#include <pthread.h>

namespace overcache::cache {
namespace {

// A chunk that raced with writes this many times is left to the reads.
constexpr int kRaceRetries = 3;

} // namespace

Prefetcher::Prefetcher(CacheCore& core, Deps deps) : core_(core), deps_(std::move(deps)) {
    thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "oc-prefetch");
        loop();
    });
}

void Prefetcher::enqueue(const meta::FileKey& key, UniqueFd fd, const struct stat& st,
                         const FilePolicy& policy, Done<void> done) {
    {
        std::lock_guard lk(mu_);
        if (!stopping_) {
            auto same = [&](const std::shared_ptr<Job>& j) { return j && j->key == key; };
            if (same(running_)) {
                running_->waiters.push_back(std::move(done));
                return;
            }
            for (auto& j : queue_)
                if (same(j)) {
                    j->waiters.push_back(std::move(done));
                    return;
                }
            auto job = std::make_shared<Job>();
            job->key = key;
            job->fd = std::move(fd);
            job->st = st;
            job->policy = policy;
            job->waiters.push_back(std::move(done));
            queue_.push_back(std::move(job));
            cv_.notify_one();
            return;
        }
    }
    done(fail_sys(ESHUTDOWN, "the mount is shutting down"));
}

void Prefetcher::stop() {
    {
        std::lock_guard lk(mu_);
        if (stopping_ && !thread_.joinable())
            return;
        stopping_ = true;
        cancel_.store(true);
        cv_.notify_all();
    }
    if (thread_.joinable())
        thread_.join();
}

std::uint64_t Prefetcher::queued() const {
    std::lock_guard lk(mu_);
    return queue_.size() + (running_ ? 1 : 0);
}

bool Prefetcher::cancelled() const {
    return cancel_.load() || core_.stopped.load();
}

void Prefetcher::loop() {
    for (;;) {
        std::shared_ptr<Job> job;
        {
            std::unique_lock lk(mu_);
            cv_.wait(lk, [this] { return stopping_ || !queue_.empty(); });
            if (stopping_)
                break;
            job = std::move(queue_.front());
            queue_.pop_front();
            running_ = job;
        }
        Result<void> r = run(*job);
        std::vector<Done<void>> waiters;
        {
            // Waiters that joined while it ran are answered with the rest.
            std::lock_guard lk(mu_);
            running_.reset();
            waiters = std::move(job->waiters);
        }
        for (auto& w : waiters)
            w(r);
    }
    // Stopping: what is still queued never ran.
    std::deque<std::shared_ptr<Job>> left;
    {
        std::lock_guard lk(mu_);
        left.swap(queue_);
    }
    for (auto& j : left)
        for (auto& w : j->waiters)
            w(fail_sys(ESHUTDOWN, "the mount is shutting down; the prefetch did not start"));
}

bool Prefetcher::cached(meta::FileId fid, std::uint64_t start, std::uint64_t end) {
    thread_local std::vector<Piece> pieces;
    if (auto r = core_.index.lookup(fid, start, end, pieces); !r)
        return false; // read again: a fill over it is harmless
    std::uint64_t at = start;
    for (const auto& p : pieces) {
        if (p.start > at || !core_.alloc.current(p.v.bucket, p.v.gen))
            return false;
        at = std::max(at, p.end());
        if (at >= end)
            return true;
    }
    return at >= end;
}

Result<void> Prefetcher::run(Job& job) {
    auto opened = deps_.open(job.fd.get(), job.st, job.policy);
    if (!opened)
        return fail(opened.error());
    auto& f = static_cast<CachedFile&>(*opened->file);
    FileState& st = f.state();
    if (!opened->keep_page_cache) {
        // This open may have been the one to notice a change behind the
        // mount (and dropped the stale extents): the kernel's pages of the
        // file are stale too, and the next open through the mount must drop
        // them, as it would have had it noticed the change itself.
        std::lock_guard lk(st.mu);
        if (st.rec)
            (void)core_.records.set_flags(st, meta::kFileKernelPagesStale, 0);
    }
    if (st.uncached.load() || core_.degraded.load())
        return fail_sys(EIO, "the cache cannot hold this file now (see the log)");

    const std::uint64_t fill = core_.p.fill_size;
    const std::uint64_t fsize = st.size.load();
    std::uint64_t fetched = 0; // filled by this prefetch
    std::uint64_t held = 0;    // of the chunks walked, the bytes now in the cache
    std::vector<char> buf;
    auto so_far = [&] {
        return "after fetching " + size_text(fetched) + " of " + size_text(fsize);
    };
    bool gc_tried = false;
    for (std::uint64_t c = 0; c * fill < fsize; ++c) {
        const std::uint64_t cs = c * fill;
        const std::uint64_t ce = std::min(cs + fill, fsize);
        for (int attempt = 0;; ++attempt) {
            if (cancelled())
                return fail_sys(ESHUTDOWN, "the mount is shutting down; stopped " + so_far());
            if (st.ahead.load()) {
                // Dirty data: the backing's bytes may be older than it, so
                // the file is not filled; reads merge the two.
                log::info("cache: prefetch stopped at a file with dirty data ", so_far(),
                          "; the rest is read from the backing");
                return {};
            }
            const FillTicket ticket = fill_ticket(st);
            if (cached(ticket.fid, cs, ce)) {
                held += ce - cs;
                break;
            }
            // Past what the cache can hold, GC would make room by evicting
            // the file's first chunks: stop instead, and say so.
            if (held + (ce - cs) > deps_.room_bytes())
                return fail_sys(ENOSPC,
                                "the cache is full: it holds no more of this file " + so_far());
            // A pinned file past the pinned cap would be cached unpinned
            // (evictable): not what was asked; stop and say so.
            if (st.pinned.load() &&
                core_.alloc.pinned_bytes() + (ce - cs) > core_.alloc.pinned_cap())
                return fail_sys(ENOSPC, "pinned data is at its cap (half the cache): no more "
                                        "of this file is pinned " +
                                            so_far());
            if (!deps_.reader.claim(ticket.fid, cs, ce - cs, [this] { return cancelled(); }))
                continue; // cancelled: reported above
            buf.resize(ce - cs);
            const ssize_t n = pread_upto(f.fd(), buf.data(), ce - cs, cs);
            FillOutcome out = FillOutcome::raced;
            if (n == static_cast<ssize_t>(ce - cs)) {
                if (deps_.hooks.before_fill_commit)
                    deps_.hooks.before_fill_commit();
                out = commit_fill(core_, st, ticket, cs, buf);
            }
            deps_.reader.release(ticket.fid, cs, ce - cs);
            if (n < 0)
                return fail_sys(static_cast<int>(-n), "reading the backing at offset " +
                                                          std::to_string(cs) + " " + so_far());
            if (n != static_cast<ssize_t>(ce - cs))
                return {}; // the backing shrank: what is left of it is cached
            if (out == FillOutcome::filled) {
                fetched += ce - cs;
                held += ce - cs;
                core_.c.prefetch_bytes += ce - cs;
                core_.kick_gc();
                break;
            }
            if (out == FillOutcome::full) {
                if (gc_tried)
                    return fail_sys(ENOSPC, "the cache is full: no free bucket " + so_far());
                // GC gets its chance once before the prefetch gives up.
                gc_tried = true;
                deps_.gc_now();
                continue;
            }
            if (out == FillOutcome::failed)
                return fail_sys(EIO, "the cache device refused a fill (see the log) " + so_far());
            if (attempt + 1 >= kRaceRetries)
                break; // written to over and over: the writes cache it
        }
    }
    return {};
}

} // namespace overcache::cache
