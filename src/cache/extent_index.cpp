// DOC: extents of cached files. An extent is keyed by (file, end) and its
// value says where its bytes are (bucket, gen, offset) and holds an XXH3-64
// of each 4 KiB block of the file's grid that it touches (meta::kCsumBlock).
// The bytes are placed at the same offset inside a device block as in that
// grid, each extent in whole device blocks of its own, so a grid block is one
// aligned device block (O_DIRECT-friendly). A read of part of an extent reads
// and verifies only the blocks covering it, checking the gen before and after
// the read (a bucket reclaimed during the read is a stale miss, not a
// checksum error).
// Overwriting part of an extent "carves" it: the parts left and right of the
// new range stay, pointing into the same bucket bytes and keeping their
// blocks' checksums; only an edge block cut in two gets a new checksum, of
// bytes first verified against the old one (an edge that fails verification
// is dropped). Every change (deletes, kept edges, the new extent) is staged
// into one ExtentTxn with the live-byte deltas of the buckets involved, and
// committed by the Allocator in the same batch as those buckets' records.
#include "overcache/cache/extent_index.hpp"

#include "overcache/meta/key_codec.hpp"
#include "util/file_io.hpp"
#include "util/log.hpp"
#include "util/thread_buffer.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <optional>
#include <unistd.h>
#include <xxhash.h>

namespace overcache::cache {
namespace {

constexpr std::uint64_t kBlock = meta::kCsumBlock;

std::uint64_t block_floor(std::uint64_t off) {
    return off / kBlock * kBlock;
}

std::vector<char>& scratch() {
    thread_local std::vector<char> buf;
    return buf;
}
// Room for one device write's run, copied together from the writes it
// holds (util/thread_buffer.hpp).
struct RunBytes;
// read_range()'s own, so callers may pass scratch() as its output.
std::vector<char>& range_scratch() {
    thread_local std::vector<char> buf;
    return buf;
}

} // namespace

std::uint64_t block_checksum(const char* data, std::size_t len) noexcept {
    return XXH3_64bits(data, len);
}

void checksum_blocks(std::uint64_t start, const char* data, std::uint64_t len,
                     std::vector<std::uint64_t>& out) {
    out.clear();
    const std::uint64_t end = start + len;
    for (std::uint64_t at = start; at < end;) {
        const std::uint64_t next = std::min(end, block_floor(at) + kBlock);
        out.push_back(block_checksum(data + (at - start), next - at));
        at = next;
    }
}

void ExtentIndex::io_error(const Error& e) const {
    io_errors_.fetch_add(1, std::memory_order_relaxed);
    if (on_io_error)
        on_io_error(e);
}

Result<std::vector<Piece>> ExtentIndex::lookup(meta::FileId file, std::uint64_t start,
                                               std::uint64_t end) const {
    std::vector<Piece> out;
    if (auto r = lookup(file, start, end, out); !r)
        return fail(r.error());
    return out;
}

std::unique_ptr<meta::Cursor> ExtentIndex::take_cursor() const {
    {
        std::lock_guard lk(cursors_mu_);
        if (!cursors_.empty()) {
            auto c = std::move(cursors_.back());
            cursors_.pop_back();
            return c;
        }
    }
    return std::make_unique<meta::Cursor>(dev_.meta().cursor(meta::Cf::extents));
}

void ExtentIndex::give_back(std::unique_ptr<meta::Cursor> c) const {
    // As many as threads look up at once; a few more are just dropped.
    constexpr std::size_t kKeep = 64;
    std::lock_guard lk(cursors_mu_);
    if (cursors_.size() < kKeep)
        cursors_.push_back(std::move(c));
}

void ExtentIndex::release_cursors() {
    std::lock_guard lk(cursors_mu_);
    cursors_.clear();
}

Result<void> ExtentIndex::lookup(meta::FileId file, std::uint64_t start, std::uint64_t end,
                                 std::vector<Piece>& out,
                                 const std::function<bool(const Piece&)>& more) const {
    std::size_t n = 0;
    if (start < end) {
        // A reused cursor, refreshed (it must see every committed change:
        // a dropped extent must never be served), and a key on the stack.
        auto cur = take_cursor();
        if (auto r = cur->refresh(); !r) {
            out.clear();
            return r;
        }
        char key[16];
        constexpr bool kLittle = std::endian::native == std::endian::little;
        const std::uint64_t be_file = kLittle ? __builtin_bswap64(file) : file;
        const std::uint64_t be_from = kLittle ? __builtin_bswap64(start + 1) : start + 1;
        std::memcpy(key, &be_file, 8);
        std::memcpy(key + 8, &be_from, 8);
        // Keyed by end: the first key past `start` is the first extent that
        // can contain `start`.
        for (cur->seek(std::string_view(key, 16)); cur->valid(); cur->next()) {
            meta::ExtentKey k;
            if (!meta::decode_extent_key(cur->key(), k) || k.file != file)
                break; // past this file's extents
            if (n == out.size())
                out.emplace_back();
            Piece& p = out[n];
            if (!meta::decode_extent(cur->value(), p.v) || p.v.len == 0 || p.v.len > k.end ||
                p.v.csums.size() != meta::csum_block_count(k.end - p.v.len, p.v.len)) {
                out.resize(n);
                give_back(std::move(cur));
                return fail(Errc::MetaCorrupt,
                            "damaged extent record of file " + std::to_string(file));
            }
            p.start = k.end - p.v.len;
            if (p.start >= end)
                break;
            ++n;
            if (more && !more(p))
                break;
        }
        auto st = cur->status();
        give_back(std::move(cur));
        if (!st) {
            out.resize(n);
            return st;
        }
    }
    out.resize(n);
    return {};
}

PieceRead ExtentIndex::read_range(const Piece& p, std::uint64_t from, std::uint64_t to,
                                  char* out) const {
    const auto& v = p.v;
    if (!alloc_.current(v.bucket, v.gen) ||
        v.bucket_off + static_cast<std::uint64_t>(v.len) > alloc_.bucket_size())
        return PieceRead::stale;
    if (from < p.start || to > p.end() || from >= to ||
        v.csums.size() != meta::csum_block_count(p.start, v.len))
        return PieceRead::bad_checksum; // not a range of this piece: never serve it
    // The covering blocks, clipped to the extent.
    const std::uint64_t rs = std::max(p.start, block_floor(from));
    const std::uint64_t re = std::min(p.end(), block_floor(to - 1) + kBlock);
    char* dst = out;
    if (rs != from || re != to) {
        auto& buf = range_scratch();
        buf.resize(re - rs);
        dst = buf.data();
    }
    if (auto r = dev_.read(
            dev_.device_offset(v.bucket, v.bucket_off + static_cast<std::uint32_t>(rs - p.start)),
            re - rs, dst);
        !r) {
        // Reclaimed meanwhile, and maybe cut off the device by a shrink:
        // stale, not the device's fault.
        if (!alloc_.current(v.bucket, v.gen))
            return PieceRead::stale;
        io_error(r.error());
        return PieceRead::io_error; // read as a miss
    }
    read_bytes_.fetch_add(re - rs, std::memory_order_relaxed);
    if (!alloc_.current(v.bucket, v.gen))
        return PieceRead::stale;
    std::size_t idx = (rs - block_floor(p.start)) / kBlock;
    for (std::uint64_t bs = rs; bs < re; ++idx) {
        const std::uint64_t be = std::min(re, block_floor(bs) + kBlock);
        if (block_checksum(dst + (bs - rs), be - bs) != v.csums[idx])
            return PieceRead::bad_checksum;
        bs = be;
    }
    if (dst != out)
        std::memcpy(out, dst + (from - rs), to - from);
    return PieceRead::ok;
}

Result<void> ExtentIndex::stage_punch(ExtentTxn& t, meta::FileId file, std::uint64_t start,
                                      std::uint64_t end) {
    auto pieces = lookup(file, start, end);
    if (!pieces)
        return fail(pieces.error());
    // The checksum of [keep_from, keep_to), the part of p's edge block
    // [bs, be) that stays, after the whole edge block verified.
    auto edge_checksum = [this](const Piece& p, std::uint64_t bs, std::uint64_t be,
                                std::uint64_t keep_from,
                                std::uint64_t keep_to) -> std::optional<std::uint64_t> {
        if (no_device_reads_.load(std::memory_order_relaxed))
            return std::nullopt; // the edge is dropped, not verified
        auto& buf = scratch();
        buf.resize(be - bs);
        if (read_range(p, bs, be, buf.data()) != PieceRead::ok)
            return std::nullopt;
        return block_checksum(buf.data() + (keep_from - bs), keep_to - keep_from);
    };
    for (const auto& p : *pieces) {
        t.batch.del(meta::Cf::extents, meta::extent_key(file, p.end()));
        const bool current = alloc_.current(p.v.bucket, p.v.gen);
        const bool keep_left = current && p.start < start;
        const bool keep_right = current && p.end() > end;
        std::uint64_t kept = 0;
        if (keep_left) {
            meta::ExtentValue l = p.v;
            l.len = static_cast<std::uint32_t>(start - p.start);
            l.csums.resize(meta::csum_block_count(p.start, l.len));
            bool ok = true;
            if (start % kBlock != 0) {
                // Its last block is cut: [bs, start) stays.
                const std::uint64_t bs = std::max(p.start, block_floor(start));
                const std::uint64_t be = std::min(p.end(), block_floor(start) + kBlock);
                auto c = edge_checksum(p, bs, be, bs, start);
                ok = c.has_value();
                if (ok)
                    l.csums.back() = *c;
            }
            if (ok) {
                t.batch.put(meta::Cf::extents, meta::extent_key(file, start), meta::encode(l));
                kept += l.len;
            }
        }
        if (keep_right) {
            const auto skip = static_cast<std::uint32_t>(end - p.start);
            meta::ExtentValue r = p.v;
            r.bucket_off += skip;
            r.len -= skip;
            const std::size_t first = (block_floor(end) - block_floor(p.start)) / kBlock;
            r.csums.assign(p.v.csums.begin() + static_cast<std::ptrdiff_t>(first), p.v.csums.end());
            bool ok = true;
            if (end % kBlock != 0) {
                // Its first block is cut: [end, be) stays.
                const std::uint64_t bs = std::max(p.start, block_floor(end));
                const std::uint64_t be = std::min(p.end(), block_floor(end) + kBlock);
                auto c = edge_checksum(p, bs, be, end, be);
                ok = c.has_value();
                if (ok)
                    r.csums.front() = *c;
            }
            // Same key as the deleted one: the later put wins in the batch.
            if (ok) {
                t.batch.put(meta::Cf::extents, meta::extent_key(file, p.end()), meta::encode(r));
                kept += r.len;
            }
        }
        // A stale piece accounts for nothing (the commit skips old gens).
        const auto gone = static_cast<std::int64_t>(p.v.len - kept);
        t.account_extent(p.v.bucket, p.v.gen, -gone, p.v.flags);
    }
    return {};
}

Result<bool> ExtentIndex::stage_clean(ExtentTxn& t, meta::FileId file, const Piece& p) {
    auto now = lookup(file, p.start, p.end());
    if (!now)
        return fail(now.error());
    if (now->size() != 1)
        return false;
    const Piece& q = now->front();
    if (q.start != p.start || q.v.len != p.v.len || q.v.bucket != p.v.bucket ||
        q.v.gen != p.v.gen || q.v.bucket_off != p.v.bucket_off ||
        (q.v.flags & meta::kExtentDirty) == 0)
        return false;
    meta::ExtentValue v = q.v;
    v.flags &= ~meta::kExtentDirty;
    t.batch.put(meta::Cf::extents, meta::extent_key(file, q.end()), meta::encode(v));
    t.account(v.bucket, v.gen, 0, -static_cast<std::int64_t>(v.len));
    return true;
}

Result<std::uint64_t> ExtentIndex::stage_pinned(ExtentTxn& t, meta::FileId file, bool pinned,
                                                std::uint64_t budget) {
    std::uint64_t changed = 0;
    auto cur = dev_.meta().cursor(meta::Cf::extents, meta::extent_prefix_end(file));
    meta::ExtentValue v;
    for (cur.seek(meta::extent_key(file, 0)); cur.valid(); cur.next()) {
        if (!meta::decode_extent(cur.value(), v) || !alloc_.current(v.bucket, v.gen))
            continue; // damaged or stale: it accounts for nothing, reads as a miss
        if (((v.flags & meta::kExtentPinned) != 0) == pinned)
            continue;
        if (pinned && changed + v.len > budget)
            break; // past the pinned cap: the rest stays evictable
        const auto len = static_cast<std::int64_t>(v.len);
        t.account_extent(v.bucket, v.gen, -len, v.flags);
        v.flags ^= meta::kExtentPinned;
        t.account_extent(v.bucket, v.gen, len, v.flags);
        t.batch.put(meta::Cf::extents, std::string(cur.key()), meta::encode(v));
        changed += v.len;
    }
    if (auto st = cur.status(); !st)
        return fail(st.error());
    return changed;
}

Result<std::optional<Piece>> ExtentIndex::still(meta::FileId file, const Piece& p) const {
    auto now = lookup(file, p.start, p.end());
    if (!now)
        return fail(now.error());
    if (now->size() != 1)
        return std::optional<Piece>();
    Piece& q = now->front();
    if (q.start != p.start || q.v.len != p.v.len || q.v.bucket != p.v.bucket ||
        q.v.gen != p.v.gen || q.v.bucket_off != p.v.bucket_off || q.v.csums != p.v.csums ||
        !alloc_.current(q.v.bucket, q.v.gen))
        return std::optional<Piece>();
    return std::optional<Piece>(std::move(q));
}

Result<bool> ExtentIndex::holds(meta::FileId file, const Piece& p) const {
    auto q = still(file, p);
    if (!q)
        return fail(q.error());
    return q->has_value();
}

Result<CopyOut> ExtentIndex::copy_extent(store::WritePoint& wp, const Piece& p, MovedCopy& out) {
    const auto phase = static_cast<std::uint32_t>(p.start % kBlock);
    const std::uint64_t span = (std::uint64_t{phase} + p.v.len + kBlock - 1) / kBlock * kBlock;
    if (std::uint64_t{phase} + p.v.len > alloc_.bucket_size())
        return CopyOut::bad_checksum; // no extent is written like that: damaged
    // Read first: a bad or reclaimed extent costs no space.
    auto& buf = scratch();
    buf.assign(span, '\0');
    switch (read_piece(p, buf.data() + phase)) {
    case PieceRead::ok:
        break;
    case PieceRead::stale:
        return CopyOut::gone;
    case PieceRead::bad_checksum:
        return CopyOut::bad_checksum;
    case PieceRead::io_error:
        return fail(Errc::CacheIo, "reading an extent to move it");
    }
    auto a = alloc_.alloc(wp, phase + p.v.len);
    if (!a)
        return CopyOut::no_space;
    if (auto r = dev_.write(dev_.device_offset(a->bucket, a->offset), buf.data(),
                            std::min<std::uint64_t>(span, alloc_.bucket_size() - a->offset));
        !r) {
        io_error(r.error());
        return fail(r.error()); // dead space in GC's bucket: reclaimed later
    }
    out.from = p;
    out.to = p.v;
    out.to.bucket = a->bucket;
    out.to.gen = a->gen;
    out.to.bucket_off = a->offset + phase;
    out.pin = std::move(a->pin);
    return CopyOut::ok;
}

Result<bool> ExtentIndex::stage_move(ExtentTxn& t, meta::FileId file, MovedCopy& c) {
    auto now = still(file, c.from);
    if (!now)
        return fail(now.error());
    if (!now->has_value())
        return false;
    // Whatever writeback did meanwhile (cleaned it) stays true of the copy.
    const std::uint32_t flags = (*now)->v.flags;
    meta::ExtentValue v = c.to;
    v.flags = flags;
    // Same key (same end): the put replaces the old place.
    t.batch.put(meta::Cf::extents, meta::extent_key(file, c.from.end()), meta::encode(v));
    const auto len = static_cast<std::int64_t>(v.len);
    t.account_extent(c.from.v.bucket, c.from.v.gen, -len, flags);
    t.account_extent(v.bucket, v.gen, len, flags);
    t.pins.push_back(std::move(c.pin));
    return true;
}

Result<void> ExtentIndex::stage_drop_all(ExtentTxn& t, meta::FileId file) {
    // Point deletes for the usual handful of extents; one range tombstone
    // only for a file with very many (range tombstones cost every later
    // seek until compaction, so they are not spent on files with none).
    constexpr std::size_t kRangeAbove = 4096;
    auto cur = dev_.meta().cursor(meta::Cf::extents, meta::extent_prefix_end(file));
    meta::ExtentValue v;
    std::vector<std::string> keys;
    bool ranged = false;
    for (cur.seek(meta::extent_key(file, 0)); cur.valid(); cur.next()) {
        // Undecodable values are deleted too; they account for nothing.
        if (meta::decode_extent(cur.value(), v))
            t.account_extent(v.bucket, v.gen, -static_cast<std::int64_t>(v.len), v.flags);
        if (!ranged && keys.size() < kRangeAbove)
            keys.emplace_back(cur.key());
        else
            ranged = true;
    }
    if (auto st = cur.status(); !st)
        return st;
    if (ranged)
        t.batch.del_range(meta::Cf::extents, meta::extent_key(file, 0),
                          meta::extent_prefix_end(file));
    else
        for (const auto& k : keys)
            t.batch.del(meta::Cf::extents, k);
    return {};
}

Result<bool> ExtentIndex::stage_insert(ExtentTxn& t, store::WritePoint& wp, meta::FileId file,
                                       std::uint64_t start, const char* data, std::uint32_t len,
                                       std::uint32_t flags) {
    // One piece: no chunk edge inside it.
    return stage_insert_chunked(t, wp, file, start, data, len, UINT64_MAX, flags);
}

Result<void> ExtentIndex::stage_placed(ExtentTxn& t, store::Allocation& a, meta::FileId file,
                                       std::uint64_t start, const char* data, std::uint32_t len,
                                       std::uint32_t flags) {
    if (auto r = stage_punch(t, file, start, start + len); !r)
        return r;
    meta::ExtentValue v;
    v.bucket = a.bucket;
    v.gen = a.gen;
    v.bucket_off = a.offset + static_cast<std::uint32_t>(start % kBlock);
    v.len = len;
    v.flags = flags;
    checksum_blocks(start, data, len, v.csums);
    t.batch.put(meta::Cf::extents, meta::extent_key(file, start + len), meta::encode(v));
    t.account_extent(a.bucket, a.gen, len, flags);
    t.pins.push_back(std::move(a.pin));
    return {};
}

Result<bool> ExtentIndex::place(store::WritePoint& wp, std::uint64_t start, const char* data,
                                std::uint64_t len, std::uint64_t chunk, Placement& out) {
    std::vector<PlaceItem> one{PlaceItem{start, data, len, &out}};
    place_all(wp, one, chunk);
    return std::move(one.front().placed);
}

void ExtentIndex::place_all(store::WritePoint& wp, std::vector<PlaceItem>& items,
                            std::uint64_t chunk) {
    // The bytes sit at the same offset inside a device block as in the
    // file's 4 KiB grid, so a grid block is one aligned device block.
    struct Ref {
        std::size_t item;
        std::size_t piece;
    };
    thread_local std::vector<Ref> refs;
    refs.clear();
    for (std::size_t i = 0; i < items.size(); ++i) {
        PlaceItem& it = items[i];
        auto& placed = it.out->pieces;
        placed.clear();
        it.out->start = it.start;
        it.placed = true;
        const std::size_t first_ref = refs.size();
        const std::uint64_t end = it.start + it.len;
        for (std::uint64_t at = it.start; at < end;) {
            const std::uint64_t next = std::min(end, (at / chunk + 1) * chunk);
            const std::uint64_t phase = at % kBlock;
            std::optional<store::Allocation> a;
            if (phase + (next - at) <= alloc_.bucket_size())
                a = alloc_.alloc(wp, static_cast<std::uint32_t>(phase + (next - at)));
            if (!a) {
                // What was allocated is dead space: GC reclaims it.
                it.placed = false;
                placed.clear();
                refs.resize(first_ref);
                break;
            }
            const std::uint64_t span = (phase + (next - at) + kBlock - 1) / kBlock * kBlock;
            placed.push_back({at, static_cast<std::uint32_t>(next - at), span, std::move(*a)});
            refs.push_back({i, placed.size() - 1});
            at = next;
        }
    }
    const auto piece = [&](const Ref& r) -> const Placement::Piece& {
        return items[r.item].out->pieces[r.piece];
    };
    // One device write per run of pieces that lie back to back in a bucket.
    for (std::size_t i = 0; i < refs.size();) {
        const auto& first = piece(refs[i]);
        const PlaceItem& owner = items[refs[i].item];
        std::size_t j = i;
        std::uint64_t run = 0;
        // The run's bytes lie back to back in one write's buffer too when
        // they are all its own and every piece but the last fills its
        // blocks exactly: then they are written from there, not copied (an
        // aligned caller's buffer goes to the device as it is).
        bool in_place = first.start % kBlock == 0;
        std::uint64_t bytes = 0;
        while (j < refs.size() && (j == i || (piece(refs[j]).a.bucket == first.a.bucket &&
                                              piece(refs[j]).a.offset == first.a.offset + run))) {
            const auto& p = piece(refs[j]);
            in_place = in_place && refs[j].item == refs[i].item && p.start == first.start + run &&
                       run == bytes;
            run += p.span;
            bytes += p.len;
            ++j;
        }
        const char* from = owner.data + (first.start - owner.start);
        if (!in_place) {
            char* buf = thread_buffer<RunBytes>(run);
            std::uint64_t at = 0;
            for (std::size_t k = i; k < j; ++k) {
                const auto& p = piece(refs[k]);
                const PlaceItem& it = items[refs[k].item];
                std::memset(buf + at, 0, p.span);
                std::memcpy(buf + at + p.start % kBlock, it.data + (p.start - it.start), p.len);
                at += p.span;
            }
            from = buf;
            bytes = run;
        }
        if (auto r =
                dev_.write(dev_.device_offset(first.a.bucket, first.a.offset), from,
                           std::min<std::uint64_t>(bytes, alloc_.bucket_size() - first.a.offset));
            !r) {
            io_error(r.error());
            // The space stays allocated, dead: GC reclaims it.
            for (std::size_t k = i; k < j; ++k)
                items[refs[k].item].placed = fail(r.error());
        } else if (after_device_write) {
            after_device_write(first.a.bucket);
        }
        i = j;
    }
}

Result<void> ExtentIndex::stage_placement(ExtentTxn& t, Placement& pl, meta::FileId file,
                                          const char* data, std::uint32_t flags) {
    for (auto& p : pl.pieces)
        if (auto r = stage_placed(t, p.a, file, p.start, data + (p.start - pl.start), p.len, flags);
            !r)
            return r;
    pl.pieces.clear();
    return {};
}

Result<bool> ExtentIndex::stage_insert_chunked(ExtentTxn& t, store::WritePoint& wp,
                                               meta::FileId file, std::uint64_t start,
                                               const char* data, std::uint64_t len,
                                               std::uint64_t chunk, std::uint32_t flags) {
    Placement pl;
    auto r = place(wp, start, data, len, chunk, pl);
    if (!r || !*r)
        return r;
    if (auto s = stage_placement(t, pl, file, data, flags); !s)
        return fail(s.error());
    return true;
}

Result<bool> ExtentIndex::insert(store::WritePoint& wp, meta::FileId file, std::uint64_t start,
                                 const char* data, std::uint32_t len) {
    auto t = txn();
    auto r = stage_insert(t, wp, file, start, data, len);
    if (!r || !*r)
        return r;
    if (auto c = commit(t); !c)
        return fail(c.error());
    return true;
}

Result<void> ExtentIndex::punch(meta::FileId file, std::uint64_t start, std::uint64_t end) {
    auto t = txn();
    if (auto r = stage_punch(t, file, start, end); !r)
        return r;
    if (t.empty())
        return {};
    return commit(t);
}

} // namespace overcache::cache
