// DOC: keys and values of the dentries and dirs families (see
// names_codec.hpp). Layout byte 1 for each value; 2 for a DirRecord that
// carries the sequence number its reading began at.
#include "overcache/meta/names_codec.hpp"

#include <cstring>

namespace overcache::meta {
namespace {

constexpr char kLayout = 1;
constexpr char kDirLayout = 2;
constexpr std::size_t kDentryValueSize = 1 + 8 + 8 + 1;
constexpr std::size_t kDirRecordSize1 = 1 + 8 + 8 + 8;
constexpr std::size_t kDirRecordSize = kDirRecordSize1 + 8;
// AttrRecord layout 1, and 2 (the xattrs byte before the target's length).
constexpr std::size_t kAttrFixedSize1 = 1 + 4 * 4 + 9 * 8 + 4;
constexpr std::size_t kAttrFixedSize = kAttrFixedSize1 + 1;
constexpr char kAttrLayout = 2;
// Linux's PATH_MAX: no symlink target is longer.
constexpr std::size_t kMaxTarget = 4096;

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
    s.push_back(kDirLayout);
    put_be64(s, static_cast<std::uint64_t>(r.mtime_ns));
    put_be64(s, static_cast<std::uint64_t>(r.ctime_ns));
    put_be64(s, r.entries);
    put_be64(s, r.began_seq);
    return s;
}

std::optional<DirRecord> decode_dir_record(std::string_view s) {
    const bool v1 = s.size() == kDirRecordSize1 && s[0] == kLayout;
    const bool v2 = s.size() == kDirRecordSize && s[0] == kDirLayout;
    if (!v1 && !v2)
        return std::nullopt;
    DirRecord r;
    r.mtime_ns = static_cast<std::int64_t>(get_be64(s.data() + 1));
    r.ctime_ns = static_cast<std::int64_t>(get_be64(s.data() + 9));
    r.entries = get_be64(s.data() + 17);
    if (v2)
        r.began_seq = get_be64(s.data() + 25);
    return r;
}

std::string encode(const AttrRecord& r) {
    std::string s;
    s.reserve(kAttrFixedSize + r.target.size());
    s.push_back(kAttrLayout);
    put_be32(s, r.mode);
    put_be32(s, r.uid);
    put_be32(s, r.gid);
    put_be32(s, r.blksize);
    put_be64(s, r.nlink);
    put_be64(s, r.size);
    put_be64(s, r.blocks);
    put_be64(s, r.rdev);
    put_be64(s, static_cast<std::uint64_t>(r.atime_ns));
    put_be64(s, static_cast<std::uint64_t>(r.mtime_ns));
    put_be64(s, static_cast<std::uint64_t>(r.ctime_ns));
    put_be64(s, r.seen_seq);
    put_be64(s, static_cast<std::uint64_t>(r.seen_ns));
    s.push_back(static_cast<char>(r.xattrs));
    put_be32(s, static_cast<std::uint32_t>(r.target.size()));
    s.append(r.target);
    return s;
}

std::optional<AttrRecord> decode_attr_record(std::string_view s) {
    const bool v1 = s.size() >= kAttrFixedSize1 && s[0] == kLayout;
    const bool v2 = s.size() >= kAttrFixedSize && s[0] == kAttrLayout;
    if (!v1 && !v2)
        return std::nullopt;
    const std::size_t fixed = v2 ? kAttrFixedSize : kAttrFixedSize1;
    const char* p = s.data() + 1;
    AttrRecord r;
    r.mode = get_be32(p);
    r.uid = get_be32(p + 4);
    r.gid = get_be32(p + 8);
    r.blksize = get_be32(p + 12);
    p += 16;
    r.nlink = get_be64(p);
    r.size = get_be64(p + 8);
    r.blocks = get_be64(p + 16);
    r.rdev = get_be64(p + 24);
    r.atime_ns = static_cast<std::int64_t>(get_be64(p + 32));
    r.mtime_ns = static_cast<std::int64_t>(get_be64(p + 40));
    r.ctime_ns = static_cast<std::int64_t>(get_be64(p + 48));
    r.seen_seq = get_be64(p + 56);
    r.seen_ns = static_cast<std::int64_t>(get_be64(p + 64));
    p += 72;
    if (v2) {
        r.xattrs = static_cast<std::uint8_t>(*p++);
        if (r.xattrs > kXattrsUnsupported)
            return std::nullopt;
    }
    const std::uint32_t n = get_be32(p);
    if (n > kMaxTarget || s.size() != fixed + n)
        return std::nullopt;
    // Only a symlink has a target (one not read yet is empty).
    if (n != 0 && (r.mode & 0170000) != 0120000)
        return std::nullopt;
    r.target.assign(s.substr(fixed));
    return r;
}

} // namespace overcache::meta
