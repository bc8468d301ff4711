// DOC: resizing an unmounted cache. The index is the authority on the size:
// the superblock changes in one synced batch together with everything that
// depends on it (bucket records, extents moved or dropped), and the data
// device is made ready for both sizes before that batch and trimmed only
// after it. So a crash leaves either the old cache (a data file longer than
// it needs, or copies in buckets the index still calls free: both harmless)
// or the new one (a data header whose bucket_count lags: repaired at open).
// Shrinking copies the dirty extents past the new end, whose bytes exist
// nowhere else, into free buckets that stay, at a gen one past the free
// bucket's, with their checksums verified and kept; then the clean ones
// that still fit (most recently used bucket first, leaving a tenth of the
// buckets free so the mount starts with room), a clean extent whose
// checksum fails being dropped instead. The rest of the clean extents
// there are dropped, and every stale one (so a bucket number that comes
// back in a later grow carries no old entry whose gen could match again).
// Pinned extents (user.overcache.pin) move with their flag and count in
// their new bucket's pinned bytes; pinned clean ones that do not fit are
// dropped like any clean data (the backing has them; `overcache pin`
// fetches them again).
#include "overcache/store/resize.hpp"

#include "data_header.hpp"
#include "offline_cache.hpp"
#include "overcache/meta/key_codec.hpp"
#include "util/size_text.hpp"
#include "util/unique_fd.hpp"

#include <algorithm>
#include <cstdint>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <vector>

namespace overcache::store {
namespace {

// The allocator's gen for a bucket record that does not decode: such a
// bucket is kept out of use, so no extent in it is current.
constexpr std::uint32_t kDamagedGen = 0xffff0000u;
// Where copies are placed in a bucket: the device block the allocator aligns
// extents to.
constexpr std::uint64_t kAlign = meta::kCsumBlock;

struct Bucket {
    meta::BucketRecord rec;
    bool damaged = false;
};

// Every bucket's record (a missing one is a free bucket at gen 0).
Result<std::vector<Bucket>> load_buckets(meta::MetaStore& ms, std::uint64_t count) {
    std::vector<Bucket> out(count);
    auto cur = ms.cursor(meta::Cf::buckets);
    for (cur.seek_to_first(); cur.valid(); cur.next()) {
        std::uint32_t b = 0;
        if (!meta::decode_bucket_key(cur.key(), b) || b >= count)
            continue;
        if (auto r = meta::decode_bucket(cur.value()))
            out[b].rec = *r;
        else
            out[b] =
                Bucket{meta::BucketRecord{kDamagedGen, meta::BucketState::full, 0, 0, 0, 0}, true};
    }
    if (auto st = cur.status(); !st)
        return fail(st.error());
    return out;
}

struct Move {
    std::string key;
    std::uint64_t file_start = 0;
    meta::ExtentValue from;
    meta::ExtentValue to;
};

Result<void> sync_fd(int fd, const std::string& what) {
    if (::fdatasync(fd) != 0)
        return fail_errno("cannot sync " + what);
    return {};
}

} // namespace

Result<void> check_resize_room(int data_fd, const std::string& data_path, std::uint64_t size) {
    struct stat st {};
    if (::fstat(data_fd, &st) != 0)
        return fail_errno("cannot stat " + data_path);
    if (S_ISBLK(st.st_mode)) {
        const off_t end = ::lseek(data_fd, 0, SEEK_END);
        if (end < 0)
            return fail_errno("cannot get the size of " + data_path);
        const auto dev = static_cast<std::uint64_t>(end);
        if (size > dev)
            return fail(Errc::BadValue, "cache_size " + size_text(size) +
                                            " is larger than the device " + data_path + " (" +
                                            size_text(dev) + ")");
        return {};
    }
    // As at format: the file is sparse, but a cache larger than its whole
    // filesystem can never be filled and is a mistake.
    struct statvfs vfs {};
    if (::fstatvfs(data_fd, &vfs) == 0) {
        const std::uint64_t fs_size = static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize;
        if (size > fs_size)
            return fail(Errc::BadValue, "cache_size " + size_text(size) +
                                            " is larger than the filesystem holding " + data_path +
                                            " (" + size_text(fs_size) + ")");
    }
    return {};
}

namespace {

bool is_regular(int fd) {
    struct stat st {};
    return ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

Result<void> grow(meta::MetaStore& ms, int data_fd, const std::string& data_path,
                  meta::Superblock& sb, std::uint64_t size) {
    if (auto r = check_resize_room(data_fd, data_path, size); !r)
        return r;
    // Data first: the longer file is harmless to the old cache.
    if (is_regular(data_fd)) {
        struct stat st {};
        if (::fstat(data_fd, &st) != 0)
            return fail_errno("cannot stat " + data_path);
        if (static_cast<std::uint64_t>(st.st_size) < size &&
            ::ftruncate(data_fd, static_cast<off_t>(size)) != 0)
            return fail_errno("cannot extend the cache data file " + data_path);
        if (::fsync(data_fd) != 0)
            return fail_errno("cannot sync " + data_path);
    }
    meta::Superblock next = sb;
    next.bucket_count = size / sb.bucket_size - 1;
    next.cache_size = size;
    auto batch = ms.batch();
    // No extent may point into the new buckets (a shrink drops them all, but
    // an index written by anything else might): such an entry at gen 0 would
    // read as current.
    auto cur = ms.cursor(meta::Cf::extents);
    meta::ExtentValue v;
    for (cur.seek_to_first(); cur.valid(); cur.next())
        if (meta::decode_extent(cur.value(), v) && v.bucket >= sb.bucket_count)
            batch.del(meta::Cf::extents, cur.key());
    if (auto st = cur.status(); !st)
        return st;
    for (std::uint64_t b = sb.bucket_count; b < next.bucket_count; ++b)
        batch.put(meta::Cf::buckets, meta::bucket_key(static_cast<std::uint32_t>(b)),
                  meta::encode(meta::BucketRecord{}));
    batch.put(meta::Cf::meta, meta::kSuperblockKey, meta::encode(next));
    if (auto r = ms.write(batch, true); !r)
        return r;
    sb = next;
    return write_header(data_fd, DataHeader{sb.uuid, sb.bucket_size, sb.bucket_count});
}

Result<void> shrink(meta::MetaStore& ms, int data_fd, const std::string& data_path,
                    meta::Superblock& sb, std::uint64_t size, ResizeOutcome& out) {
    const std::uint64_t keep = size / sb.bucket_size - 1;
    auto buckets = load_buckets(ms, sb.bucket_count);
    if (!buckets)
        return fail(buckets.error());

    auto batch = ms.batch();
    std::vector<Move> moves, clean;
    std::uint64_t dirty_bytes = 0;
    auto cur = ms.cursor(meta::Cf::extents);
    meta::ExtentValue v;
    for (cur.seek_to_first(); cur.valid(); cur.next()) {
        meta::ExtentKey k;
        if (!meta::decode_extent_key(cur.key(), k) || !meta::decode_extent(cur.value(), v))
            continue; // damaged: no bucket to judge it by; it reads as a miss anyway
        if (v.bucket < keep)
            continue;
        const bool current = v.bucket < sb.bucket_count && (*buckets)[v.bucket].rec.gen == v.gen;
        // One whose place makes no sense: dirty, it is not dropped on our
        // own authority (the only copy of its bytes); clean, it is a miss.
        const bool sane = v.len != 0 && v.len <= k.end &&
                          std::uint64_t{v.bucket_off} + v.len <= sb.bucket_size &&
                          v.csums.size() == meta::csum_block_count(k.end - v.len, v.len);
        if (current && (v.flags & meta::kExtentDirty) != 0) {
            if (!sane)
                return fail(Errc::MetaCorrupt,
                            "a dirty extent in bucket " + std::to_string(v.bucket) +
                                " is damaged in the index; nothing was changed (mount the cache "
                                "and run `overcache flush MOUNTPOINT`, then resize)");
            moves.push_back(Move{std::string(cur.key()), k.end - v.len, v, {}});
            dirty_bytes += v.len;
        } else if (current && sane) {
            clean.push_back(Move{std::string(cur.key()), k.end - v.len, v, {}});
        } else {
            if (current)
                out.dropped_clean_bytes += v.len;
            batch.del(meta::Cf::extents, cur.key());
        }
    }
    if (auto st = cur.status(); !st)
        return st;

    // Placement in free buckets below the cut, each taken at a gen one past
    // its record's: no entry, stale or not, can match it.
    std::vector<std::uint32_t> targets;
    std::uint64_t placed_in = 0; // bytes used of the last target
    std::uint64_t free_below = 0;
    for (std::uint64_t b = 0; b < keep; ++b)
        free_below += !(*buckets)[b].damaged && (*buckets)[b].rec.state == meta::BucketState::free;
    // Places `m` unless that needs more than `max_targets` buckets.
    const auto place = [&](Move& m, std::uint64_t max_targets) {
        if (targets.empty() || placed_in + m.from.len > sb.bucket_size) {
            if (targets.size() >= max_targets)
                return false;
            std::uint32_t b = targets.empty() ? 0 : targets.back() + 1;
            while (b < keep &&
                   ((*buckets)[b].damaged || (*buckets)[b].rec.state != meta::BucketState::free))
                ++b;
            if (b >= keep)
                return false;
            targets.push_back(b);
            auto& rec = (*buckets)[b].rec;
            rec = meta::BucketRecord{rec.gen + 1, meta::BucketState::full, 0, 0, 0, rec.last_use};
            placed_in = 0;
        }
        const std::uint32_t b = targets.back();
        m.to = m.from;
        m.to.bucket = b;
        m.to.gen = (*buckets)[b].rec.gen;
        m.to.bucket_off = static_cast<std::uint32_t>(placed_in);
        placed_in = (placed_in + m.from.len + kAlign - 1) / kAlign * kAlign;
        auto& rec = (*buckets)[b].rec;
        rec.fill_bytes =
            static_cast<std::uint32_t>(std::min<std::uint64_t>(placed_in, sb.bucket_size));
        rec.live_bytes += m.from.len;
        if ((m.from.flags & meta::kExtentDirty) != 0)
            rec.dirty_bytes += m.from.len;
        if ((m.from.flags & meta::kExtentPinned) != 0) // kept with it (m.to = m.from)
            rec.pinned_bytes += m.from.len;
        rec.last_use = std::max(rec.last_use, (*buckets)[m.from.bucket].rec.last_use);
        return true;
    };
    for (auto& m : moves)
        if (!place(m, UINT64_MAX))
            return fail(Errc::CacheFull,
                        "the cache holds " + size_text(dirty_bytes) +
                            " of dirty data (writes its backing does not have yet) in the "
                            "buckets past " +
                            size_text(size) +
                            ", more than the free buckets below it can take; mount it and "
                            "run `overcache flush MOUNTPOINT` to write them back first, or "
                            "choose a larger size");
    // Clean data while it fits, the most recently used buckets first (a
    // bucket's extents stay in index order, so a file's stay together).
    std::stable_sort(clean.begin(), clean.end(), [&buckets](const Move& a, const Move& b) {
        return (*buckets)[a.from.bucket].rec.last_use > (*buckets)[b.from.bucket].rec.last_use;
    });
    const std::uint64_t spare = std::max<std::uint64_t>(2, keep / 10);
    const std::uint64_t clean_targets = free_below > spare ? free_below - spare : 0;
    std::size_t kept = 0;
    for (; kept < clean.size(); ++kept)
        if (!place(clean[kept], clean_targets))
            break;
    for (std::size_t i = kept; i < clean.size(); ++i) {
        out.dropped_clean_bytes += clean[i].from.len;
        batch.del(meta::Cf::extents, clean[i].key);
    }
    clean.resize(kept);

    // Copy and verify; the copies land in buckets the index calls free
    // until the batch commits.
    std::vector<char> buf;
    const auto copy = [&](Move& m) -> Result<bool> {
        buf.resize(m.from.len);
        const std::uint64_t src =
            sb.data_offset + std::uint64_t{m.from.bucket} * sb.bucket_size + m.from.bucket_off;
        const std::uint64_t dst =
            sb.data_offset + std::uint64_t{m.to.bucket} * sb.bucket_size + m.to.bucket_off;
        const bool dirty = (m.from.flags & meta::kExtentDirty) != 0;
        if (::pread(data_fd, buf.data(), buf.size(), static_cast<off_t>(src)) !=
            static_cast<ssize_t>(buf.size())) {
            if (!dirty)
                return false;
            return fail_errno("cannot read dirty data from " + data_path);
        }
        if (!checksums_match(m.file_start, buf, m.from.csums)) {
            if (!dirty)
                return false;
            return fail(Errc::MetaCorrupt,
                        "dirty data in bucket " + std::to_string(m.from.bucket) + " of " +
                            data_path +
                            " fails its checksum (damaged on the cache device); nothing was "
                            "changed");
        }
        if (::pwrite(data_fd, buf.data(), buf.size(), static_cast<off_t>(dst)) !=
            static_cast<ssize_t>(buf.size()))
            return fail_errno("cannot write " + std::string(dirty ? "dirty" : "clean") +
                              " data to " + data_path);
        return true;
    };
    for (auto& m : moves) {
        if (auto r = copy(m); !r)
            return fail(r.error());
        out.moved_dirty_bytes += m.from.len;
    }
    for (auto& m : clean) {
        auto r = copy(m);
        if (!r)
            return fail(r.error());
        if (*r) {
            out.kept_clean_bytes += m.from.len;
            continue;
        }
        // Unreadable or damaged: a miss, as the mount would take it. Its
        // place stays counted in the target (dead space, reclaimed with it).
        auto& rec = (*buckets)[m.to.bucket].rec;
        rec.live_bytes -= m.from.len;
        if ((m.from.flags & meta::kExtentPinned) != 0)
            rec.pinned_bytes -= m.from.len;
        out.dropped_clean_bytes += m.from.len;
        batch.del(meta::Cf::extents, m.key);
        m.key.clear();
    }
    if (!moves.empty() || !clean.empty())
        if (auto r = sync_fd(data_fd, data_path); !r)
            return r;

    meta::Superblock next = sb;
    next.bucket_count = keep;
    next.cache_size = size;
    for (const auto& m : moves)
        batch.put(meta::Cf::extents, m.key, meta::encode(m.to));
    for (const auto& m : clean)
        if (!m.key.empty())
            batch.put(meta::Cf::extents, m.key, meta::encode(m.to));
    for (auto b : targets)
        batch.put(meta::Cf::buckets, meta::bucket_key(b), meta::encode((*buckets)[b].rec));
    batch.del_range(meta::Cf::buckets, meta::bucket_key(static_cast<std::uint32_t>(keep)),
                    meta::bucket_key(static_cast<std::uint32_t>(sb.bucket_count)));
    batch.put(meta::Cf::meta, meta::kSuperblockKey, meta::encode(next));
    if (auto r = ms.write(batch, true); !r)
        return r;
    sb = next;
    if (auto r = write_header(data_fd, DataHeader{sb.uuid, sb.bucket_size, sb.bucket_count}); !r)
        return r;
    // Last: the index no longer points past the new end.
    if (is_regular(data_fd) && ::ftruncate(data_fd, static_cast<off_t>(size)) != 0)
        return fail_errno("cannot truncate the cache data file " + data_path);
    return {};
}

} // namespace

Result<std::uint64_t> usable_cache_size(std::uint64_t new_size, std::uint64_t bucket_size) {
    const std::uint64_t size = new_size - new_size % bucket_size;
    if (size < 3 * bucket_size)
        return fail(Errc::BadValue, "cache_size " + size_text(new_size) +
                                        " is too small for this cache's bucket_size " +
                                        size_text(bucket_size) +
                                        " (3 buckets at least: " + size_text(3 * bucket_size) +
                                        "; bucket_size is fixed at format)");
    if (const std::uint64_t buckets = size / bucket_size - 1; buckets > UINT32_MAX)
        return fail(Errc::BadValue,
                    "cache_size " + size_text(new_size) + " makes " + std::to_string(buckets) +
                        " buckets of " + size_text(bucket_size) + ", more than the limit of " +
                        std::to_string(UINT32_MAX) + " (bucket_size is fixed at format)");
    return size;
}

Result<ResizeOutcome> resize_cache(meta::MetaStore& ms, int data_fd, const std::string& data_path,
                                   meta::Superblock& sb, std::uint64_t new_size) {
    auto size = usable_cache_size(new_size, sb.bucket_size);
    if (!size)
        return fail(size.error());
    ResizeOutcome out{sb.cache_size, *size, 0, 0};
    if (*size == sb.cache_size)
        return out;
    auto r = *size > sb.cache_size ? grow(ms, data_fd, data_path, sb, *size)
                                   : shrink(ms, data_fd, data_path, sb, *size, out);
    if (!r)
        return fail(r.error());
    return out;
}

} // namespace overcache::store

namespace overcache::store {

Result<ResizeOutcome> resize_cache_dir(const std::string& dir, std::uint64_t new_size) {
    const std::string index_dir = dir + "/index";
    if (!meta::MetaStore::exists(index_dir))
        return fail(Errc::BadValue,
                    dir + " is not an overcache cache: it has no index (" + index_dir + ")");
    // A mounted cache resizes itself (it moves its own data while serving).
    const auto mounted = [&dir](pid_t pid) {
        return fail(Errc::Foreign,
                    "the cache at " + dir + " is in use by a mount" +
                        (pid > 0 ? " (process " + std::to_string(pid) + ")" : "") +
                        "; resize a mounted cache with `overcache set MOUNTPOINT cache_size "
                        "SIZE` instead");
    };
    if (const pid_t pid = lock_holder(index_dir); pid != 0)
        return mounted(pid);
    auto ms = meta::MetaStore::open(index_dir, meta::StoreOptions{});
    if (!ms) {
        if (ms.error().code == Errc::Sys) // the LOCK taken between the check and the open
            return mounted(lock_holder(index_dir));
        return fail(Errc::MetaCorrupt, "cannot open the cache at " + dir + " (" +
                                           ms.error().message +
                                           "); an older format is replaced by mounting it");
    }
    auto v = (*ms)->get(meta::Cf::meta, meta::kSuperblockKey);
    if (!v)
        return fail(v.error());
    meta::Superblock sb;
    if (const std::string damage = superblock_damage(dir, *v, sb); !damage.empty())
        return fail(Errc::MetaCorrupt, damage);
    const std::string data = dir + "/data";
    UniqueFd fd(::open(data.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd)
        return fail_errno("cannot open " + data +
                          " (a cache on a cache_dev= device is resized by mounting it with "
                          "-o cache_size=)");
    auto damage = data_header_damage(fd.get(), data, sb);
    if (!damage)
        return fail(damage.error());
    if (!damage->empty())
        return fail(Errc::MetaCorrupt, "the cache at " + dir + " is damaged: " + *damage);
    return resize_cache(**ms, fd.get(), data, sb, new_size);
}

int cache_in_use_by(const std::string& dir) {
    return lock_holder(dir + "/index");
}

Result<std::optional<std::uint64_t>> cache_dirty_bytes(const std::string& dir) {
    const std::string index_dir = dir + "/index";
    if (!meta::MetaStore::exists(index_dir))
        return std::optional<std::uint64_t>{};
    std::uint64_t dirty = 0;
    auto r = meta::MetaStore::peek_each(index_dir, meta::Cf::buckets,
                                        [&](std::string_view, std::string_view value) {
                                            if (auto b = meta::decode_bucket(value))
                                                dirty += b->dirty_bytes;
                                            return true;
                                        });
    if (!r)
        return fail(r.error());
    return std::optional<std::uint64_t>{dirty};
}

} // namespace overcache::store
