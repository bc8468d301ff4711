// ExtentIndex: a file's cached extents in the index, and their bytes on the
// cache device. Changes are staged into an IndexTxn by the owner of the file
// (FileState::mu in the caching path, the only code that changes a file's
// extents) and committed through the Allocator, which writes the bucket
// accounting in the same batch. Lookups and reads need no lock: RocksDB
// iterators see a consistent snapshot, and a bucket's gen, checked after the
// read, tells whether its bytes were reclaimed meanwhile.
#pragma once

#include "overcache/meta/schema.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/util/result.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace overcache::cache {

struct Piece {
    std::uint64_t start = 0; // file offset of the extent's first byte
    meta::ExtentValue v;
    std::uint64_t end() const { return start + v.len; }
};

enum class PieceRead { ok, stale, bad_checksum, io_error };

// The checksum (XXH3-64) of one block, or of the part of an edge block that
// an extent holds.
std::uint64_t block_checksum(const char* data, std::size_t len) noexcept;
// The per-block checksums of `len` bytes that sit at file offset `start`.
void checksum_blocks(std::uint64_t start, const char* data, std::uint64_t len,
                     std::vector<std::uint64_t>& out);

// An index change with the bucket pins of the bytes it points at: the pins
// are released when the transaction is destroyed, after its commit.
struct ExtentTxn : store::IndexTxn {
    using store::IndexTxn::IndexTxn;
    std::vector<store::BucketPin> pins;
};

// Moving GC: an extent's bytes copied to a new place on the cache device,
// not yet in the index.
struct MovedCopy {
    Piece from;           // the extent as the mover read it
    meta::ExtentValue to; // the new place: same length and checksums
    store::BucketPin pin; // the new place's bucket, until the move commits
};

enum class CopyOut { ok, gone, bad_checksum, no_space };

class ExtentIndex {
public:
    ExtentIndex(store::CacheDevice& dev, store::Allocator& alloc) : dev_(dev), alloc_(alloc) {}

    ExtentTxn txn() const { return ExtentTxn(dev_.meta().batch()); }
    Result<void> commit(ExtentTxn& t, bool sync = false) { return alloc_.commit(t, sync); }

    // Extents of `file` overlapping [start, end), in offset order.
    Result<std::vector<Piece>> lookup(meta::FileId file, std::uint64_t start,
                                      std::uint64_t end) const;
    // The same into `out`, reusing the memory of the pieces it held. With
    // `more`, it stops after the first piece for which `more` says false
    // (that piece is in `out`): a caller that wants the first few of a
    // file's many extents does not read them all.
    Result<void> lookup(meta::FileId file, std::uint64_t start, std::uint64_t end,
                        std::vector<Piece>& out,
                        const std::function<bool(const Piece&)>& more = {}) const;
    // Reads bytes [from, to) of the file, which lie inside `p`, into `out`
    // (to - from bytes). Only the checksum blocks covering them are read from
    // the cache device and verified; the gen is checked before and after the
    // read, so a bucket reclaimed meanwhile reads as stale, not as corrupt.
    PieceRead read_range(const Piece& p, std::uint64_t from, std::uint64_t to, char* out) const;
    PieceRead read_piece(const Piece& p, char* out) const {
        return read_range(p, p.start, p.end(), out);
    }
    // Bytes read from the cache device so far (hits and carving).
    std::uint64_t read_bytes() const { return read_bytes_.load(std::memory_order_relaxed); }
    // Cache device I/O errors seen (reads and writes).
    std::uint64_t io_errors() const { return io_errors_.load(std::memory_order_relaxed); }
    // Called with every cache device I/O error (the error budget).
    std::function<void(const Error&)> on_io_error;

    // Writes `len` bytes (<= bucket_size) through `wp` to the cache device
    // and stages them as [start, start + len) of `file`, replacing what
    // overlapped. false: no free bucket (nothing staged). Ranges staged into
    // one transaction must not overlap (carving reads the committed index).
    Result<bool> stage_insert(ExtentTxn& t, store::WritePoint& wp, meta::FileId file,
                              std::uint64_t start, const char* data, std::uint32_t len,
                              std::uint32_t flags = 0);
    // stage_insert of [start, start + len) cut at multiples of `chunk`
    // (extents never cross one), the pieces that land back to back in a
    // bucket written to the device in one write. false: no free bucket
    // (nothing staged; what was allocated is dead space).
    Result<bool> stage_insert_chunked(ExtentTxn& t, store::WritePoint& wp, meta::FileId file,
                                      std::uint64_t start, const char* data, std::uint64_t len,
                                      std::uint64_t chunk, std::uint32_t flags = 0);
    // stage_insert_chunked in two steps, so that the device write needs no
    // lock of the file's: place() allocates and writes the bytes (nothing
    // refers to them yet; dropped unstaged, they are dead space that GC
    // reclaims), stage_placement() then stages them under the owner's lock.
    // The buckets stay pinned from place() until the transaction ends.
    struct Placement {
        struct Piece {
            std::uint64_t start;
            std::uint32_t len;
            std::uint64_t span; // whole blocks from a.offset
            store::Allocation a;
        };
        std::uint64_t start = 0;
        std::vector<Piece> pieces;
    };
    // false: no free bucket (what was allocated is dead space).
    Result<bool> place(store::WritePoint& wp, std::uint64_t start, const char* data,
                       std::uint64_t len, std::uint64_t chunk, Placement& out);
    // One write's bytes for place_all(), and where they went.
    struct PlaceItem {
        std::uint64_t start = 0;
        const char* data = nullptr;
        std::uint64_t len = 0;
        Placement* out = nullptr;
        Result<bool> placed = false; // as place() returns
    };
    // place() of several writes at once: allocated in order, and the
    // pieces that land back to back in a bucket written in one device
    // write, whichever writes they come from (a group of small writes is
    // one device write, not one each). A failed device write fails every
    // write with a piece in it.
    void place_all(store::WritePoint& wp, std::vector<PlaceItem>& items, std::uint64_t chunk);
    // `data` is what place() wrote (the checksums are computed from it).
    Result<void> stage_placement(ExtentTxn& t, Placement& pl, meta::FileId file, const char* data,
                                 std::uint32_t flags);
    // Stages forgetting [start, end) of `file` (end may be UINT64_MAX),
    // keeping the parts of edge extents outside it.
    Result<void> stage_punch(ExtentTxn& t, meta::FileId file, std::uint64_t start,
                             std::uint64_t end);
    // Writeback: stages `p` (a dirty extent of `file` read earlier) as
    // clean, if the index still holds exactly it; false (nothing staged)
    // when it was replaced or cut meanwhile — that newer extent stays dirty.
    Result<bool> stage_clean(ExtentTxn& t, meta::FileId file, const Piece& p);
    // Whether the index holds exactly `p` (same range, bucket, gen, place and
    // checksums; the dirty flag may differ) as one extent of `file`, and its
    // bucket still has that gen. The owner's re-check before acting on an
    // extent read earlier without its lock.
    Result<bool> holds(meta::FileId file, const Piece& p) const;
    // Moving GC, no lock held: reads `p` (checksums verified) and writes its
    // bytes through `wp` at the same phase in a device block, into `out`.
    // gone: its bucket was reclaimed since; no_space: `wp` got no bucket.
    // Nothing is staged: the owner stages the move with stage_move.
    Result<CopyOut> copy_extent(store::WritePoint& wp, const Piece& p, MovedCopy& out);
    // Moving GC, owner lock held: points the extent at its copy if
    // holds(file, c.from), keeping the dirty flag it has now, with both
    // buckets' live and dirty bytes moved in the same transaction. false:
    // it changed meanwhile (overwritten, cut, dropped), nothing staged, the
    // copy is dead space.
    Result<bool> stage_move(ExtentTxn& t, meta::FileId file, MovedCopy& c);
    // Stages setting (or clearing) kExtentPinned on the current extents of
    // `file` whose flag differs, with their buckets' pinned bytes. Setting
    // stops before the bytes newly pinned would pass `budget`. Returns the
    // bytes whose flag changed. Owner lock held (as for every change).
    Result<std::uint64_t> stage_pinned(ExtentTxn& t, meta::FileId file, bool pinned,
                                       std::uint64_t budget);
    // Stages forgetting every extent of `file`.
    Result<void> stage_drop_all(ExtentTxn& t, meta::FileId file);

    // One-step forms: stage and commit.
    Result<bool> insert(store::WritePoint& wp, meta::FileId file, std::uint64_t start,
                        const char* data, std::uint32_t len);
    Result<void> punch(meta::FileId file, std::uint64_t start, std::uint64_t end);

    // Test seam: called by stage_insert after the bytes are on the cache
    // device and before anything is staged (the bucket is pinned).
    std::function<void(std::uint32_t bucket)> after_device_write;

    // The cache device is out of use (degraded): punches no longer read it
    // to keep the cut edges of extents; those edges are dropped instead.
    void stop_device_reads() { no_device_reads_.store(true); }

    // Destroys the cursors kept for reuse; before the index closes.
    void release_cursors();

private:
    // Stages [start, start + len) of `file` at `a`, where its bytes are on
    // the device already, replacing what overlapped; takes a's pin.
    Result<void> stage_placed(ExtentTxn& t, store::Allocation& a, meta::FileId file,
                              std::uint64_t start, const char* data, std::uint32_t len,
                              std::uint32_t flags);
    // Cursors over the extents kept for reuse by lookups (a new RocksDB
    // iterator costs more than refreshing one), one taken per lookup.
    std::unique_ptr<meta::Cursor> take_cursor() const;
    // The extent of `file` at p's range if it is still exactly `p` (see holds).
    Result<std::optional<Piece>> still(meta::FileId file, const Piece& p) const;
    void give_back(std::unique_ptr<meta::Cursor> c) const;
    mutable std::mutex cursors_mu_; // a leaf
    mutable std::vector<std::unique_ptr<meta::Cursor>> cursors_; // guarded by cursors_mu_

    void io_error(const Error& e) const;

    store::CacheDevice& dev_;
    store::Allocator& alloc_;
    mutable std::atomic<std::uint64_t> read_bytes_{0};
    mutable std::atomic<std::uint64_t> io_errors_{0};
    std::atomic<bool> no_device_reads_{false};
};

} // namespace overcache::cache
