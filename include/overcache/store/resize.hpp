// Changing the size of an unmounted cache (grow or shrink by whole
// buckets; bucket_size never changes). Used by a mount given another
// cache_size= and by `overcache resize`.
#pragma once

#include "overcache/meta/meta_store.hpp"
#include "overcache/util/result.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace overcache::store {

struct ResizeOutcome {
    std::uint64_t old_size = 0;
    std::uint64_t new_size = 0;
    std::uint64_t dropped_clean_bytes = 0; // clean extents past the new end, dropped
    std::uint64_t moved_dirty_bytes = 0;   // dirty extents past the new end, copied below it
    std::uint64_t kept_clean_bytes = 0;    // clean extents past the new end, copied below it
};

// Resizes the cache whose index is `ms` (its superblock `sb`, validated) and
// data device `data_fd` (`data_path`, for messages) to `new_size` rounded
// down to whole buckets. On success `sb` is the new superblock.
// Grow: a data file is extended (sparse) and synced, then one synced batch
// writes the superblock and the new free bucket records, then the data
// header is rewritten. Shrink: clean extents in the buckets past the new end
// are dropped; dirty ones (the only copy of their bytes) are copied, checksums
// verified, into free buckets that stay and synced before one synced batch
// moves them, drops the rest and writes the superblock; then the header, then
// the file is truncated. A crash at any point leaves the old or the new cache
// (a header whose count lags the index is repaired at open). Refused, with
// nothing changed: a size out of the superblock's bounds, a data file larger
// than its filesystem, a block device smaller than the size, and dirty data
// that does not fit below the new end (Errc::CacheFull, with its size and
// how to flush it).
Result<ResizeOutcome> resize_cache(meta::MetaStore& ms, int data_fd, const std::string& data_path,
                                   meta::Superblock& sb, std::uint64_t new_size);

// Whether the data device `data_fd` can hold a cache of `size` bytes: a
// block device at least that large, a data file no larger than its
// filesystem (Errc::BadValue naming both sizes otherwise).
Result<void> check_resize_room(int data_fd, const std::string& data_path, std::uint64_t size);

// `new_size` rounded down to whole buckets of `bucket_size`, and checked
// against the superblock's bounds: the message names the value and the limit.
Result<std::uint64_t> usable_cache_size(std::uint64_t new_size, std::uint64_t bucket_size);

} // namespace overcache::store

namespace overcache::store {

// The same for the cache at `dir` (its index, and its data file dir/data),
// for `overcache resize`: refused (Errc::Foreign, "in use by a mount") while
// a process holds the index's LOCK, and for a directory that is not a
// format-current cache or whose data file is not its own.
Result<ResizeOutcome> resize_cache_dir(const std::string& dir, std::uint64_t new_size);

// The process holding the index LOCK of the cache at `dir` (a mount), or 0.
int cache_in_use_by(const std::string& dir);

// The bytes of dirty data the cache at `dir` holds by its bucket records
// (read-only; no LOCK taken). nullopt: no index there.
Result<std::optional<std::uint64_t>> cache_dirty_bytes(const std::string& dir);

} // namespace overcache::store
