// DOC: the write path (writethrough, writearound). A change of a file's
// bytes runs end to end under FileState::write_mu, so two writes of one
// range reach the backing and the cache in the same order even when the
// kernel does not serialise them (mmap writeback beside write(2)):
//  1. fstat the backing and compare with the record (weak cache
//     consistency): a difference is a change behind the mount, which drops
//     the file's extents before anything else happens;
//  2. the backing operation;
//  3. under the owner lock: bump write_seq (fills that read before now
//     stand down), put the written bytes in the cache (writethrough, chunk
//     aligned like fills) or punch the range, and only then record the
//     backing's new attributes — a crash between the two leaves a record
//     that no longer matches the backing, which reads as a change.
// A cache that cannot take the bytes (no bucket, a device error) punches
// the range instead, so it never keeps what the write replaced.
// Writeback: a write goes into the cache as dirty data: its bytes to the
// device with no lock of the file held, then its index commit under
// write_mu and mu (no backing I/O). A write queues for both (commit_dirty);
// the first thread to find no group running takes the whole queue, puts
// its bytes on the device in as few writes as their places allow (back to
// back in a bucket: one), commits them in as few batches as their punches
// allow, and answers each write; the threads of the others go back to their
// requests at once. The kernel's writeback of one fsync's pages comes as
// many requests at once: one by one, each slept in its own device write and
// again waiting for the commit before it (about two sleeps and wake-ups per
// 4 KiB, most of a small write's CPU on these machines). A large write
// (kPlacedByWriter) still puts its own bytes on the device before it
// queues: large device writes gain more from overlapping than from being
// merged. A write's bytes live in a pooled buffer (write_buffers.hpp)
// until it is answered. A write that finds no room parks
// (parked_writes.cpp): its bytes are copied, the FUSE thread returns
// without replying, and the write is retried without any lock held in
// between, until it fits or writeback_wait_max passes (then it goes around
// the cache). While writes are parked, new writes park behind them, in
// order.
// While the cache device is write-congested (congestion.hpp), writethrough
// writes go around it, and writeback writes too unless they overlap dirty
// data (write_around, as when there is no room).
#include "cache/write_path.hpp"

#include "backing/file_ops.hpp"
#include "cache/backing_lock.hpp"
#include "cache/congestion.hpp"
#include "cache/pin.hpp"
#include "util/log.hpp"
#include "util/thread_buffer.hpp"

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <fcntl.h>
#include <linux/falloc.h>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <utility>
#include <vector>

namespace overcache::cache {
namespace {

constexpr std::uint64_t kToEnd = UINT64_MAX;
// Writeback writes at least this long are placed on the cache device by
// their own thread; shorter ones by the thread that commits their group,
// together (WritePath::write).
constexpr std::size_t kPlacedByWriter = 128 * 1024;

// A writethrough write's bytes, on their way to the backing and the cache.
struct WriteBytes;

} // namespace

WritePath::WritePath(CacheCore& core, const CacheHooks& hooks, bg::Strand park_strand)
    : core_(core), hooks_(hooks),
      parked_(std::move(park_strand),
              std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::duration<double>(std::max(0.0, core.p.writeback_wait_max_s.get()))),
              // On the park strand, not a request thread: under the gate's
              // deadline all the same, so that a stalled backing answers
              // the waiting write with EIO instead of holding it.
              ParkedWrites::Ops{
                  [this](ParkedWrite& w) {
                      return core_.with_backing_deadline([&] { return retry_parked(w); });
                  },
                  [this](ParkedWrite& w) {
                      return core_.with_backing_deadline([&] {
                          return write_around(*w.file, w.data.data(), w.data.size(), w.off);
                      });
                  },
                  [this] {
                      core_.room_wanted_until_ns.store(
                          std::chrono::duration_cast<std::chrono::nanoseconds>(
                              (std::chrono::steady_clock::now() + std::chrono::seconds(2))
                                  .time_since_epoch())
                              .count());
                      core_.kick_gc();
                      core_.kick_writeback();
                  },
                  [this](UniqueFd fd) { core_.close_backing_fd(std::move(fd)); }}) {}

Result<bool> WritePath::check_backing(FileState& st, int fd) {
    auto now = backing::fstat_file(fd);
    if (!now)
        return fail(now.error());
    std::lock_guard lk(st.mu);
    if (auto r = core_.records.load(st); !r)
        log::warn("cache: ", to_string(r.error()));
    auto changed = core_.records.revalidate(st, *now);
    if (!changed) {
        log::warn("cache: ", to_string(changed.error()));
        return false;
    }
    if (*changed)
        ++core_.c.backing_changes;
    return *changed;
}

template <class Op>
Result<ChangeOut> WritePath::change(FileState& st, int stat_fd, Op&& op) {
    return change(st, stat_fd, [] { return Result<void>{}; }, std::forward<Op>(op));
}

template <class Pre, class Op>
Result<ChangeOut> WritePath::change(FileState& st, int stat_fd, Pre&& pre, Op&& op) {
    ChangeOut out;
    std::lock_guard wl(st.write_mu);
    if (auto r = pre(); !r)
        return fail(r.error());
    // Writeback copies to the backing under backing_mu: the comparison and
    // our own backing change must not see half of one.
    auto bl = lock_backing(st);
    if (!bl)
        return fail(std::move(bl).error());
    auto changed = check_backing(st, stat_fd);
    if (!changed)
        return fail(changed.error());
    out.backing_changed = *changed;
    // A file with dirty data carries kFileWritingBack (synced) while we
    // change its backing: a crash before the record follows must not make
    // the next mount take our own change for someone else's (a conflict).
    bool marked = false;
    {
        std::lock_guard lk(st.mu);
        if (st.rec && (st.rec->flags & meta::kFileAhead) != 0 &&
            (st.rec->flags & meta::kFileWritingBack) == 0) {
            meta::FileRecord rec = *st.rec;
            rec.flags |= meta::kFileWritingBack;
            auto t = core_.index.txn();
            if (auto r = core_.records.commit(st, t, rec, true); !r)
                return fail(r.error());
            marked = true;
        }
    }
    auto upd = op();
    if (!upd) {
        // EIO: the change may have happened in part, or may still land (a
        // backing call that missed its deadline), so the cache stops
        // vouching for any byte the backing holds; those are read again.
        // (Other errors change nothing: a short write succeeds.) A file
        // with dirty data keeps them: they are the newest acknowledged
        // bytes, and writeback puts them over whatever landed (once it has:
        // CacheCore::backing_unsettled).
        if (to_errno(upd.error()) == EIO) {
            std::lock_guard lk(st.mu);
            ++st.write_seq;
            if (st.rec && !st.uncached.load()) {
                if ((st.rec->flags & meta::kFileAhead) == 0)
                    update_cache(st, CacheUpdate{0, kToEnd, nullptr});
                else
                    drop_clean(st);
            }
        }
        if (marked) {
            // Nothing or part of it happened: the backing as it is now is ours.
            std::lock_guard lk(st.mu);
            struct stat now {};
            if (st.rec && backing::stat_fd(stat_fd, now) == 0) {
                meta::FileRecord rec = *st.rec;
                take_attrs(rec, now);
                rec.flags &= ~meta::kFileWritingBack;
                auto t = core_.index.txn();
                (void)core_.records.commit(st, t, rec, true);
            }
        }
        return fail(upd.error());
    }
    if (hooks_.after_backing_write)
        hooks_.after_backing_write();
    std::lock_guard lk(st.mu);
    ++st.write_seq;
    if (st.rec && !st.uncached.load())
        update_cache(st, *upd);
    auto after = backing::fstat_file(stat_fd);
    if (!after) {
        // The bytes changed and we cannot say how the backing looks now:
        // stop trusting the record.
        st.uncached.store(true);
        return out;
    }
    st.backing_unsynced.store(true);
    st.size.store(static_cast<std::uint64_t>(after->st_size));
    if (st.rec && !st.uncached.load())
        record_change(st, *upd, *after);
    return out;
}

void WritePath::record_change(FileState& st, const CacheUpdate& u, const struct stat& after) {
    // A change through the mount ends a conflict (kFileConflict): the
    // cache and the backing agree on the file again.
    if ((st.rec->flags & meta::kFileAhead) == 0) {
        if ((st.rec->flags & meta::kFileConflict) != 0)
            if (auto r = core_.records.set_flags(st, 0, meta::kFileConflict); !r)
                log::warn("cache: cannot update a file record: ", to_string(r.error()));
        if (auto r = core_.records.record_after(st, after); !r)
            log::warn("cache: cannot update a file record: ", to_string(r.error()));
        return;
    }
    meta::FileRecord rec = *st.rec;
    take_attrs(rec, after);
    rec.flags &= ~(meta::kFileWritingBack | meta::kFileConflict);
    switch (u.size_rule) {
    case CacheUpdate::Size::keep:
        break;
    case CacheUpdate::Size::at_least:
        rec.cache_size = std::max(rec.cache_size, u.size);
        break;
    case CacheUpdate::Size::exact:
        rec.cache_size = u.size;
        break;
    }
    // The backing may have grown past what the cache knew (an allocation
    // or a copy that the backing extended).
    rec.cache_size = std::max(rec.cache_size, static_cast<std::uint64_t>(after.st_size));
    if (u.size_rule == CacheUpdate::Size::exact)
        rec.cache_size = u.size;
    rec.cache_mtime_ns = now_ns();
    auto t = core_.index.txn();
    if (auto r = core_.records.commit(st, t, rec); !r)
        log::warn("cache: cannot update a file record: ", to_string(r.error()));
}

Result<WritePath::Dirty> WritePath::write_dirty(CachedFile& f, const char* data, std::size_t len,
                                                std::uint64_t off, bool stamp) {
    auto w = std::make_unique<QueuedDirty>(f, data, len, off, stamp);
    // Settled by whichever thread commits its group: this one, before
    // commit_dirty returns, or one committing now.
    struct Outcome {
        std::mutex mu;
        std::condition_variable cv;
        std::optional<Result<Dirty>> r;
    };
    auto outcome = std::make_shared<Outcome>();
    w->settled = [outcome](Result<Dirty> r) {
        std::lock_guard lk(outcome->mu);
        outcome->r.emplace(std::move(r));
        outcome->cv.notify_all();
    };
    commit_dirty(std::move(w));
    std::unique_lock lk(outcome->mu);
    outcome->cv.wait(lk, [&] { return outcome->r.has_value(); });
    return std::move(*outcome->r);
}

void WritePath::commit_dirty(std::unique_ptr<QueuedDirty> w) {
    // Group commit: the writes that come together (the kernel's writeback
    // of the pages of one fsync) would otherwise each sleep in their own
    // device write, then commit one after another under write_mu, each
    // woken by the one before. Here the first to find no commit running
    // places and commits all that are queued and answers them; the others
    // go back to their requests without waiting. It keeps on until the
    // queue is empty: a write queued while it runs has no other thread to
    // commit it.
    // The state outlives the last answer (its opens may close once answered).
    // Nothing past the push may throw: the write is then the queue's to
    // answer, and an exception would have its request answered twice.
    const StateRef keep = w->file->ref();
    FileState& st = *keep;
    std::unique_lock q(st.commit_mu);
    st.commit_queue.push_back(w.get());
    w.release();
    if (hooks_.dirty_queued)
        hooks_.dirty_queued(st.commit_queue.size());
    if (st.committing)
        return;
    st.committing = true;
    std::vector<QueuedDirty*> group;
    while (!st.commit_queue.empty()) {
        group.swap(st.commit_queue);
        q.unlock();
        settle_group(group); // empties it
        q.lock();
    }
    st.committing = false;
}

void WritePath::place_group(const std::vector<QueuedDirty*>& group) {
    if (core_.degraded.load()) {
        for (auto& w : group)
            w->out = Dirty::not_cacheable;
        return;
    }
    // The bytes go to the device with no lock of the file held, so that a
    // truncate or a write around the cache need not wait for them. Nothing
    // refers to them until they are staged at the commit; if they never
    // are, they are dead space for GC. Chunk-aligned pieces, like fills, so
    // extents never cross a chunk.
    std::vector<ExtentIndex::PlaceItem> items;
    std::vector<QueuedDirty*> placing;
    items.reserve(group.size());
    placing.reserve(group.size());
    for (QueuedDirty* w : group)
        if (!w->placed_by_writer) {
            items.push_back({w->off, w->data, w->len, &w->placed});
            placing.push_back(w);
        }
    if (items.empty())
        return;
    core_.index.place_all(core_.fg_wp, items, core_.p.fill_size);
    for (std::size_t i = 0; i < placing.size(); ++i) {
        auto& r = items[i].placed;
        if (!r)
            placing[i]->out = fail(r.error()); // nothing committed: around the cache
        else
            placing[i]->out = *r ? Dirty::cached : Dirty::no_room; // no_room: nothing committed
    }
}

void WritePath::settle_group(std::vector<QueuedDirty*>& group) noexcept {
    // Deleted once answered (their buffers back to the pool), however this
    // ends; outside commit_mu.
    struct Owned {
        std::vector<QueuedDirty*>& group;
        ~Owned() {
            for (QueuedDirty* w : group)
                delete w; // NOLINT: the queue's raw ownership ends here
            group.clear();
        }
    } owned{group};
    try {
        if (hooks_.before_dirty_commit)
            hooks_.before_dirty_commit(group.size());
        place_group(group);
        std::vector<QueuedDirty*> placed;
        for (QueuedDirty* w : group)
            if (w->out && *w->out == Dirty::cached) {
                placed.push_back(w);
                // Cached only once committed: a commit that ends early (an
                // exception too) leaves the rest to go around the cache,
                // never answered as if their bytes were in the index.
                w->out = Dirty::not_cacheable;
            }
        // Through an open of the group's: each is alive until answered.
        if (!placed.empty())
            commit_group(*placed.front()->file, placed);
    } catch (const std::exception& e) {
        // Writes whose outcome was not set go around the cache.
        log::warn("cache: a commit of dirty writes failed: ", e.what());
    }
    bool cached = false, sync = false;
    for (const QueuedDirty* w : group)
        if (w->out && *w->out == Dirty::cached) {
            cached = true;
            sync = sync || (w->done && w->file->sync_writes());
        }
    Result<void> synced{};
    if (sync) {
        try {
            synced = core_.sync_dirty();
        } catch (const std::exception& e) {
            synced = fail_sys(EIO, "sync of dirty data");
        }
    }
    if (cached)
        core_.kick_writeback();
    for (QueuedDirty* w : group) {
        try {
            answer(*w, synced);
        } catch (const std::exception& e) {
            log::warn("cache: a dirty write could not be answered: ", e.what());
            if (w->done)
                std::exchange(w->done, nullptr)(fail_sys(EIO, "write"));
            else if (w->settled)
                std::exchange(w->settled, nullptr)(fail_sys(EIO, "write"));
        }
    }
}

void WritePath::answer(QueuedDirty& w, const Result<void>& synced) {
    if (!w.done)
        return std::exchange(w.settled, nullptr)(std::move(w.out));
    auto done = std::exchange(w.done, nullptr);
    if (w.out && *w.out == Dirty::cached) {
        if (w.file->sync_writes() && !synced)
            return done(fail(synced.error()));
        return done(w.len);
    }
    if (w.out && *w.out == Dirty::no_room && room_may_come() &&
        park(*w.file, w.data, w.len, w.off, w.stamp, done))
        return;
    if (!w.out)
        log::warn("cache: a write could not go to the cache (", to_string(w.out.error()),
                  "); writing it to the backing");
    done(write_around(*w.file, w.data, w.len, w.off));
}

Result<std::pair<std::uint64_t, std::uint64_t>>
WritePath::punch_span(meta::FileId fid, std::uint64_t off, std::uint64_t end) {
    thread_local std::vector<Piece> pieces;
    if (auto r = core_.index.lookup(fid, off, end, pieces); !r)
        return fail(r.error());
    std::uint64_t from = off, to = end;
    for (const Piece& p : pieces) {
        from = std::min(from, p.start);
        to = std::max(to, p.end());
    }
    return std::pair{from, to};
}

void WritePath::commit_group(CachedFile& f, const std::vector<QueuedDirty*>& group) {
    FileState& st = f.state();
    const auto settle = [&](std::size_t from, std::size_t to, const Result<Dirty>& r) {
        for (std::size_t i = from; i < to; ++i)
            group[i]->out = r.has_value() ? Result<Dirty>(*r) : Result<Dirty>(fail(r.error()));
    };
    std::lock_guard wl(st.write_mu);
    std::unique_lock lk(st.mu);
    if (!st.loaded || !st.rec || (st.rec->flags & meta::kFileAhead) == 0) {
        // A change behind the mount is found before our bytes go in. A file
        // already ahead is not compared: it was at its open and at its first
        // dirty write, and writeback compares it before every batch (a
        // change then is a conflict, ours saved aside). So the writes of a
        // dirty file never wait for backing_mu, which a writeback batch
        // holds across its backing I/O.
        lk.unlock();
        {
            auto bl = lock_backing(st);
            if (!bl)
                return settle(0, group.size(), fail(std::move(bl).error()));
            if (auto changed = check_backing(st, f.fd()); !changed)
                return settle(0, group.size(), fail(changed.error()));
        }
        lk.lock();
    }
    if (!st.rec || st.uncached.load() || core_.degraded.load())
        return settle(0, group.size(), Dirty::not_cacheable);
    ++st.write_seq; // fills that read before now stand down
    const meta::FileId fid = st.fid.load();
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
    for (std::size_t i = 0; i < group.size();) {
        // One batch: from i, every write whose punch touches nothing an
        // earlier one of the batch touches (the first always goes in).
        auto t = core_.index.txn();
        spans.clear();
        std::size_t j = i;
        std::uint64_t end = 0;
        bool stamp = false;
        for (; j < group.size(); ++j) {
            QueuedDirty& g = *group[j];
            if (group.size() > 1) {
                auto span = punch_span(fid, g.off, g.off + g.len);
                if (!span)
                    return settle(i, group.size(), fail(span.error())); // nothing committed
                const bool apart = std::none_of(spans.begin(), spans.end(), [&](const auto& s) {
                    return span->first < s.second && s.first < span->second;
                });
                if (j > i && !apart)
                    break;
                spans.push_back(*span);
            }
            if (auto r = core_.index.stage_placement(
                    t, g.placed, fid, g.data, meta::kExtentDirty | pin_flag(core_, st, g.len));
                !r)
                // Part of this write may be staged: the whole batch is
                // dropped, and these writes go around the cache.
                return settle(i, group.size(), fail(r.error()));
            end = std::max(end, g.off + g.len);
            stamp = stamp || g.stamp;
        }
        meta::FileRecord rec = *st.rec;
        const bool was_ahead = (rec.flags & meta::kFileAhead) != 0;
        rec.cache_size = std::max(was_ahead ? rec.cache_size : rec.size, end);
        if (stamp)
            rec.cache_mtime_ns = now_ns();
        else if (!was_ahead)
            rec.cache_mtime_ns = rec.mtime_ns; // the kernel's setattr, if it came first
        rec.flags |= meta::kFileAhead;
        rec.flags &= ~meta::kFileConflict; // a write through the mount ends a conflict
        if (auto r = core_.records.commit(st, t, rec); !r)
            return settle(i, group.size(), fail(r.error())); // the record stops being trusted
        settle(i, j, Dirty::cached);
        core_.c.writes_dirty += j - i;
        i = j;
    }
    if (!st.wb_fd) {
        const int d = ::fcntl(f.fd(), F_DUPFD_CLOEXEC, 0);
        if (d >= 0)
            st.wb_fd.reset(d);
    }
}

Result<std::size_t> WritePath::dirty_written(CachedFile& f, std::size_t len) {
    if (f.sync_writes())
        if (auto s = core_.sync_dirty(); !s)
            return fail(s.error());
    core_.kick_writeback();
    return len;
}

Result<std::size_t> WritePath::write_around(CachedFile& f, const char* data, std::size_t len,
                                            std::uint64_t off) {
    FileState& st = f.state();
    ++core_.c.writes_around;
    core_.kick_writeback();
    std::size_t written = 0;
    auto r = change(st, f.fd(), [&]() -> Result<CacheUpdate> {
        auto n = backing::write_all(f.fd(), data, len, off);
        if (!n)
            return fail(n.error());
        written = *n;
        return CacheUpdate{off, off + written, nullptr, CacheUpdate::Size::at_least,
                           off + written};
    });
    if (!r)
        return fail(std::move(r).error());
    if (f.sync_writes() && st.ahead.load())
        if (auto s = backing::sync_file(f.fd(), true); !s)
            return fail(s.error());
    return written;
}

bool WritePath::room_may_come() const {
    if (core_.stopped.load() || core_.p.writeback_wait_max_s <= 0)
        return false;
    if (core_.p.writeback_running)
        return true;
    // Writeback is paused: only clean buckets can be freed. With none
    // (every bucket dirty), waiting would only delay the write.
    return core_.alloc.stats().reclaimable > 0;
}

bool WritePath::park(CachedFile& f, const char* data, std::size_t len, std::uint64_t off,
                     bool stamp, Done<std::size_t>& done) {
    // The request's fd belongs to its open, which the kernel may release
    // before a parked write is answered (an aborted connection): the waiter
    // holds a duplicate, and a reference to the file's state.
    const int d = ::fcntl(f.fd(), F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return false;
    auto w = std::make_unique<ParkedWrite>();
    w->fd.reset(d);
    w->file = std::make_unique<CachedFile>(d, f.ref(), f.sync_writes());
    w->data.assign(data, data + len);
    w->off = off;
    w->stamp = stamp;
    w->done = std::move(done);
    if (parked_.park(w))
        return true;
    done = std::move(w->done); // stopping: the caller answers
    return false;
}

ParkedWrites::Tried WritePath::retry_parked(ParkedWrite& w) {
    using Kind = ParkedWrites::Tried::Kind;
    auto in = write_dirty(*w.file, w.data.data(), w.data.size(), w.off, w.stamp);
    if (!in) {
        log::warn("cache: a parked write could not go to the cache (", to_string(in.error()),
                  "); writing it to the backing");
        return {Kind::not_cacheable, {}};
    }
    switch (*in) {
    case Dirty::cached:
        return {Kind::cached, dirty_written(*w.file, w.data.size())};
    case Dirty::no_room:
        return {Kind::no_room, {}};
    case Dirty::not_cacheable:
        break;
    }
    return {Kind::not_cacheable, {}};
}

void WritePath::drop_clean(FileState& st) {
    const meta::FileId fid = st.fid.load();
    auto pieces = core_.index.lookup(fid, 0, kToEnd);
    auto t = core_.index.txn();
    bool staged = pieces.has_value();
    if (pieces)
        for (const auto& p : *pieces)
            if ((p.v.flags & meta::kExtentDirty) == 0 && staged)
                staged = core_.index.stage_punch(t, fid, p.start, p.end()).has_value();
    if (!staged || !core_.index.commit(t)) {
        // Its dirty extents are the newest bytes, so the file is not given
        // up on (uncached). Should the change land, the next open or
        // writeback finds the backing changed and drops the clean ones.
        log::warn("cache: cannot drop the clean extents of inode ", st.key.ino,
                  " after a failed change");
    }
}

void WritePath::update_cache(FileState& st, const CacheUpdate& u) {
    if (u.end <= u.start)
        return;
    const meta::FileId fid = st.fid.load();
    auto t = core_.index.txn();
    std::uint64_t at = u.start;
    const bool cache_bytes = u.data != nullptr && u.end != kToEnd && !core_.degraded.load() &&
                             u.mode.value_or(core_.p.mode) == config::CacheMode::writethrough;
    if (cache_bytes) {
        // Chunk-aligned pieces, like fills, so extents never cross a chunk.
        const std::uint64_t fill = core_.p.fill_size;
        while (at < u.end) {
            const std::uint64_t next = std::min(u.end, (at / fill + 1) * fill);
            auto r = core_.index.stage_insert(t, core_.fg_wp, fid, at, u.data + (at - u.start),
                                              static_cast<std::uint32_t>(next - at),
                                              pin_flag(core_, st, next - at));
            if (!r || !*r)
                break; // the rest is punched
            at = next;
        }
        if (at > u.start)
            ++core_.c.writes_cached;
    }
    if (at < u.end) {
        ++core_.c.writes_punched;
        if (auto r = core_.index.stage_punch(t, fid, at, u.end); !r) {
            log::warn("cache: ", to_string(r.error()), "; serving the file from the backing");
            st.uncached.store(true);
            return;
        }
    }
    if (auto r = core_.index.commit(t); !r) {
        log::warn("cache: ", to_string(r.error()), "; serving the file from the backing");
        st.uncached.store(true);
    }
}

void WritePath::write(CachedFile& f, WriteSource& src, off_t off, Done<std::size_t> done) {
    FileState& st = f.state();
    const std::size_t size = src.size();
    if (off >= 0)
        core_.touched(st.key, static_cast<std::uint64_t>(off), size);
    std::size_t written = 0;
    // A write that comes while others are parked queues behind them even
    // if the cache could not take it anyway (the file or the cache stopped
    // caching meanwhile): it is acknowledged after them.
    // A per-path mode is fixed for the open; the mount's is read once here.
    const config::CacheMode mode = f.policy().mode.value_or(core_.p.mode);
    if (mode == config::CacheMode::writeback &&
        ((!core_.degraded.load() && !st.uncached.load()) || parked_.any_parked())) {
        WriteBuffers::Buffer bytes = buffers_.get(size);
        char* const buf = bytes.data();
        const ssize_t got = src.copy_to(buf);
        if (got < 0)
            return done(fail_sys(static_cast<int>(-got), "write request"));
        const auto uoff = static_cast<std::uint64_t>(off);
        const auto len = static_cast<std::size_t>(got);
        const bool stamp = !src.from_kernel_cache();
        // Behind parked writes: acknowledged after them, it must not land
        // before them, nor take the room they wait for.
        if (parked_.any_parked() && park(f, buf, len, uoff, stamp, done))
            return;
        // A congested cache device: around it, unless the range holds dirty
        // bytes, which must stay in the cache (they are the newest; going
        // around would leave writeback to order them against ours).
        if (write_congested(core_) && !overlaps_dirty(st, uoff, len)) {
            ++core_.c.congested_bypasses;
            return done(write_around(f, buf, len, uoff));
        }
        auto w = std::make_unique<QueuedDirty>(f, buf, len, uoff, stamp);
        w->bytes = std::move(bytes);
        w->done = std::move(done);
        if (len >= kPlacedByWriter) {
            // A large write's bytes go to the device from its own thread:
            // the device writes of several overlap (one thread writing them
            // in turn cost a third of the bandwidth of sequential writes),
            // and one sleep for so many bytes costs little.
            place_group({w.get()});
            if (!w->out || *w->out != Dirty::cached)
                return answer(*w, {}); // parked, or around the cache
            w->placed_by_writer = true;
        }
        // Committed and answered by whichever thread commits its group,
        // maybe not this one; placed there too unless placed above.
        return commit_dirty(std::move(w));
    }
    // Writethrough over a congested cache device: as writearound (the
    // range is punched, so no stale byte stays behind).
    const bool congested = mode == config::CacheMode::writethrough && write_congested(core_);
    auto r = change(st, f.fd(), [&]() -> Result<CacheUpdate> {
        const auto uoff = static_cast<std::uint64_t>(off);
        if (mode != config::CacheMode::writethrough || core_.degraded.load() ||
            st.uncached.load() || congested) {
            // The cache keeps none of it: splice straight to the backing.
            const ssize_t n = src.write_to(f.fd(), off);
            if (n < 0)
                return fail_sys(static_cast<int>(-n), "write to the backing");
            written = static_cast<std::size_t>(n);
            return CacheUpdate{uoff, uoff + written, nullptr, CacheUpdate::Size::at_least,
                               uoff + written};
        }
        char* const buf = thread_buffer<WriteBytes>(size);
        const ssize_t got = src.copy_to(buf);
        if (got < 0)
            return fail_sys(static_cast<int>(-got), "write request");
        auto n = backing::write_all(f.fd(), buf, static_cast<std::size_t>(got), uoff);
        if (!n)
            return fail(n.error());
        written = *n;
        CacheUpdate u{uoff, uoff + written, buf, CacheUpdate::Size::at_least, uoff + written};
        u.mode = f.policy().mode; // the open's per-path mode, if any
        return u;
    });
    if (!r)
        return done(fail(std::move(r).error()));
    if (congested)
        ++core_.c.congested_bypasses;
    done(written);
}

bool WritePath::overlaps_dirty(FileState& st, std::uint64_t off, std::size_t len) {
    if (!st.ahead.load())
        return false; // no dirty byte anywhere in the file
    thread_local std::vector<Piece> pieces;
    if (auto r = core_.index.lookup(st.fid.load(), off, off + len, pieces); !r)
        return true; // cannot tell: the cache keeps the write
    return std::any_of(pieces.begin(), pieces.end(),
                       [](const Piece& p) { return (p.v.flags & meta::kExtentDirty) != 0; });
}

void WritePath::fsync(CachedFile& f, bool datasync, Done<void> done) {
    FileState& st = f.state();
    if (!st.ahead.load()) {
        // Every byte is on the backing: it makes them durable.
        done(backing::sync_file(f.fd(), datasync));
        return;
    }
    if (core_.p.fsync_to_backing) {
        if (auto r = core_.write_back_file(st); !r)
            return done(fail(r.error()));
        return done(backing::sync_file(f.fd(), datasync));
    }
    // Dirty data is durable in the cache: its bytes, then the index
    // entries that point at them.
    if (auto r = core_.sync_dirty(); !r)
        return done(fail(r.error()));
    if (st.backing_unsynced.exchange(false))
        if (auto r = backing::sync_file(f.fd(), datasync); !r) {
            st.backing_unsynced.store(true);
            return done(fail(r.error()));
        }
    done({});
}

Result<ChangeOut> WritePath::truncate(int fd, bool fd_is_open, std::uint64_t size) {
    auto st0 = backing::fstat_file(fd);
    if (!st0)
        return fail(st0.error());
    StateRef ref = core_.files.acquire(core_.key_of(fd, *st0));
    return change(*ref, fd, [&]() -> Result<CacheUpdate> {
        if (auto r = backing::truncate_file(fd, fd_is_open, size); !r)
            return fail(r.error());
        return CacheUpdate{size, kToEnd, nullptr, CacheUpdate::Size::exact, size};
    });
}

Result<void> WritePath::fallocate(CachedFile& f, int mode, off_t off, off_t len) {
    // Collapse and insert move every byte after `off`: the backing must
    // hold them all first.
    const bool shifts = (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)) != 0;
    auto write_back_first = [&]() -> Result<void> {
        // Under write_mu: no write can make the file dirty again before the
        // shift. Writeback takes only backing_mu and mu.
        if (shifts && f.state().ahead.load())
            return core_.write_back_file(f.state());
        return {};
    };
    auto r = change(f.state(), f.fd(), write_back_first, [&]() -> Result<CacheUpdate> {
        if (auto a = backing::fallocate_file(f.fd(), mode, off, len); !a)
            return fail(a.error());
        const auto s = static_cast<std::uint64_t>(off);
        const auto e = s + static_cast<std::uint64_t>(len);
        // Punch and zero replace the range's bytes (dirty ones too: the
        // backing has the newer zeros); a plain allocation changes no byte.
        const bool replaces = (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) != 0;
        CacheUpdate u{s, shifts ? kToEnd : (replaces || (mode & ~FALLOC_FL_KEEP_SIZE) != 0 ? e : s),
                      nullptr};
        if ((mode & FALLOC_FL_KEEP_SIZE) == 0 && !shifts) {
            u.size_rule = CacheUpdate::Size::at_least;
            u.size = e;
        }
        return u;
    });
    if (!r)
        return fail(r.error());
    return {};
}

Result<std::size_t> WritePath::copy_file_range(CachedFile& in, off_t off_in, CachedFile& out,
                                               off_t off_out, std::size_t len, unsigned flags) {
    std::size_t copied = 0;
    // The copy reads the source's backing: it must hold the source's bytes.
    if (in.state().ahead.load())
        if (auto w = core_.write_back_file(in.state()); !w)
            return fail(w.error());
    auto r = change(out.state(), out.fd(), [&]() -> Result<CacheUpdate> {
        auto n = backing::copy_range(in.fd(), off_in, out.fd(), off_out, len, flags);
        if (!n)
            return fail(n.error());
        copied = *n;
        const auto s = static_cast<std::uint64_t>(off_out);
        return CacheUpdate{s, s + copied, nullptr, CacheUpdate::Size::at_least, s + copied};
    });
    if (!r)
        return fail(r.error());
    return copied;
}

Result<off_t> WritePath::lseek(CachedFile& f, off_t off, int whence) {
    // Holes and data of a dirty file are the backing's once it has the
    // dirty bytes: write them back first (rare: sparse-aware copies).
    if ((whence == SEEK_DATA || whence == SEEK_HOLE) && f.state().ahead.load())
        if (auto w = core_.write_back_file(f.state()); !w)
            return fail(w.error());
    return backing::seek(f.fd(), off, whence);
}

} // namespace overcache::cache
