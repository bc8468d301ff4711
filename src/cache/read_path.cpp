// DOC: the read path. Reads are served chunk by chunk (fill_size, aligned):
// a chunk fully covered by valid extents is a hit, read from the cache
// device into the caller's buffer with no lock taken; otherwise the whole
// aligned chunk is read from the backing, the reply is built from it, and
// the chunk is handed to the fill executor. A fill carries the file's
// FileId, epoch and write_seq as of before its backing read, and commits
// only if, under the file's owner lock, all three are unchanged: a write, a
// truncate or a detected backing change in between makes it stand down, so
// a fill can never put older bytes over newer ones. An in-flight set keyed by
// (FileId, chunk start) keeps concurrent readers from filling a chunk twice, and
// the bytes held by queued fills are capped (fills_skipped_busy). The
// commit itself is fill.cpp's; the prefetcher claims chunks here too
// (claim/release), so reads and prefetches share the in-flight set and the
// cap, but a prefetch waits where a read would skip. While the cache device
// is congested (congestion.hpp) misses bypass as past sequential_cutoff.
#include "cache/read_path.hpp"

#include "cache/congestion.hpp"
#include "cache/fill.hpp"
#include "util/file_io.hpp"
#include "util/log.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstring>

namespace overcache::cache {

ReadPath::ReadPath(CacheCore& core, bg::Executor fill, const CacheHooks& hooks)
    : core_(core), fill_ex_(std::move(fill)), hooks_(hooks) {}

bool ReadPath::try_hit(FileState& st, std::uint64_t start, std::uint64_t end, char* out) {
    // Reused by every hit of this thread, as the lookup reuses a cursor and
    // the checksum vectors: a warm hit allocates only when RocksDB's view
    // changed since the cursor's last use (a flush or a compaction).
    thread_local std::vector<Piece> pieces;
    if (auto r = core_.index.lookup(st.fid.load(), start, end, pieces); !r) {
        ++core_.c.read_errors;
        log::warn("cache: ", to_string(r.error()));
        return false;
    }
    std::uint64_t at = start;
    for (const auto& p : pieces) {
        if (p.start > at)
            return false; // a hole
        const std::uint64_t seg_end = std::min(end, p.end());
        // Only the checksum blocks covering [at, seg_end) are read.
        switch (core_.index.read_range(p, at, seg_end, out + (at - start))) {
        case PieceRead::ok:
            break;
        case PieceRead::stale:
            ++core_.c.stale_reads;
            return false;
        case PieceRead::bad_checksum:
        case PieceRead::io_error:
            ++core_.c.read_errors;
            return false;
        }
        core_.alloc.touch(p.v.bucket);
        at = seg_end;
        if (at >= end)
            break;
    }
    return at >= end;
}

Result<ReadOut> ReadPath::read(CachedFile& f, char* buf, std::size_t size, off_t off_signed,
                               const DataPath::BackingRead& backing) {
    FileState& st = f.state();
    if (size == 0 || off_signed < 0)
        return ReadOut{-1, 0, 0};
    const auto off = static_cast<std::uint64_t>(off_signed);
    core_.touched(st.key, off, size);
    const std::uint64_t fsize = st.size.load();
    // A file ahead of the backing is read through the cache whatever
    // happened to the cache since: only the cache has its newest bytes.
    bool ahead = st.ahead.load();
    const bool uncached = !ahead && (st.uncached.load() || core_.degraded.load());
    if (ahead && off >= fsize)
        return ReadOut{-1, 0, 0}; // past the end the mount shows
    // An open made without the backing has no backing file, and the size
    // the mount saw last is the end. Made offline, what the cache does not
    // hold cannot be read; made from kept attributes (lazy), the adapter
    // opens the backing file for it and asks again.
    const bool offline = f.fd() < 0;
    const ReadOut needs_backing{-1, 0, 0, true};
    if (offline && off >= fsize)
        return ReadOut{-1, 0, 0};
    if (offline && uncached && f.lazy())
        return needs_backing;
    if (offline && uncached)
        return fail_sys(EIO, "the backing is offline and the file is not cached");
    if (uncached || off >= fsize) {
        // Past what we know of the file, or a file we do not cache: the
        // backing answers, spliced.
        if (uncached) {
            ++core_.c.misses;
            core_.c.miss_bytes += size;
        }
        return ReadOut{f.fd(), off_signed, size};
    }
    const std::uint64_t end = std::min<std::uint64_t>(off + size, fsize);
    const bool sequential =
        f.note_read(off, size, f.policy().sequential_cutoff.value_or(core_.p.sequential_cutoff));
    // Congestion is asked at the request's first miss (a hit needs no
    // answer) and kept, so that the rest of its chunks go the same way.
    bool congested = false, asked = false;
    const auto bypassing = [&] {
        if (!asked && !sequential)
            congested = miss_congested(core_);
        asked = true;
        return sequential || congested;
    };
    // One chunk size for the whole read, though fill_size may change meanwhile.
    const std::uint64_t fill = core_.p.fill_size;
    bool all_hit = true;
    std::uint64_t done = 0; // bytes of the reply ready in buf
    bool short_read = false;
    for (std::uint64_t c = off / fill; c * fill < end; ++c) {
        const std::uint64_t ps = std::max(off, c * fill);
        const std::uint64_t pe = std::min(end, (c + 1) * fill);
        char* out = buf + (ps - off);
        if (try_hit(st, ps, pe, out)) {
            core_.c.hit_bytes += pe - ps;
            done = pe - off;
            continue;
        }
        all_hit = false;
        if (offline && f.lazy())
            return needs_backing; // the whole request again: a short read would shrink the file
        if (offline) {
            ++core_.c.misses;
            if (done == 0)
                return fail_sys(EIO, "the backing is offline and the range is not cached");
            return ReadOut{-1, 0, static_cast<std::size_t>(done)};
        }
        // A write may have made the file dirty since the read began: its
        // bytes must be in the reply if it committed before this chunk.
        ahead = ahead || st.ahead.load();
        ssize_t n = ahead         ? miss_ahead(f, ps, pe, out, backing)
                    : bypassing() ? backing(f.fd(), out, pe - ps, ps)
                                  : miss_chunk(f, c * fill, fill, ps, pe, fsize, out, backing);
        if (n < 0) {
            if (done == 0)
                return fail_sys(static_cast<int>(-n), "read from the backing");
            short_read = true;
            break;
        }
        core_.c.miss_bytes += static_cast<std::uint64_t>(n);
        if ((sequential || congested) && !ahead)
            core_.c.bypass_bytes += static_cast<std::uint64_t>(n);
        done = ps - off + static_cast<std::uint64_t>(n);
        if (static_cast<std::uint64_t>(n) < pe - ps) {
            short_read = true; // the backing is shorter than we knew
            break;
        }
    }
    if (!short_read && !ahead && !offline && end < off + size) {
        // The read crosses the size we know: the backing has the last word.
        ssize_t n = backing(f.fd(), buf + done, off + size - end, end);
        if (n > 0)
            done += static_cast<std::uint64_t>(n);
    }
    if (congested)
        ++core_.c.congested_bypasses;
    if (sequential || congested)
        ++(all_hit ? core_.c.bypass_hits : core_.c.bypass_misses);
    else
        ++(all_hit ? core_.c.hits : core_.c.misses);
    return ReadOut{-1, 0, static_cast<std::size_t>(done)};
}

ssize_t ReadPath::miss_chunk(CachedFile& f, std::uint64_t cs, std::uint64_t chunk_len,
                             std::uint64_t start, std::uint64_t end, std::uint64_t fsize,
                             char* out, const DataPath::BackingRead& backing) {
    FileState& st = f.state();
    const std::uint64_t ce = std::min(cs + chunk_len, fsize);
    // What the fill must still find when it commits; read before the backing.
    const meta::FileId fid = st.fid.load();
    const std::uint64_t epoch = st.epoch.load();
    const std::uint64_t seq = st.write_seq.load();
    const ChunkKey key{fid, cs};
    // promote_after_hits: a range missed too few times lately is read
    // through without filling (nothing of the cache is evicted for it).
    if (const unsigned need = f.policy().promote_after_hits.value_or(core_.p.promote_after_hits);
        need > 1) {
        if (!f.first_miss_of(cs) || !admission_.admit(ChunkHash{}(key), need)) {
            ++core_.c.fills_skipped_unpromoted;
            return backing(f.fd(), out, end - start, start);
        }
    }
    bool mine = false;
    {
        std::lock_guard lk(mu_);
        // Someone else filling this chunk, or fills backed up: read just what
        // was asked, without filling.
        if (inflight_.count(key) == 0 && !core_.stopped &&
            f.policy().mode.value_or(core_.p.mode) != config::CacheMode::none) {
            if (pending_bytes_ + (ce - cs) <= core_.p.max_pending_fill_bytes) {
                inflight_.insert(key);
                pending_bytes_ += ce - cs;
                mine = true;
            } else {
                ++core_.c.fills_skipped_busy; // the fill thread is behind: memory stays bounded
            }
        }
    }
    if (!mine)
        return backing(f.fd(), out, end - start, start);
    auto job = std::make_shared<Fill>();
    job->data.resize(ce - cs);
    ssize_t n = backing(f.fd(), job->data.data(), ce - cs, cs);
    if (n < 0) {
        finish(fid, cs, ce - cs, false);
        return n;
    }
    const auto got = static_cast<std::uint64_t>(n);
    const std::uint64_t avail = got > start - cs ? std::min(end, cs + got) - start : 0;
    std::memcpy(out, job->data.data() + (start - cs), avail);
    if (got != ce - cs) {
        finish(fid, cs, ce - cs, false); // the file shrank: don't cache a guess
        return static_cast<ssize_t>(avail);
    }
    job->file = f.ref();
    job->fid = fid;
    job->epoch = epoch;
    job->seq = seq;
    job->start = cs;
    {
        std::lock_guard lk(mu_);
        ++pending_fills_;
    }
    boost::asio::post(fill_ex_, [this, job] { fill(*job); });
    return static_cast<ssize_t>(avail);
}

ssize_t ReadPath::miss_ahead(CachedFile& f, std::uint64_t start, std::uint64_t end, char* out,
                             const DataPath::BackingRead& backing) {
    FileState& st = f.state();
    // The extents first, then the backing: an extent written back and
    // marked clean in between was already in the backing when it was read
    // there, or is still in the cache under the gen read here.
    thread_local std::vector<Piece> pieces;
    for (int attempt = 0; attempt < 3; ++attempt) {
        if (auto r = core_.index.lookup(st.fid.load(), start, end, pieces); !r) {
            ++core_.c.read_errors;
            log::warn("cache: ", to_string(r.error()));
            return -EIO; // the newest bytes may be in the cache: never guess
        }
        const ssize_t n = backing(f.fd(), out, end - start, start);
        if (n < 0)
            return n;
        // Past the backing's end the file is what the cache says, or zeros.
        std::memset(out + n, 0, end - start - static_cast<std::uint64_t>(n));
        bool retry = false;
        for (const auto& p : pieces) {
            if ((p.v.flags & meta::kExtentDirty) == 0)
                continue; // the backing has those bytes
            const std::uint64_t s = std::max(start, p.start);
            const std::uint64_t e = std::min(end, p.end());
            if (s >= e)
                continue;
            const PieceRead pr = core_.index.read_range(p, s, e, out + (s - start));
            if (pr == PieceRead::stale) {
                retry = true; // written back and reused meanwhile: read again
                break;
            }
            if (pr != PieceRead::ok) {
                ++core_.c.read_errors;
                log::error("cache: dirty bytes [", s, ", ", e, ") of inode ", st.key.ino,
                           " cannot be read from the cache device");
                return -EIO;
            }
        }
        if (!retry)
            return static_cast<ssize_t>(end - start);
    }
    return -EAGAIN;
}

void ReadPath::finish(meta::FileId fid, std::uint64_t chunk, std::uint64_t bytes, bool queued) {
    std::lock_guard lk(mu_);
    inflight_.erase(ChunkKey{fid, chunk});
    pending_bytes_ -= bytes;
    slot_cv_.notify_all();
    if (queued && --pending_fills_ == 0)
        idle_cv_.notify_all();
}

void ReadPath::fill(Fill& job) {
    if (hooks_.before_fill_commit)
        hooks_.before_fill_commit();
    (void)commit_fill(core_, *job.file, FillTicket{job.fid, job.epoch, job.seq}, job.start,
                      job.data);
    core_.kick_gc();
    const std::uint64_t bytes = job.data.size();
    job.file.reset();
    job.data = {};
    finish(job.fid, job.start, bytes, true);
}

bool ReadPath::claim(meta::FileId fid, std::uint64_t chunk, std::uint64_t bytes,
                     const std::function<bool()>& cancelled) {
    const ChunkKey key{fid, chunk};
    std::unique_lock lk(mu_);
    for (;;) {
        if (core_.stopped || cancelled())
            return false;
        // A chunk being filled by a read is waited for, not filled twice;
        // queued fills over the cap are waited for, not skipped.
        if (inflight_.count(key) == 0 &&
            (pending_bytes_ == 0 || pending_bytes_ + bytes <= core_.p.max_pending_fill_bytes)) {
            inflight_.insert(key);
            pending_bytes_ += bytes;
            return true;
        }
        // Bounded, so a stop or a cancel is seen without a notify of its own.
        slot_cv_.wait_for(lk, std::chrono::milliseconds(100));
    }
}

void ReadPath::release(meta::FileId fid, std::uint64_t chunk, std::uint64_t bytes) {
    finish(fid, chunk, bytes, false);
}

void ReadPath::drain() {
    std::unique_lock lk(mu_);
    idle_cv_.wait(lk, [this] { return pending_fills_ == 0; });
}

std::uint64_t ReadPath::pending() const {
    std::lock_guard lk(mu_);
    return pending_fills_;
}

} // namespace overcache::cache
