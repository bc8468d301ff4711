// DOC: extents of cached files. An extent is keyed by (file, end) and its
// value says where its bytes are (bucket, gen, offset) and their XXH3-64.
// Reading a piece verifies the gen (before and after the pread, so a bucket
// reclaimed during the read is a stale miss, not a checksum error) and the
// checksum. Overwriting part of an extent "carves" it: the parts left and
// right of the new range stay, pointing into the same bucket bytes, with
// checksums recomputed from bytes that were first verified against the old
// checksum; an edge that fails verification is simply dropped. Every change
// (deletes, kept edges, the new extent and its bucket's record) is one batch.
#include "overcache/cache/extent_index.hpp"

#include "overcache/meta/key_codec.hpp"
#include "util/log.hpp"

#include <unistd.h>
#include <xxhash.h>

namespace overcache::cache {
namespace {

std::vector<char>& scratch() {
    thread_local std::vector<char> buf;
    return buf;
}

bool pread_full(int fd, char* out, std::size_t len, std::uint64_t off) {
    std::size_t done = 0;
    while (done < len) {
        ssize_t n = ::pread(fd, out + done, len - done, static_cast<off_t>(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

} // namespace

Result<std::vector<Piece>> ExtentIndex::lookup(meta::FileId file, std::uint64_t start,
                                               std::uint64_t end) const {
    std::vector<Piece> out;
    if (start >= end)
        return out;
    auto cur = dev_.meta().cursor(meta::Cf::extents, meta::extent_prefix_end(file));
    // Keyed by end: the first key past `start` is the first extent that can
    // contain `start`.
    for (cur.seek(meta::extent_key(file, start + 1)); cur.valid(); cur.next()) {
        meta::ExtentKey k;
        auto v = meta::decode_extent(cur.value());
        if (!meta::decode_extent_key(cur.key(), k) || !v || v->len == 0 || v->len > k.end)
            return fail(Errc::MetaCorrupt, "damaged extent record of file " + std::to_string(file));
        const std::uint64_t s = k.end - v->len;
        if (s >= end)
            break;
        out.push_back(Piece{s, *v});
    }
    if (auto st = cur.status(); !st)
        return fail(st.error());
    return out;
}

PieceRead ExtentIndex::read_piece(const Piece& p, char* out) const {
    if (!alloc_.current(p.v.bucket, p.v.gen) ||
        p.v.bucket_off + static_cast<std::uint64_t>(p.v.len) > alloc_.bucket_size())
        return PieceRead::stale;
    if (!pread_full(dev_.data_fd(), out, p.v.len, dev_.device_offset(p.v.bucket, p.v.bucket_off)))
        return PieceRead::io_error;
    if (!alloc_.current(p.v.bucket, p.v.gen))
        return PieceRead::stale;
    if (XXH3_64bits(out, p.v.len) != p.v.checksum)
        return PieceRead::bad_checksum;
    return PieceRead::ok;
}

Result<void> ExtentIndex::carve(meta::Batch& b, meta::FileId file, std::uint64_t start,
                                std::uint64_t end) {
    auto pieces = lookup(file, start, end);
    if (!pieces)
        return fail(pieces.error());
    for (const auto& p : *pieces) {
        b.del(meta::Cf::extents, meta::extent_key(file, p.end()));
        const bool keep_left = p.start < start;
        const bool keep_right = p.end() > end;
        if (!keep_left && !keep_right)
            continue;
        auto& buf = scratch();
        buf.resize(p.v.len);
        if (read_piece(p, buf.data()) != PieceRead::ok)
            continue; // stale or bad: nothing worth keeping
        if (keep_left) {
            meta::ExtentValue l = p.v;
            l.len = static_cast<std::uint32_t>(start - p.start);
            l.checksum = XXH3_64bits(buf.data(), l.len);
            b.put(meta::Cf::extents, meta::extent_key(file, start), meta::encode(l));
        }
        if (keep_right) {
            const auto skip = static_cast<std::uint32_t>(end - p.start);
            meta::ExtentValue r = p.v;
            r.bucket_off += skip;
            r.len -= skip;
            r.checksum = XXH3_64bits(buf.data() + skip, r.len);
            // Same key as the deleted one: the later put wins in the batch.
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
    v.checksum = XXH3_64bits(data, len);
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
