// DOC: big-endian key encoding and the fixed value layouts of the index.
// Keys: see the layout table in key_codec.hpp; byte order must equal numeric
// order, which the key_codec unit test checks. Values start with a layout
// byte (1; 2 for extents, which carry per-block checksums) and are decoded strictly: a short or
// unknown value decodes to nullopt and is treated as damaged by the caller, never guessed at.
#include "overcache/meta/key_codec.hpp"

#include <cstring>

namespace overcache::meta {

const char* cf_name(Cf cf) noexcept {
    switch (cf) {
    case Cf::meta:
        return "meta";
    case Cf::files:
        return "files";
    case Cf::extents:
        return "extents";
    case Cf::buckets:
        return "buckets";
    case Cf::file_ids:
        return "file_ids";
    case Cf::dirty:
        return "dirty";
    }
    return "?";
}

std::string file_key(const FileKey& k) {
    std::string s;
    s.reserve(16);
    put_be64(s, k.fsid);
    put_be64(s, k.ino);
    return s;
}
bool decode_file_key(std::string_view s, FileKey& out) {
    if (s.size() != 16)
        return false;
    out.fsid = get_be64(s.data());
    out.ino = get_be64(s.data() + 8);
    return true;
}

std::string extent_key(FileId file, std::uint64_t end) {
    std::string s;
    s.reserve(16);
    put_be64(s, file);
    put_be64(s, end);
    return s;
}
bool decode_extent_key(std::string_view s, ExtentKey& out) {
    if (s.size() != 16)
        return false;
    out.file = get_be64(s.data());
    out.end = get_be64(s.data() + 8);
    return true;
}
std::string extent_prefix_end(FileId file) {
    // FileIds start at 1 and never reach UINT64_MAX, so file + 1 is safe.
    return extent_key(file + 1, 0);
}

std::string file_id_key(FileId file) {
    std::string s;
    put_be64(s, file);
    return s;
}

std::string bucket_key(std::uint32_t bucket) {
    std::string s;
    put_be32(s, bucket);
    return s;
}
bool decode_bucket_key(std::string_view s, std::uint32_t& out) {
    if (s.size() != 4)
        return false;
    out = get_be32(s.data());
    return true;
}

// ---- values ----------------------------------------------------------------

namespace {

constexpr char kLayout1 = 1;

class Reader {
public:
    explicit Reader(std::string_view s) : s_(s) {}
    bool u64(std::uint64_t& v) {
        if (s_.size() - pos_ < 8 || pos_ > s_.size())
            return fail();
        v = get_be64(s_.data() + pos_);
        pos_ += 8;
        return true;
    }
    bool i64(std::int64_t& v) {
        std::uint64_t u = 0;
        if (!u64(u))
            return false;
        v = static_cast<std::int64_t>(u);
        return true;
    }
    bool u32(std::uint32_t& v) {
        if (s_.size() - pos_ < 4 || pos_ > s_.size())
            return fail();
        v = get_be32(s_.data() + pos_);
        pos_ += 4;
        return true;
    }
    bool u8(std::uint8_t& v) {
        if (pos_ >= s_.size())
            return fail();
        v = static_cast<std::uint8_t>(s_[pos_++]);
        return true;
    }
    bool bytes(void* dst, std::size_t n) {
        if (s_.size() - pos_ < n || pos_ > s_.size())
            return fail();
        std::memcpy(dst, s_.data() + pos_, n);
        pos_ += n;
        return true;
    }
    bool str(std::string& out) {
        std::uint32_t n = 0;
        if (!u32(n) || s_.size() - pos_ < n)
            return fail();
        out.assign(s_.data() + pos_, n);
        pos_ += n;
        return true;
    }
    bool ok() const { return ok_; }
    bool at_end() const { return pos_ == s_.size(); }

private:
    bool fail() {
        ok_ = false;
        return false;
    }
    std::string_view s_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

bool layout_ok(Reader& r) {
    std::uint8_t l = 0;
    return r.u8(l) && l == kLayout1;
}

} // namespace

std::string encode(const FileRecord& r) {
    std::string s(1, kLayout1);
    put_be64(s, r.file_id);
    put_be64(s, r.size);
    put_be64(s, static_cast<std::uint64_t>(r.mtime_ns));
    put_be64(s, static_cast<std::uint64_t>(r.ctime_ns));
    put_be64(s, r.ino);
    return s;
}
std::optional<FileRecord> decode_file_record(std::string_view s) {
    Reader rd(s);
    FileRecord r;
    if (!layout_ok(rd) || !rd.u64(r.file_id) || !rd.u64(r.size) || !rd.i64(r.mtime_ns) ||
        !rd.i64(r.ctime_ns) || !rd.u64(r.ino) || !rd.at_end())
        return std::nullopt;
    return r;
}

// Extent values have their own layout byte: 2 (per-block checksums).
constexpr char kExtentLayout2 = 2;

std::string encode(const ExtentValue& v) {
    std::string s;
    s.reserve(1 + 6 * 4 + 8 * v.csums.size());
    s.push_back(kExtentLayout2);
    put_be32(s, v.bucket);
    put_be32(s, v.gen);
    put_be32(s, v.bucket_off);
    put_be32(s, v.len);
    put_be32(s, v.flags);
    put_be32(s, static_cast<std::uint32_t>(v.csums.size()));
    for (auto c : v.csums)
        put_be64(s, c);
    return s;
}
bool decode_extent(std::string_view s, ExtentValue& v) {
    Reader rd(s);
    std::uint8_t layout = 0;
    std::uint32_t n = 0;
    if (!rd.u8(layout) || layout != kExtentLayout2 || !rd.u32(v.bucket) || !rd.u32(v.gen) ||
        !rd.u32(v.bucket_off) || !rd.u32(v.len) || !rd.u32(v.flags) || !rd.u32(n) ||
        s.size() - (1 + 6 * 4) != std::size_t{n} * 8)
        return false;
    v.csums.resize(n);
    const char* p = s.data() + 1 + 6 * 4;
    for (std::uint32_t i = 0; i < n; ++i)
        v.csums[i] = get_be64(p + 8 * i);
    return true;
}
std::optional<ExtentValue> decode_extent(std::string_view s) {
    ExtentValue v;
    if (!decode_extent(s, v))
        return std::nullopt;
    return v;
}

std::string encode(const BucketRecord& r) {
    std::string s(1, kLayout1);
    put_be32(s, r.gen);
    s.push_back(static_cast<char>(r.state));
    put_be32(s, r.fill_bytes);
    put_be32(s, r.live_bytes);
    put_be32(s, r.dirty_bytes);
    put_be64(s, r.last_use);
    return s;
}
std::optional<BucketRecord> decode_bucket(std::string_view s) {
    Reader rd(s);
    BucketRecord r;
    std::uint8_t st = 0;
    if (!layout_ok(rd) || !rd.u32(r.gen) || !rd.u8(st) || !rd.u32(r.fill_bytes) ||
        !rd.u32(r.live_bytes) || !rd.u32(r.dirty_bytes) || !rd.u64(r.last_use) || !rd.at_end() ||
        st > 2)
        return std::nullopt;
    r.state = static_cast<BucketState>(st);
    return r;
}

namespace {
constexpr char kSbMagic[8] = {'O', 'C', 'A', 'C', 'H', 'E', 'S', 'B'};
}

std::string encode(const Superblock& sb) {
    std::string s(kSbMagic, sizeof kSbMagic);
    put_be32(s, sb.version);
    s.append(reinterpret_cast<const char*>(sb.uuid.data()), sb.uuid.size());
    put_be64(s, sb.bucket_size);
    put_be64(s, sb.bucket_count);
    put_be64(s, sb.data_offset);
    put_be64(s, sb.cache_size);
    put_be32(s, static_cast<std::uint32_t>(sb.backing_path.size()));
    s += sb.backing_path;
    put_be64(s, sb.backing_fsid);
    put_be64(s, sb.backing_root_ino);
    return s;
}

SbDecode decode_superblock(std::string_view s, Superblock& out) {
    if (s.size() < sizeof kSbMagic + 4 || std::memcmp(s.data(), kSbMagic, sizeof kSbMagic) != 0)
        return SbDecode::bad_magic;
    Reader rd(s.substr(sizeof kSbMagic));
    Superblock sb;
    rd.u32(sb.version);
    if (sb.version != kFormatVersion)
        return SbDecode::bad_version;
    if (!rd.bytes(sb.uuid.data(), sb.uuid.size()) || !rd.u64(sb.bucket_size) ||
        !rd.u64(sb.bucket_count) || !rd.u64(sb.data_offset) || !rd.u64(sb.cache_size) ||
        !rd.str(sb.backing_path) || !rd.u64(sb.backing_fsid) || !rd.u64(sb.backing_root_ino) ||
        !rd.at_end())
        return SbDecode::truncated;
    out = std::move(sb);
    return SbDecode::ok;
}

} // namespace overcache::meta
