// ExtentIndex: a file's cached extents in the index, and their bytes on the
// cache device. Callers serialise changes to one file (FileState::mu in the
// caching path); lookups and reads need no lock: RocksDB iterators see a
// consistent snapshot and buckets are append-only until GC bumps their gen.
#pragma once

#include "overcache/meta/schema.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/util/result.hpp"

#include <cstdint>
#include <vector>

namespace overcache::cache {

struct Piece {
    std::uint64_t start = 0; // file offset of the extent's first byte
    meta::ExtentValue v;
    std::uint64_t end() const { return start + v.len; }
};

enum class PieceRead { ok, stale, bad_checksum, io_error };

class ExtentIndex {
public:
    ExtentIndex(store::CacheDevice& dev, store::Allocator& alloc) : dev_(dev), alloc_(alloc) {}

    // Extents of `file` overlapping [start, end), in offset order.
    Result<std::vector<Piece>> lookup(meta::FileId file, std::uint64_t start,
                                      std::uint64_t end) const;
    // Reads a piece's v.len bytes into `out`, checking its gen before and
    // after the read and its checksum.
    PieceRead read_piece(const Piece& p, char* out) const;

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
};

} // namespace overcache::cache
