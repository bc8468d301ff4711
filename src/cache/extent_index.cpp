// DOC: extents of cached files. An extent is keyed by (file, end) and its
// value says where its bytes are (bucket, gen, offset) and holds a 32-bit
// XXH3 of each 4 KiB block of the file's grid that it touches
// (meta::kCsumBlock). A read of part of an extent reads and verifies only the
// blocks covering it, checking the gen before and after the pread (a bucket
// reclaimed during the read is a stale miss, not a checksum error).
// Overwriting part of an extent "carves" it: the parts left and right of the
// new range stay, pointing into the same bucket bytes and keeping their
// blocks' checksums; only an edge block cut in two gets a new checksum, of
// bytes first verified against the old one (an edge that fails verification
// is dropped). Every change (deletes, kept edges, the new extent and its
// bucket's record) is one batch.
#include "overcache/cache/extent_index.hpp"

#include "overcache/meta/key_codec.hpp"
#include "util/file_io.hpp"
#include "util/log.hpp"

#include <algorithm>
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

Result<std::vector<Piece>> ExtentIndex::lookup(meta::FileId file, std::uint64_t start,
                                               std::uint64_t end) const {
    std::vector<Piece> out;
    if (auto r = lookup(file, start, end, out); !r)
        return fail(r.error());
    return out;
}

Result<void> ExtentIndex::lookup(meta::FileId file, std::uint64_t start, std::uint64_t end,
                                 std::vector<Piece>& out) const {
    std::size_t n = 0;
    if (start < end) {
        auto cur = dev_.meta().cursor(meta::Cf::extents, meta::extent_prefix_end(file));
        // Keyed by end: the first key past `start` is the first extent that
        // can contain `start`.
        for (cur.seek(meta::extent_key(file, start + 1)); cur.valid(); cur.next()) {
            meta::ExtentKey k;
            if (n == out.size())
                out.emplace_back();
            Piece& p = out[n];
            if (!meta::decode_extent_key(cur.key(), k) || !meta::decode_extent(cur.value(), p.v) ||
                p.v.len == 0 || p.v.len > k.end ||
                p.v.csums.size() != meta::csum_block_count(k.end - p.v.len, p.v.len)) {
                out.resize(n);
                return fail(Errc::MetaCorrupt,
                            "damaged extent record of file " + std::to_string(file));
            }
            p.start = k.end - p.v.len;
            if (p.start >= end)
                break;
            ++n;
        }
        if (auto st = cur.status(); !st) {
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
    const std::uint64_t want = re - rs;
    if (pread_upto(dev_.data_fd(), dst, want,
                   dev_.device_offset(v.bucket,
                                      v.bucket_off + static_cast<std::uint32_t>(rs - p.start))) !=
        static_cast<ssize_t>(want))
        return PieceRead::io_error; // an error or a short cache device: read as a miss
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

Result<void> ExtentIndex::carve(meta::Batch& b, meta::FileId file, std::uint64_t start,
                                std::uint64_t end) {
    auto pieces = lookup(file, start, end);
    if (!pieces)
        return fail(pieces.error());
    // The checksum of [keep_from, keep_to), the part of p's edge block
    // [bs, be) that stays, after the whole edge block verified.
    auto edge_checksum = [this](const Piece& p, std::uint64_t bs, std::uint64_t be,
                                std::uint64_t keep_from,
                                std::uint64_t keep_to) -> std::optional<std::uint64_t> {
        auto& buf = scratch();
        buf.resize(be - bs);
        if (read_range(p, bs, be, buf.data()) != PieceRead::ok)
            return std::nullopt;
        return block_checksum(buf.data() + (keep_from - bs), keep_to - keep_from);
    };
    for (const auto& p : *pieces) {
        b.del(meta::Cf::extents, meta::extent_key(file, p.end()));
        const bool keep_left = p.start < start;
        const bool keep_right = p.end() > end;
        if ((!keep_left && !keep_right) || !alloc_.current(p.v.bucket, p.v.gen))
            continue; // nothing to keep, or stale: nothing worth keeping
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
            if (ok)
                b.put(meta::Cf::extents, meta::extent_key(file, start), meta::encode(l));
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
            if (ok)
                b.put(meta::Cf::extents, meta::extent_key(file, p.end()), meta::encode(r));
        }
    }
    return {};
}

Result<bool> ExtentIndex::insert(meta::FileId file, std::uint64_t start, const char* data,
                                 std::uint32_t len) {
    if (len == 0)
        return true;
    auto a = alloc_.alloc(len);
    if (!a)
        return false;
    const std::uint64_t dev_off = dev_.device_offset(a->bucket, a->offset);
    std::size_t done = 0;
    while (done < len) {
        ssize_t n =
            ::pwrite(dev_.data_fd(), data + done, len - done, static_cast<off_t>(dev_off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return fail_errno("cannot write the cache data device");
        done += static_cast<std::size_t>(n);
    }
    auto b = dev_.meta().batch();
    if (auto r = carve(b, file, start, start + len); !r)
        return fail(r.error());
    meta::ExtentValue v;
    v.bucket = a->bucket;
    v.gen = a->gen;
    v.bucket_off = a->offset;
    v.len = len;
    checksum_blocks(start, data, len, v.csums);
    b.put(meta::Cf::extents, meta::extent_key(file, start + len), meta::encode(v));
    b.put(meta::Cf::buckets, meta::bucket_key(a->bucket), meta::encode(a->record));
    if (auto r = dev_.meta().write(b); !r)
        return fail(r.error());
    return true;
}

Result<void> ExtentIndex::punch(meta::FileId file, std::uint64_t start, std::uint64_t end) {
    auto b = dev_.meta().batch();
    if (auto r = carve(b, file, start, end); !r)
        return r;
    if (b.count() == 0)
        return {};
    return dev_.meta().write(b);
}

} // namespace overcache::cache
