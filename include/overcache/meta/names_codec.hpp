// Keys and values of the families that hold the backing's directory
// listings (dentries, dirs), as the mount read them. Like every
// index record: big-endian, a leading layout byte, strict decoding (a value
// of the wrong length or layout is damaged: nullopt, never guessed at).
//
//   dentries: (directory FileKey, name hash be64, name bytes) -> DentryValue
//             ordered by hash within a directory, so that a listing served
//             from here has offsets that stay valid across calls and
//             handles: an entry's offset is its hash + 1, and a listing
//             resumes at the first hash >= the offset (seekdir/telldir).
//   dirs:     directory FileKey -> DirRecord: its dentries are a whole
//             listing, as of the directory's mtime and ctime.
//   attrs:    file FileKey -> AttrRecord: its attributes as the mount last
//             saw them, and a symlink's target.
#pragma once

#include "overcache/meta/key_codec.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace overcache::meta {

// FNV-1a of the name, shifted into [1, 2^62]: never 0 (offset 0 is a
// listing's start) and, plus one, a positive off_t. Stored in keys: never
// change it. Two names of one directory with the same hash both list, but
// a listing cut between them resumes after both (odds: 2^-62 a pair).
std::uint64_t name_hash(std::string_view name) noexcept;

std::string dentry_key(const FileKey& dir, std::string_view name);
// The first key of `dir`'s entries with a hash >= `hash`; dentry_key_end:
// past all of them.
std::string dentry_seek_key(const FileKey& dir, std::uint64_t hash);
std::string dentry_key_end(const FileKey& dir);
struct DentryKey {
    FileKey dir;
    std::uint64_t hash = 0;
    std::string_view name; // into the decoded key
};
bool decode_dentry_key(std::string_view s, DentryKey& out);

struct DentryValue {
    FileKey child;       // the entry's identity (its directory's fsid, d_ino)
    std::uint8_t type = 0; // d_type (DT_*)
    bool operator==(const DentryValue&) const = default;
};
std::string encode(const DentryValue& v);
std::optional<DentryValue> decode_dentry(std::string_view s);

struct DirRecord {
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;
    std::uint64_t entries = 0;
    // The index's sequence number when the reading that made it whole
    // began: attributes recorded before it may belong to a file that had
    // the same inode number before (see AttrRecord::seen_seq). A layout-1
    // record (before attributes were kept) reads as "no attributes vouched".
    std::uint64_t began_seq = ~std::uint64_t{0};
    bool operator==(const DirRecord&) const = default;
};
std::string encode(const DirRecord& r);
std::optional<DirRecord> decode_dir_record(std::string_view s);

// A file's lstat as the backing gave it (st_dev aside: a running system's
// number, not the file's), and for a symlink its target.
struct AttrRecord {
    std::uint32_t mode = 0;
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::uint32_t blksize = 0;
    std::uint64_t nlink = 0;
    std::uint64_t size = 0;
    std::uint64_t blocks = 0;
    std::uint64_t rdev = 0;
    std::int64_t atime_ns = 0;
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;
    // The index's sequence number before the record was written: a listing
    // vouches for it only if it is not older than the listing's reading
    // (DirRecord::began_seq). An inode number the backing reused for a new
    // file under a listed name has, until seen again, an older record.
    std::uint64_t seen_seq = 0;
    std::int64_t seen_ns = 0; // the wall clock when the backing gave them (coherency=timeout)
    // What a listxattr of the file said when they were seen (kXattrs*):
    // ls -l asks every file for its ACL and security label, and a file
    // known to have no extended attributes is answered without the backing.
    // A layout-1 record (before this was kept) reads as unknown.
    std::uint8_t xattrs = 0;
    std::string target; // a symlink's; empty for other files
    bool operator==(const AttrRecord&) const = default;
};
inline constexpr std::uint8_t kXattrsUnknown = 0;
inline constexpr std::uint8_t kXattrsNone = 1;        // an empty list
inline constexpr std::uint8_t kXattrsSome = 2;        // names listed
inline constexpr std::uint8_t kXattrsUnsupported = 3; // ENOTSUP: the filesystem has none
std::string encode(const AttrRecord& r);
std::optional<AttrRecord> decode_attr_record(std::string_view s);

} // namespace overcache::meta
