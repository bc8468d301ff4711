// Checking (and with repair, mending) the index of an unmounted cache
// against its buckets, its data device and itself: `overcache fsck`.
#pragma once

#include "overcache/util/result.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace overcache::store {

// One kind of finding. The order is the report's.
enum class FsckCheck : std::uint8_t {
    bucket_records,    // a bucket record whose key or value does not decode, or past the end
    extent_damaged,    // an extent whose key or value does not decode
    extent_range,      // an extent past the last bucket, past its bucket's end, or empty
    extent_csum_count, // an extent with the wrong number of block checksums
    extent_stale,      // gen != its bucket's gen: normal (compaction drops them), not a problem
    extent_overlap,    // current extents of one file that overlap
    clean_checksum,    // clean bytes on the data device that fail their checksums
    dirty_checksum,    // dirty bytes (writes the backing lacks) that fail their checksums
    dirty_unlisted,    // dirty extents of a file writeback cannot find (no dirty entry)
    dirty_orphan,      // a dirty entry whose file is not ahead of the backing
    file_ids,          // files <-> file_ids entries that do not match
    bucket_accounting, // a bucket's live/dirty bytes differ from the sum of its extents
    listings,          // a kept directory listing entry or record, or kept attributes, that do not decode
};
inline constexpr std::size_t kFsckChecks = 13;

struct FsckFinding {
    std::uint64_t count = 0;
    std::uint64_t bytes = 0;           // of cached data concerned, where it has a size
    std::uint64_t repaired = 0;        // of count
    std::vector<std::string> examples; // the first few, one line each
};

struct FsckReport {
    // Set when the cache cannot be checked at all (superblock, data header):
    // nothing else is filled.
    std::string fatal;
    std::uint64_t bucket_count = 0;
    std::uint64_t bucket_size = 0;
    std::uint64_t extents = 0;      // current ones
    std::uint64_t extent_bytes = 0; // of which bytes
    std::uint64_t dirty_bytes = 0;  // current dirty bytes
    std::array<FsckFinding, kFsckChecks> found{};
    // Files written to CACHEDIR/lost+found (dirty bytes kept before their
    // extent was dropped), with why.
    std::vector<std::string> saved;
    // Other changes a repair made that a person should know of (a file no
    // longer ahead of its backing once its dirty data went to lost+found).
    std::vector<std::string> notes;

    FsckFinding& at(FsckCheck c) { return found[static_cast<std::size_t>(c)]; }
    const FsckFinding& at(FsckCheck c) const { return found[static_cast<std::size_t>(c)]; }
    // Problems (every kind but extent_stale), and those of them repaired.
    std::uint64_t problems() const;
    std::uint64_t repaired() const;
};

// A label for the report line of `c` ("clean extents failing checksums").
const char* fsck_check_label(FsckCheck c) noexcept;

// Checks the cache at `dir` (index/ and data). Without `repair` nothing is
// written: the index is opened read-only and the data file O_RDONLY. With
// it, each repair step is one synced batch, and dirty bytes are copied to
// dir/lost+found and synced before the batch that drops their extent. An
// Error: the check could not run (not a cache, in use by a mount
// (Errc::Foreign, naming the pid), I/O); a damaged superblock or data header
// is a report with `fatal` set.
Result<FsckReport> fsck_cache_dir(const std::string& dir, bool repair);

} // namespace overcache::store
