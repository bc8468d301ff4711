// The index's data model: column families and the value records stored in
// them. Keys are built by key_codec.hpp; values here are fixed-layout
// big-endian records with a leading layout byte so a later format can add
// fields. Nothing in this header knows RocksDB.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace overcache::meta {

// One column family a kind of record. The names are on disk: never rename.
enum class Cf : std::uint8_t {
    meta,    // settings: "superblock", "next_file_id"
    files,   // backing identity -> FileRecord
    extents, // (FileId, end offset) -> ExtentValue
    buckets, // bucket index -> BucketRecord
};
inline constexpr std::array<Cf, 4> kAllCfs{Cf::meta, Cf::files, Cf::extents, Cf::buckets};
const char* cf_name(Cf cf) noexcept;

using FileId = std::uint64_t;

// What the cache believed about a backing file when it cached its data.
// Any difference from the backing's fstat at open drops the cached data (by
// giving the file a new FileId).
struct FileRecord {
    FileId file_id = 0;
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;
    std::uint64_t ino = 0;
};

inline constexpr std::uint32_t kExtentDirty = 1u << 0; // reserved for writeback

// Extents are checksummed per block of the FILE's 4 KiB grid, so a hit
// reads and verifies only the blocks it needs. 4 KiB is the page size, the
// unit in which the kernel reads through FUSE (a random 4 KiB hit is one
// block, read and hashed once: no amplification) and the logical block of
// the fast devices we expect; smaller blocks would only help sub-page reads,
// which the page cache absorbs, at twice the index cost, and larger ones
// would multiply what a random 4 KiB hit reads. Grid-aligned (not
// extent-aligned) blocks mean that splitting an extent on overwrite changes
// at most the two edge blocks' checksums. Part of format version 2.
inline constexpr std::uint32_t kCsumBlock = 4096;

// Number of grid blocks that [start, start + len) touches (len > 0).
constexpr std::uint32_t csum_block_count(std::uint64_t start, std::uint64_t len) {
    return static_cast<std::uint32_t>((start + len - 1) / kCsumBlock - start / kCsumBlock + 1);
}

// A run of one file's bytes held in one bucket.
struct ExtentValue {
    std::uint32_t bucket = 0;
    std::uint32_t gen = 0;        // the bucket's gen when the bytes were written
    std::uint32_t bucket_off = 0; // byte offset inside the bucket
    std::uint32_t len = 0;
    std::uint32_t flags = 0;
    // One checksum (the low 32 bits of XXH3-64) per kCsumBlock grid block the
    // extent touches, in file order; an edge block that the extent covers only
    // in part has the checksum of the extent's bytes in it. 4 bytes per 4 KiB:
    // 0.1% of the cached data. csum_block_count(start, len) entries.
    std::vector<std::uint32_t> csums;
};

enum class BucketState : std::uint8_t { free = 0, open = 1, full = 2 };

struct BucketRecord {
    std::uint32_t gen = 0;
    BucketState state = BucketState::free;
    std::uint32_t fill_bytes = 0; // bytes appended since the bucket was last freed
    std::uint64_t last_use = 0;   // allocator tick of the last hit or fill (LRU)
};

// 2: per-block extent checksums (version 1 had one XXH3-64 an extent).
inline constexpr std::uint32_t kFormatVersion = 2;

// The cache's identity, in Cf::meta under "superblock". The data device
// carries a short header with the same uuid (store/cache_device.cpp), so an
// index and a data file that do not belong together are refused.
struct Superblock {
    std::uint32_t version = kFormatVersion;
    std::array<std::uint8_t, 16> uuid{};
    std::uint64_t bucket_size = 0;
    std::uint64_t bucket_count = 0;
    std::uint64_t data_offset = 0; // byte offset of bucket 0 on the data device
    std::uint64_t cache_size = 0;  // bytes of the data device in use
    // The backing this cache belongs to.
    std::string backing_path;
    std::uint64_t backing_fsid = 0;
    std::uint64_t backing_root_ino = 0;
};

std::string encode(const FileRecord& r);
std::string encode(const ExtentValue& v);
std::string encode(const BucketRecord& r);
std::string encode(const Superblock& s);
std::optional<FileRecord> decode_file_record(std::string_view s);
std::optional<ExtentValue> decode_extent(std::string_view s);
// The same into `out`, reusing its checksum vector (no allocation once it has
// grown): for the read path. false: damaged (out is then unspecified).
bool decode_extent(std::string_view s, ExtentValue& out);
std::optional<BucketRecord> decode_bucket(std::string_view s);
// Superblock decoding distinguishes "not ours" from "a version we don't know".
enum class SbDecode { ok, bad_magic, bad_version, truncated };
SbDecode decode_superblock(std::string_view s, Superblock& out);

inline constexpr std::string_view kSuperblockKey = "superblock";
inline constexpr std::string_view kNextFileIdKey = "next_file_id";

} // namespace overcache::meta
