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
    bool operator==(const DirRecord&) const = default;
};
std::string encode(const DirRecord& r);
std::optional<DirRecord> decode_dir_record(std::string_view s);

} // namespace overcache::meta
