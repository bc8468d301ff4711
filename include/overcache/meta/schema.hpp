// The index's data model: column families and the value records stored in
// them. Keys are built by key_codec.hpp; values here are big-endian records
// with a leading layout byte so a later format can add fields: fixed-width
// fields first, then length-prefixed strings. Nothing in this header knows
// RocksDB.
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
    meta,     // "superblock", "next_file_id", "setting/NAME"
    files,    // backing identity -> FileRecord
    extents,  // (FileId, end offset) -> ExtentValue
    buckets,  // bucket index -> BucketRecord
    file_ids, // FileId -> FileKey: from an extent or a dirty entry back to its file
    dirty,    // (FileId, offset) -> length: dirty ranges in writeback order (empty until writeback)
    policy,   // backing identity (file or directory) -> PolicyRecord (user.overcache.mode, ...)
    // The backing's directory listings as the mount read them
    // (meta/names_codec.hpp; owner: cache/meta_cache.*).
    dentries, // (directory identity, name hash, name) -> DentryValue
    dirs,     // directory identity -> DirRecord: its listing above is whole
    attrs,    // file identity -> AttrRecord: its attributes (a symlink's target) as last seen
};
inline constexpr std::array<Cf, 10> kAllCfs{Cf::meta,     Cf::files,    Cf::extents, Cf::buckets,
                                            Cf::file_ids, Cf::dirty,    Cf::policy,  Cf::dentries,
                                            Cf::dirs,     Cf::attrs};
const char* cf_name(Cf cf) noexcept;

using FileId = std::uint64_t;

// FileRecord::flags
// The kernel may hold pages of the file from before a backing change the
// cache detected outside an open: the next open must not keep them.
inline constexpr std::uint32_t kFileKernelPagesStale = 1u << 0;
// cache_size/cache_mtime_ns are ahead of the backing (dirty data, writeback).
inline constexpr std::uint32_t kFileAhead = 1u << 1;
// Writeback is copying dirty data to the backing (set, synced, before the
// first byte goes out; cleared with the extents it marked clean): a backing
// that no longer matches the record is then our own half-done copy, not a
// change behind the mount.
inline constexpr std::uint32_t kFileWritingBack = 1u << 2;
// The file's last writeback found the backing changed behind the mount and
// saved the cache's bytes as a conflict copy (user.overcache.state reads
// `conflict`). Cleared by the next write through the mount and by an
// invalidate: either makes the cache and the backing agree again.
inline constexpr std::uint32_t kFileConflict = 1u << 3;
// The file's extents were marked kExtentPinned (its effective
// user.overcache.pin was 1 at its last open or pin): an open under a
// different effective pin re-marks them. Set after the extents are marked
// and cleared after they are unmarked, so a crash in between leaves a
// record that asks for the re-marking again, never pinned extents that
// nothing would unpin.
inline constexpr std::uint32_t kFilePinned = 1u << 4;

// What the cache believed about a backing file when it cached its data.
// Any difference from the backing's fstat at open (or before a change made
// through the mount) drops the file's extents and bumps `epoch`; the FileId
// stays, so per-file settings and (later) dirty data keep their key.
struct FileRecord {
    FileId file_id = 0;
    std::uint64_t epoch = 0; // bumped every time the cached data is dropped
    // The backing's attributes as of the last check or our own change.
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;
    std::uint64_t ino = 0;
    // The cache's own view while it is ahead of the backing (kFileAhead).
    std::uint64_t cache_size = 0;
    std::int64_t cache_mtime_ns = 0;
    std::uint32_t flags = 0;
    // How to reopen the backing file after a restart: a name_to_handle_at()
    // handle (handle_type be32, then the f_handle bytes) where the backing
    // supports it, and the path below the backing root as of the last open or
    // rename through the mount.
    std::string handle;
    std::string path;
    // Per-file settings (mode, pin, ...): opaque bytes owned by the control
    // surface; empty means "inherit everything".
    std::string settings;

    bool operator==(const FileRecord&) const = default;
};

// Per-path settings of a file or directory (the `policy` family), keyed by
// the backing identity as `files` is, so they follow renames and outlive
// the mount. Each field is unset (inherit) or a value. Layout 1: layout
// byte, mode (0 unset, else kPolicyMode*), present bits (1: cutoff, 2:
// promote), sequential_cutoff be64, promote_after_hits be32 (fields that
// are not present are zero). Layout 2 (written only when pin is set, so a
// record without one stays readable by older builds): layout 1's fields
// with present bit 4 (pin), then pin u8 (0 or 1). The cache modes' codes are on disk: never
// renumber.
inline constexpr std::uint8_t kPolicyModeWritethrough = 1;
inline constexpr std::uint8_t kPolicyModeWritearound = 2;
inline constexpr std::uint8_t kPolicyModeNone = 3;
inline constexpr std::uint8_t kPolicyModeWriteback = 4;
struct PolicyRecord {
    std::uint8_t mode = 0;
    std::optional<std::uint64_t> sequential_cutoff;
    std::optional<std::uint32_t> promote_after_hits;
    std::optional<bool> pin;
    bool operator==(const PolicyRecord&) const = default;
};

inline constexpr std::uint32_t kExtentDirty = 1u << 0; // writeback: not on the backing yet
// The extent belongs to a pinned file (user.overcache.pin): its bucket is
// never reclaimed while it holds it. Moving GC moves it with the flag.
inline constexpr std::uint32_t kExtentPinned = 1u << 1;

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
    // One checksum (XXH3-64) per kCsumBlock grid block the extent touches, in
    // file order; an edge block that the extent covers only in part has the
    // checksum of the extent's bytes in it. 8 bytes per 4 KiB: 0.2% of the
    // cached data. csum_block_count(start, len) entries.
    std::vector<std::uint64_t> csums;
};

enum class BucketState : std::uint8_t { free = 0, open = 1, full = 2 };

struct BucketRecord {
    std::uint32_t gen = 0;
    BucketState state = BucketState::free;
    std::uint32_t fill_bytes = 0;   // bytes appended since the bucket was last freed
    std::uint32_t live_bytes = 0;   // bytes of current extents in it (moving GC ranks by it)
    std::uint32_t dirty_bytes = 0;  // of which dirty (writeback); GC never frees those
    std::uint64_t last_use = 0;     // allocator tick of the last hit or fill (LRU)
    std::uint32_t pinned_bytes = 0; // of which pinned (user.overcache.pin); GC never frees those
};

// 2: per-block extent checksums (version 1 had one XXH3-64 an extent).
// 3: stable FileIds with epochs, reopen handles/paths, 64-bit block
//    checksums, live/dirty bytes per bucket, file_ids and dirty families.
//    A version-2 cache holds only clean data: it is dropped with a log line.
inline constexpr std::uint32_t kFormatVersion = 3;

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
std::string encode(const PolicyRecord& r);
std::optional<PolicyRecord> decode_policy(std::string_view s);
std::optional<ExtentValue> decode_extent(std::string_view s);
// The same into `out`, reusing its checksum vector (no allocation once it has
// grown): for the read path. false: damaged (out is then unspecified).
bool decode_extent(std::string_view s, ExtentValue& out);
std::optional<BucketRecord> decode_bucket(std::string_view s);
// Superblock decoding distinguishes "not ours" from "a version we don't know"
// and from "an older version we know" (1 .. kFormatVersion - 1, whose
// superblock has the same layout): old_version fills `out` completely (with
// the old version number), so the caller can check whose cache it was before
// replacing it; bad_version sets only out.version.
enum class SbDecode { ok, bad_magic, bad_version, truncated, old_version };
SbDecode decode_superblock(std::string_view s, Superblock& out);

// The bounds of a superblock as format() writes it: bucket_size a power of
// two from kSbMinBucketSize to kSbMaxBucketSize, 2 to UINT32_MAX buckets
// (numbered in 32 bits), bucket 0 at data_offset == bucket_size (the data
// header fills the first slot) and cache_size == (bucket_count + 1) *
// bucket_size. Empty when `sb` keeps them, else a one-line reason naming
// the field: a decoded superblock that fails it is damaged, never used.
inline constexpr std::uint64_t kSbMinBucketSize = kCsumBlock;
inline constexpr std::uint64_t kSbMaxBucketSize = std::uint64_t{1} << 30;
std::string superblock_problem(const Superblock& sb);

inline constexpr std::string_view kSuperblockKey = "superblock";
inline constexpr std::string_view kNextFileIdKey = "next_file_id";
// "setting/NAME" -> the value as the -o option says it: runtime `set`s.
inline constexpr std::string_view kSettingPrefix = "setting/";

} // namespace overcache::meta
