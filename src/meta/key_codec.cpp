// DOC: big-endian key encoding and the value layouts of the index (format 3).
// Keys: see the layout table in key_codec.hpp; byte order must equal numeric
// order, which the meta_index unit test checks. Values start with a layout
// byte, 3 for every record format 3 introduced or changed (files, extents,
// buckets), so a value left over from format 2 can never decode as a format-3
// one. Fixed fields come first, then variable-length strings, each as
// (length be32, bytes), in struct order. Decoding is strict: a short or long
// value, an unknown layout byte, an unknown flag bit or an impossible count
// decodes to nullopt/false and is treated as damaged by the caller, never
// guessed at. Dirty values are a bare be64 length (> 0).
#include "overcache/meta/key_codec.hpp"

#include <cstdint>
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
    case Cf::policy:
        return "policy";
    case Cf::dentries:
        return "dentries";
    case Cf::dirs:
        return "dirs";
    case Cf::attrs:
        return "attrs";
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

std::string file_id_key(FileId file) {
    std::string s;
    s.reserve(8);
    put_be64(s, file);
    return s;
}
bool decode_file_id_key(std::string_view s, FileId& out) {
    if (s.size() != 8)
        return false;
    out = get_be64(s.data());
    return true;
}

std::string dirty_key(FileId file, std::uint64_t start) {
    std::string s;
    s.reserve(16);
    put_be64(s, file);
    put_be64(s, start);
    return s;
}
bool decode_dirty_key(std::string_view s, DirtyKey& out) {
    if (s.size() != 16)
        return false;
    out.file = get_be64(s.data());
    out.start = get_be64(s.data() + 8);
    return true;
}
std::string dirty_prefix_end(FileId file) {
    return dirty_key(file + 1, 0); // as extent_prefix_end
}

std::string encode_dirty_len(std::uint64_t len) {
    std::string s;
    s.reserve(8);
    put_be64(s, len);
    return s;
}
std::optional<std::uint64_t> decode_dirty_len(std::string_view s) {
    if (s.size() != 8)
        return std::nullopt;
    const std::uint64_t len = get_be64(s.data());
    if (len == 0)
        return std::nullopt;
    return len;
}

// ---- values ----------------------------------------------------------------

namespace {

// Layout byte of the files, extents and buckets values of format 3.
constexpr char kLayout3 = 3;
constexpr std::uint32_t kKnownFileFlags =
    kFileKernelPagesStale | kFileAhead | kFileWritingBack | kFileConflict | kFilePinned;
constexpr std::uint32_t kKnownExtentFlags = kExtentDirty | kExtentPinned;

class Reader {
public:
    explicit Reader(std::string_view s) : s_(s) {}
    bool u64(std::uint64_t& v) {
        if (left() < 8)
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
        if (left() < 4)
            return fail();
        v = get_be32(s_.data() + pos_);
        pos_ += 4;
        return true;
    }
    bool u8(std::uint8_t& v) {
        if (left() < 1)
            return fail();
        v = static_cast<std::uint8_t>(s_[pos_++]);
        return true;
    }
    bool bytes(void* dst, std::size_t n) {
        if (left() < n)
            return fail();
        std::memcpy(dst, s_.data() + pos_, n);
        pos_ += n;
        return true;
    }
    bool str(std::string& out) {
        std::uint32_t n = 0;
        if (!u32(n) || left() < n)
            return fail();
        out.assign(s_.data() + pos_, n);
        pos_ += n;
        return true;
    }
    bool ok() const { return ok_; }
    bool at_end() const { return pos_ == s_.size(); }
    std::size_t left() const { return s_.size() - pos_; } // pos_ never passes the end

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
    return r.u8(l) && l == kLayout3;
}

void put_str(std::string& out, const std::string& v) {
    put_be32(out, static_cast<std::uint32_t>(v.size()));
    out += v;
}

} // namespace

// files: layout 3, file_id, epoch, size, mtime_ns, ctime_ns, ino, cache_size,
// cache_mtime_ns (be64 each), flags be32, then handle, path, settings as
// (length be32, bytes).
std::string encode(const FileRecord& r) {
    std::string s;
    s.reserve(1 + 8 * 8 + 4 + 3 * 4 + r.handle.size() + r.path.size() + r.settings.size());
    s.push_back(kLayout3);
    put_be64(s, r.file_id);
    put_be64(s, r.epoch);
    put_be64(s, r.size);
    put_be64(s, static_cast<std::uint64_t>(r.mtime_ns));
    put_be64(s, static_cast<std::uint64_t>(r.ctime_ns));
    put_be64(s, r.ino);
    put_be64(s, r.cache_size);
    put_be64(s, static_cast<std::uint64_t>(r.cache_mtime_ns));
    put_be32(s, r.flags);
    put_str(s, r.handle);
    put_str(s, r.path);
    put_str(s, r.settings);
    return s;
}
// policy: FileKey bytes (fsid be64, ino be64) -> PolicyRecord, layout 1
// (schema.hpp): its own numbering, since the family is new in format 3.
constexpr char kPolicyLayout1 = 1;
constexpr char kPolicyLayout2 = 2; // layout 1 + pin
constexpr std::size_t kPolicyLen = 1 + 1 + 1 + 8 + 4;
constexpr std::size_t kPolicyLen2 = kPolicyLen + 1;
constexpr std::uint8_t kPolicyHasCutoff = 1u << 0;
constexpr std::uint8_t kPolicyHasPromote = 1u << 1;
constexpr std::uint8_t kPolicyHasPin = 1u << 2;

std::string encode(const PolicyRecord& r) {
    std::string s;
    s.reserve(kPolicyLen2);
    s.push_back(r.pin ? kPolicyLayout2 : kPolicyLayout1);
    s.push_back(static_cast<char>(r.mode));
    std::uint8_t present = 0;
    if (r.sequential_cutoff)
        present |= kPolicyHasCutoff;
    if (r.promote_after_hits)
        present |= kPolicyHasPromote;
    if (r.pin)
        present |= kPolicyHasPin;
    s.push_back(static_cast<char>(present));
    put_be64(s, r.sequential_cutoff.value_or(0));
    put_be32(s, r.promote_after_hits.value_or(0));
    if (r.pin)
        s.push_back(static_cast<char>(*r.pin ? 1 : 0));
    return s;
}

std::optional<PolicyRecord> decode_policy(std::string_view s) {
    const bool v2 = s.size() == kPolicyLen2 && s[0] == kPolicyLayout2;
    if (!v2 && (s.size() != kPolicyLen || s[0] != kPolicyLayout1))
        return std::nullopt;
    PolicyRecord r;
    r.mode = static_cast<std::uint8_t>(s[1]);
    const auto present = static_cast<std::uint8_t>(s[2]);
    const std::uint8_t known = kPolicyHasCutoff | kPolicyHasPromote | (v2 ? kPolicyHasPin : 0);
    if (r.mode > kPolicyModeWriteback || (present & ~known) != 0)
        return std::nullopt;
    if (v2) {
        // Layout 2 exists only to carry a pin: 0 or 1, present.
        const auto pin = static_cast<std::uint8_t>(s[kPolicyLen]);
        if ((present & kPolicyHasPin) == 0 || pin > 1)
            return std::nullopt;
        r.pin = pin == 1;
    }
    const std::uint64_t cutoff = get_be64(s.data() + 3);
    const std::uint32_t promote = get_be32(s.data() + 11);
    // Absent fields are written as zero: anything else is damage.
    if (((present & kPolicyHasCutoff) == 0 && cutoff != 0) ||
        ((present & kPolicyHasPromote) == 0 && promote != 0))
        return std::nullopt;
    if ((present & kPolicyHasCutoff) != 0)
        r.sequential_cutoff = cutoff;
    if ((present & kPolicyHasPromote) != 0)
        r.promote_after_hits = promote;
    return r;
}

std::optional<FileRecord> decode_file_record(std::string_view s) {
    Reader rd(s);
    FileRecord r;
    if (!layout_ok(rd) || !rd.u64(r.file_id) || !rd.u64(r.epoch) || !rd.u64(r.size) ||
        !rd.i64(r.mtime_ns) || !rd.i64(r.ctime_ns) || !rd.u64(r.ino) || !rd.u64(r.cache_size) ||
        !rd.i64(r.cache_mtime_ns) || !rd.u32(r.flags) || !rd.str(r.handle) || !rd.str(r.path) ||
        !rd.str(r.settings) || !rd.at_end() || (r.flags & ~kKnownFileFlags) != 0)
        return std::nullopt;
    return r;
}

// extents: layout 3, bucket, gen, bucket_off, len, flags, n (be32 each), then
// n checksums be64. len > 0, and n is the csum_block_count() of the extent,
// which, without its start, lies in [ceil(len / 4 KiB), ceil(len / 4 KiB) + 1].
namespace {
constexpr std::size_t kExtentFixed = 1 + 6 * 4;
}

std::string encode(const ExtentValue& v) {
    std::string s;
    s.reserve(kExtentFixed + 8 * v.csums.size());
    s.push_back(kLayout3);
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
    // The read path's decoder: no Reader, no allocation once v.csums has grown.
    if (s.size() < kExtentFixed || s[0] != kLayout3)
        return false;
    const char* p = s.data() + 1;
    v.bucket = get_be32(p);
    v.gen = get_be32(p + 4);
    v.bucket_off = get_be32(p + 8);
    v.len = get_be32(p + 12);
    v.flags = get_be32(p + 16);
    const std::uint32_t n = get_be32(p + 20);
    const std::uint64_t min_blocks = (std::uint64_t{v.len} + kCsumBlock - 1) / kCsumBlock;
    if (v.len == 0 || n < min_blocks || n > min_blocks + 1 || (v.flags & ~kKnownExtentFlags) != 0 ||
        s.size() - kExtentFixed != std::size_t{n} * 8)
        return false;
    v.csums.resize(n);
    const char* c = s.data() + kExtentFixed;
    for (std::uint32_t i = 0; i < n; ++i)
        v.csums[i] = get_be64(c + 8 * static_cast<std::size_t>(i));
    return true;
}
std::optional<ExtentValue> decode_extent(std::string_view s) {
    ExtentValue v;
    if (!decode_extent(s, v))
        return std::nullopt;
    return v;
}

// buckets: layout 3, gen be32, state u8, fill_bytes, live_bytes, dirty_bytes
// (be32 each), last_use be64, then pinned_bytes be32 only when it is not
// zero (records without it, as older builds wrote them, read as 0; a
// bucket without pinned data stays readable by older builds).
std::string encode(const BucketRecord& r) {
    std::string s;
    s.reserve(1 + 4 + 1 + 3 * 4 + 8);
    s.push_back(kLayout3);
    put_be32(s, r.gen);
    s.push_back(static_cast<char>(r.state));
    put_be32(s, r.fill_bytes);
    put_be32(s, r.live_bytes);
    put_be32(s, r.dirty_bytes);
    put_be64(s, r.last_use);
    if (r.pinned_bytes != 0)
        put_be32(s, r.pinned_bytes);
    return s;
}
std::optional<BucketRecord> decode_bucket(std::string_view s) {
    Reader rd(s);
    BucketRecord r;
    std::uint8_t st = 0;
    if (!layout_ok(rd) || !rd.u32(r.gen) || !rd.u8(st) || !rd.u32(r.fill_bytes) ||
        !rd.u32(r.live_bytes) || !rd.u32(r.dirty_bytes) || !rd.u64(r.last_use) ||
        st > static_cast<std::uint8_t>(BucketState::full))
        return std::nullopt;
    if (!rd.at_end() && (!rd.u32(r.pinned_bytes) || r.pinned_bytes == 0 || !rd.at_end()))
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
    // Versions 1 and 2 wrote the superblock in this same layout.
    if (sb.version == 0 || sb.version > kFormatVersion) {
        out.version = sb.version;
        return SbDecode::bad_version;
    }
    if (!rd.bytes(sb.uuid.data(), sb.uuid.size()) || !rd.u64(sb.bucket_size) ||
        !rd.u64(sb.bucket_count) || !rd.u64(sb.data_offset) || !rd.u64(sb.cache_size) ||
        !rd.str(sb.backing_path) || !rd.u64(sb.backing_fsid) || !rd.u64(sb.backing_root_ino) ||
        !rd.at_end())
        return SbDecode::truncated;
    const bool old = sb.version < kFormatVersion;
    out = std::move(sb);
    return old ? SbDecode::old_version : SbDecode::ok;
}

std::string superblock_problem(const Superblock& sb) {
    const std::uint64_t bs = sb.bucket_size;
    if (bs < kSbMinBucketSize || bs > kSbMaxBucketSize || (bs & (bs - 1)) != 0)
        return "bucket_size " + std::to_string(bs) + " is not a power of two from " +
               std::to_string(kSbMinBucketSize) + " to " + std::to_string(kSbMaxBucketSize);
    if (sb.bucket_count < 2 || sb.bucket_count > UINT32_MAX)
        return "bucket_count " + std::to_string(sb.bucket_count) + " is not from 2 to " +
               std::to_string(UINT32_MAX);
    if (sb.data_offset != bs)
        return "data_offset " + std::to_string(sb.data_offset) + " is not bucket_size " +
               std::to_string(bs);
    // bucket_count < 2^32 and bucket_size <= 2^30: no overflow.
    if (sb.cache_size != (sb.bucket_count + 1) * bs)
        return "cache_size " + std::to_string(sb.cache_size) + " is not (bucket_count + 1) * " +
               "bucket_size = " + std::to_string((sb.bucket_count + 1) * bs);
    return {};
}

} // namespace overcache::meta
