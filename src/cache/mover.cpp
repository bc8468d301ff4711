// DOC: moving GC's mover, on the GC strand. One call:
//  1. scan: one pass over the extents column family (bounded by
//     kMaxScanKeys) collects the current extents of the candidate buckets.
//     No reverse index is kept, as bcache keeps none: moving GC is rare
//     (free buckets low and reclaim unable to help), a write is not;
//  2. choose: the candidates whose extents were all found, least live
//     first, as many as fit where GC's write point can write (its open
//     bucket and the free buckets, reserve included) while freeing more
//     buckets than the copies take — simulated in copy order, so the
//     reserve is never spent on a move that frees nothing;
//  3. copy, no lock held: each extent is read (checksums verified) and
//     written through GC's write point; the new bucket stays pinned;
//  4. the cache device is synced when a dirty extent was copied (dirty
//     bytes are durable before an index entry points at them);
//  5. per file, under its owner lock (FileState::mu) and only for as long
//     as it takes to re-check and commit: each extent still exactly as read
//     is pointed at its copy, keeping the dirty flag it has now, with both
//     buckets' live and dirty bytes moved in the same batch. One that was
//     overwritten, cut, dropped or reclaimed meanwhile is left alone: the
//     copy is dead space, never resurrected data;
//  6. the WAL is synced before GC reclaims the emptied buckets, so no crash
//     can bring back an entry that points into a reused bucket.
// A shrink's evacuate() does steps 1 and 3-6 for the dirty and pinned
// extents of retiring buckets, with no choice: they must all go (and for
// clean ones too, when bg/gc_evacuate.cpp found room to keep them). GC's
// write point never gets a retiring bucket, so the copies land below the
// new end.
// The mover takes no foreground write point, no write_mu or backing_mu, and
// never waits for a FUSE thread; the owner lock is never held across device
// I/O or a WAL sync.
#include "cache/mover.hpp"

#include "overcache/meta/key_codec.hpp"
#include "util/log.hpp"

#include <algorithm>

namespace overcache::cache {
namespace {

// Keys one scan may visit: past it the move is given up (logged), so a
// huge index costs a bounded pass, never an unbounded one.
constexpr std::uint64_t kMaxScanKeys = std::uint64_t{1} << 24;

const store::BucketUsage* find(const std::vector<store::BucketUsage>& v, std::uint32_t bucket) {
    for (const auto& u : v)
        if (u.bucket == bucket)
            return &u;
    return nullptr;
}

bool is_dirty(const meta::ExtentValue& v) { return (v.flags & meta::kExtentDirty) != 0; }

} // namespace

Result<std::vector<Mover::Found>>
Mover::scan(const std::vector<store::BucketUsage>& candidates) {
    std::vector<Found> out;
    auto cur = core_.dev->meta().cursor(meta::Cf::extents);
    meta::ExtentValue v;
    std::uint64_t visited = 0;
    for (cur.seek_to_first(); cur.valid(); cur.next()) {
        if (++visited > kMaxScanKeys) {
            log::warn("gc: more than ", kMaxScanKeys, " extents in the index; moving GC skipped");
            return std::vector<Found>();
        }
        meta::ExtentKey k;
        if (!meta::decode_extent_key(cur.key(), k) || !meta::decode_extent(cur.value(), v))
            continue; // damaged: never moved (its bucket does not empty)
        const auto* c = find(candidates, v.bucket);
        if (c == nullptr || c->gen != v.gen)
            continue; // elsewhere, or stale
        if (v.len == 0 || v.len > k.end ||
            v.csums.size() != meta::csum_block_count(k.end - v.len, v.len))
            continue;
        out.push_back(Found{k.file, Piece{k.end - v.len, v}});
    }
    if (auto st = cur.status(); !st)
        return fail(st.error());
    return out;
}

std::vector<store::BucketUsage>
Mover::choose(const store::WritePoint& wp, const std::vector<store::BucketUsage>& candidates,
              const std::vector<Found>& found) const {
    const auto& alloc = core_.alloc;
    // Only buckets the scan saw every live byte of can be emptied.
    std::vector<store::BucketUsage> ok;
    for (const auto& c : candidates) {
        std::uint64_t seen = 0;
        for (const auto& f : found)
            if (f.piece.v.bucket == c.bucket)
                seen += f.piece.v.len;
        if (seen >= c.live)
            ok.push_back(c);
    }
    const std::uint64_t bucket_size = alloc.bucket_size();
    const std::uint64_t room = alloc.room(wp);
    const std::size_t free = alloc.free_count();
    for (std::size_t n = ok.size(); n > 0; --n) {
        const std::vector<store::BucketUsage> set(ok.begin(),
                                                  ok.begin() + static_cast<std::ptrdiff_t>(n));
        // As Allocator::alloc will place the copies: whole blocks, a new
        // bucket whenever the next copy does not fit in the open one.
        std::uint64_t left = room;
        std::size_t opened = 0;
        for (const auto& f : found) {
            if (find(set, f.piece.v.bucket) == nullptr)
                continue;
            const std::uint64_t need =
                alloc.footprint(f.piece.start % meta::kCsumBlock + f.piece.v.len);
            if (need > left) {
                ++opened;
                left = bucket_size;
            }
            left -= std::min(left, need);
        }
        if (opened <= free && opened < n)
            return set;
    }
    return {};
}

Result<void> Mover::commit_file(meta::FileId file, std::vector<MovedCopy>& copies,
                                std::vector<Piece>& bad, bg::MoveOutcome& out) {
    // The way back from an extent to its owner.
    auto k = core_.dev->meta().get(meta::Cf::file_ids, meta::file_id_key(file));
    if (!k)
        return fail(k.error());
    meta::FileKey key;
    if (!k->has_value() || !meta::decode_file_key(**k, key))
        return {}; // no owner to serialise with: left where they are
    StateRef ref = core_.files.acquire(key);
    FileState& st = *ref;
    std::lock_guard lk(st.mu);
    if (auto r = core_.records.load(st); !r)
        return r;
    if (!st.rec || st.rec->file_id != file)
        return {}; // dropped meanwhile: its extents went with it
    auto t = core_.index.txn();
    std::uint64_t bytes = 0, moved = 0;
    for (auto& c : copies) {
        auto r = core_.index.stage_move(t, file, c);
        if (!r)
            return fail(r.error());
        if (*r) {
            bytes += c.from.v.len;
            ++moved;
        }
    }
    for (const auto& p : bad) {
        // Clean bytes that fail their checksum read as a miss anyway: drop
        // them so their bucket can empty. Only if still exactly that extent.
        auto same = core_.index.holds(file, p);
        if (!same)
            return fail(same.error());
        if (*same)
            if (auto r = core_.index.stage_punch(t, file, p.start, p.end()); !r)
                return r;
    }
    if (t.empty())
        return {};
    if (auto r = core_.index.commit(t); !r)
        return r;
    out.bytes += bytes;
    out.extents += moved;
    return {};
}

Result<bg::MoveOutcome> Mover::move(store::WritePoint& wp,
                                    const std::vector<store::BucketUsage>& candidates) {
    bg::MoveOutcome out;
    if (core_.degraded.load() || candidates.empty())
        return out;
    auto found = scan(candidates);
    if (!found)
        return fail(found.error());
    const auto victims = choose(wp, candidates, *found);
    if (victims.empty())
        return out;
    return relocate(wp, *found, victims);
}

Result<bg::MoveOutcome> Mover::evacuate(store::WritePoint& wp,
                                        const std::vector<store::BucketUsage>& buckets,
                                        bool with_clean) {
    if (core_.degraded.load() || buckets.empty())
        return bg::MoveOutcome{};
    auto found = scan(buckets);
    if (!found)
        return fail(found.error());
    // Unless there is room to keep them, only what exists nowhere else
    // (dirty) or was asked to stay (pinned): clean bytes go with their bucket.
    if (!with_clean)
        std::erase_if(*found, [](const Found& f) {
            return (f.piece.v.flags & (meta::kExtentDirty | meta::kExtentPinned)) == 0;
        });
    return relocate(wp, *found, buckets);
}

Result<bg::MoveOutcome> Mover::relocate(store::WritePoint& wp, const std::vector<Found>& found,
                                        const std::vector<store::BucketUsage>& victims) {
    bg::MoveOutcome out;
    // Copies grouped by file, in scan order (a file's extents are adjacent).
    struct FileMoves {
        meta::FileId file = 0;
        std::vector<MovedCopy> copies;
        std::vector<Piece> bad;
    };
    std::vector<FileMoves> files;
    bool dirty = false;
    Result<void> copy_error;
    for (const auto& f : found) {
        if (find(victims, f.piece.v.bucket) == nullptr)
            continue;
        if (files.empty() || files.back().file != f.file)
            files.push_back(FileMoves{f.file, {}, {}});
        MovedCopy c;
        auto r = core_.index.copy_extent(wp, f.piece, c);
        if (!r) {
            copy_error = fail(r.error());
            break; // what was copied is still committed below
        }
        if (*r == CopyOut::no_space)
            break;
        if (*r == CopyOut::bad_checksum) {
            if (is_dirty(f.piece.v))
                log::error("gc: dirty bytes [", f.piece.start, ", ", f.piece.end(), ") of file ",
                           f.file, " fail their checksum; left for writeback to report");
            else
                files.back().bad.push_back(f.piece);
        } else if (*r == CopyOut::ok) {
            dirty = dirty || is_dirty(f.piece.v);
            files.back().copies.push_back(std::move(c));
        }
    }
    if (dirty) {
        if (auto r = core_.dev->sync(); !r) {
            core_.device_error(r.error());
            return fail(r.error()); // nothing committed: the copies are dead space
        }
    }
    Result<void> commit_error;
    for (auto& fm : files) {
        if (fm.copies.empty() && fm.bad.empty())
            continue;
        if (before_commit)
            before_commit(fm.file);
        if (auto r = commit_file(fm.file, fm.copies, fm.bad, out); !r && commit_error)
            commit_error = std::move(r);
    }
    if (out.extents > 0)
        if (auto r = core_.dev->meta().sync_wal(); !r)
            return fail(r.error()); // emptied buckets are not reported: GC keeps them
    for (const auto& v : victims)
        if (core_.alloc.current(v.bucket, v.gen) && core_.alloc.record(v.bucket).live_bytes == 0)
            ++out.emptied;
    // What did move stands (GC reclaims what emptied); the rest is retried.
    if (!copy_error)
        log::warn("gc: moving GC could not copy an extent: ", to_string(copy_error.error()));
    if (!commit_error)
        log::warn("gc: moving GC could not commit some moves: ", to_string(commit_error.error()));
    return out;
}

} // namespace overcache::cache
