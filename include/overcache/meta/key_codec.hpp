// Big-endian, fixed-width keys: byte order equals numeric order, so a
// RocksDB iterator walks a file's extents in offset order. Layouts:
//
//   files:    (fsid be64, ino be64)           -> FileRecord
//   extents:  (FileId be64, end offset be64)  -> ExtentValue
//             keyed by the END (exclusive) as bcache does: Seek(file, off + 1)
//             lands on the first extent that can cover `off`.
//   buckets:  (bucket be32)                   -> BucketRecord
//   file_ids: (FileId be64)                   -> FileKey bytes (fsid be64, ino be64)
//             the way back from an extent or a dirty range to its files record.
//   dirty:    (FileId be64, 0 be64) -> be64 unix time (ns) the file became
//             dirty: one entry per file that has dirty extents, so recovery
//             and writeback find them without reading every extent. (The
//             offset field is kept for finer-grained entries.)
//             keyed by the START: writeback walks it file by file, each file
//             in offset order, which is the backing's preferred write order.
//   meta:     ASCII names ("superblock", "next_file_id")
#pragma once

#include "overcache/meta/schema.hpp"

#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace overcache::meta {

// Inline: the read path decodes an extent's checksums (64 of them for a
// 256 KiB extent) on every hit.
inline void put_be64(std::string& out, std::uint64_t v) {
    for (int i = 7; i >= 0; --i)
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void put_be32(std::string& out, std::uint32_t v) {
    for (int i = 3; i >= 0; --i)
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline std::uint64_t get_be64(const char* p) noexcept {
    std::uint64_t v = 0;
    std::memcpy(&v, p, sizeof v);
    return std::endian::native == std::endian::little ? __builtin_bswap64(v) : v;
}
inline std::uint32_t get_be32(const char* p) noexcept {
    std::uint32_t v = 0;
    std::memcpy(&v, p, sizeof v);
    return std::endian::native == std::endian::little ? __builtin_bswap32(v) : v;
}

struct FileKey {
    std::uint64_t fsid = 0;
    std::uint64_t ino = 0;
    bool operator==(const FileKey&) const = default;
};
std::string file_key(const FileKey& k);
bool decode_file_key(std::string_view s, FileKey& out);

struct ExtentKey {
    FileId file = 0;
    std::uint64_t end = 0; // exclusive end offset of the extent in the file
};
std::string extent_key(FileId file, std::uint64_t end);
bool decode_extent_key(std::string_view s, ExtentKey& out);
// [extent_key(f, 0), extent_prefix_end(f)) holds exactly file f's extents.
std::string extent_prefix_end(FileId file);

std::string bucket_key(std::uint32_t bucket);
bool decode_bucket_key(std::string_view s, std::uint32_t& out);

// file_ids: the key is the FileId, the value the file's FileKey (file_key()).
std::string file_id_key(FileId file);
bool decode_file_id_key(std::string_view s, FileId& out);

struct DirtyKey {
    FileId file = 0;
    std::uint64_t start = 0; // first dirty byte of the range in the file
    bool operator==(const DirtyKey&) const = default;
};
std::string dirty_key(FileId file, std::uint64_t start);
bool decode_dirty_key(std::string_view s, DirtyKey& out);
// [dirty_key(f, 0), dirty_prefix_end(f)) holds exactly file f's dirty ranges.
std::string dirty_prefix_end(FileId file);
// dirty values: the range's length in bytes, be64 (> 0).
std::string encode_dirty_len(std::uint64_t len);
std::optional<std::uint64_t> decode_dirty_len(std::string_view s);

} // namespace overcache::meta
