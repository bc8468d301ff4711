// ExtentIndex: a file's cached extents in the index, and their bytes on the
// cache device. Callers serialise changes to one file (FileState::mu in the
// caching path); lookups and reads need no lock: RocksDB iterators see a
// consistent snapshot and buckets are append-only until GC bumps their gen.
#pragma once

#include "overcache/meta/schema.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/util/result.hpp"

#include <atomic>
#include <cstdint>
#include <vector>

namespace overcache::cache {

struct Piece {
    std::uint64_t start = 0; // file offset of the extent's first byte
    meta::ExtentValue v;
    std::uint64_t end() const { return start + v.len; }
};

enum class PieceRead { ok, stale, bad_checksum, io_error };

// The checksum of one block (or the part of an edge block an extent holds):
// XXH3-64.
std::uint64_t block_checksum(const char* data, std::size_t len) noexcept;
// The per-block checksums of `len` bytes that sit at file offset `start`.
void checksum_blocks(std::uint64_t start, const char* data, std::uint64_t len,
                     std::vector<std::uint64_t>& out);

class ExtentIndex {
public:
    ExtentIndex(store::CacheDevice& dev, store::Allocator& alloc) : dev_(dev), alloc_(alloc) {}

    // Extents of `file` overlapping [start, end), in offset order.
    Result<std::vector<Piece>> lookup(meta::FileId file, std::uint64_t start,
                                      std::uint64_t end) const;
    // The same into `out`, reusing the memory of the pieces it held: the hit
    // path keeps one such vector a thread and allocates nothing.
    Result<void> lookup(meta::FileId file, std::uint64_t start, std::uint64_t end,
                        std::vector<Piece>& out) const;
    // Reads bytes [from, to) of the file, which lie inside `p`, into `out`
    // (to - from bytes). Only the checksum blocks covering them are read from
    // the cache device and verified; the gen is checked before and after the
    // read, so a bucket reclaimed meanwhile reads as stale, not as corrupt.
    PieceRead read_range(const Piece& p, std::uint64_t from, std::uint64_t to, char* out) const;
    // Reads all of a piece's v.len bytes into `out`.
    PieceRead read_piece(const Piece& p, char* out) const {
        return read_range(p, p.start, p.end(), out);
    }
    // Bytes read from the cache device so far (hits and carving): with
    // cache_hit_bytes, the read amplification of the checksum blocks.
    std::uint64_t read_bytes() const { return read_bytes_.load(std::memory_order_relaxed); }

    // Writes `len` bytes (<= bucket_size) to the cache device and records
    // them as [start, start + len) of `file`, replacing what overlapped.
    // false: no free bucket (the caller skips; nothing changed).
    Result<bool> insert(meta::FileId file, std::uint64_t start, const char* data,
                        std::uint32_t len);
    // Forgets [start, end) of `file` (end may be UINT64_MAX), keeping the
    // parts of edge extents outside it.
    Result<void> punch(meta::FileId file, std::uint64_t start, std::uint64_t end);

private:
    // Adds to `b` what removes [start, end) of `file` from the index.
    Result<void> carve(meta::Batch& b, meta::FileId file, std::uint64_t start, std::uint64_t end);

    store::CacheDevice& dev_;
    store::Allocator& alloc_;
    mutable std::atomic<std::uint64_t> read_bytes_{0};
};

} // namespace overcache::cache
