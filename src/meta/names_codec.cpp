// DOC: keys and values of the dentries and dirs families (see
// names_codec.hpp). Layout byte 1 for each value.
#include "overcache/meta/names_codec.hpp"

#include <cstring>

namespace overcache::meta {
namespace {

constexpr char kLayout = 1;
constexpr std::size_t kDentryValueSize = 1 + 8 + 8 + 1;
constexpr std::size_t kDirRecordSize = 1 + 8 + 8 + 8;

} // namespace

std::uint64_t name_hash(std::string_view name) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (const char c : name) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ull;
    }
    return (h >> 2) + 1;
}

std::string dentry_key(const FileKey& dir, std::string_view name) {
    std::string s = dentry_seek_key(dir, name_hash(name));
    s.append(name);
    return s;
}

std::string dentry_seek_key(const FileKey& dir, std::uint64_t hash) {
    std::string s;
    s.reserve(24 + 32);
    put_be64(s, dir.fsid);
    put_be64(s, dir.ino);
    put_be64(s, hash);
    return s;
}

std::string dentry_key_end(const FileKey& dir) {
    // Hashes stay below 2^62 + 2: this sorts after every one of them.
    return dentry_seek_key(dir, ~std::uint64_t{0});
}

bool decode_dentry_key(std::string_view s, DentryKey& out) {
    if (s.size() <= 24)
        return false;
    out.dir.fsid = get_be64(s.data());
    out.dir.ino = get_be64(s.data() + 8);
    out.hash = get_be64(s.data() + 16);
    out.name = s.substr(24);
    return out.hash == name_hash(out.name);
}

std::string encode(const DentryValue& v) {
    std::string s;
    s.reserve(kDentryValueSize);
    s.push_back(kLayout);
    put_be64(s, v.child.fsid);
    put_be64(s, v.child.ino);
    s.push_back(static_cast<char>(v.type));
    return s;
}

std::optional<DentryValue> decode_dentry(std::string_view s) {
    if (s.size() != kDentryValueSize || s[0] != kLayout)
        return std::nullopt;
    DentryValue v;
    v.child.fsid = get_be64(s.data() + 1);
    v.child.ino = get_be64(s.data() + 9);
    v.type = static_cast<std::uint8_t>(s[17]);
    return v;
}

std::string encode(const DirRecord& r) {
    std::string s;
    s.reserve(kDirRecordSize);
    s.push_back(kLayout);
    put_be64(s, static_cast<std::uint64_t>(r.mtime_ns));
    put_be64(s, static_cast<std::uint64_t>(r.ctime_ns));
    put_be64(s, r.entries);
    return s;
}

std::optional<DirRecord> decode_dir_record(std::string_view s) {
    if (s.size() != kDirRecordSize || s[0] != kLayout)
        return std::nullopt;
    DirRecord r;
    r.mtime_ns = static_cast<std::int64_t>(get_be64(s.data() + 1));
    r.ctime_ns = static_cast<std::int64_t>(get_be64(s.data() + 9));
    r.entries = get_be64(s.data() + 17);
    return r;
}

} // namespace overcache::meta
