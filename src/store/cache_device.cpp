// DOC: opening and formatting the cache device. The superblock lives in the
// index (Cf::meta "superblock"), where it changes atomically with the rest of
// the metadata; the data device carries a 4 KiB header with the same magic
// and uuid in its first bucket, so an index paired with someone else's data
// file, or a cache_dev that holds something else, is detected rather than
// overwritten. Bucket 0 starts at data_offset = bucket_size. Nothing is
// written to an existing cache unless it validates or -o reformat is given
// (a valid one given another cache_size= is resized: store/resize.cpp);
// a fresh cache writes the index superblock (synced) before the data header.
// One exception: a cache of an older format this code knows (1 or 2) holds
// only clean data, so after a package upgrade it is dropped with one warning
// and reformatted rather than refused; a newer, unknown version is refused.
// Format 3 stores backing paths and handles, so the cache is its owner's
// alone whatever the umask: a cache directory we create is 0700, the index
// directory 0700 with 0600 files (MetaStore::open), a data file 0600.
#include "overcache/store/cache_device.hpp"

#include "data_header.hpp"
#include "overcache/meta/key_codec.hpp"
#include "overcache/store/resize.hpp"
#include "util/file_io.hpp"
#include "util/log.hpp"
#include "util/size_text.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/fs.h>
#include <optional>
#include <random>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <thread>
#include <unistd.h>

namespace overcache::store {

// Only I/O that completed is timed: a failure says nothing of the
// device's speed (and is counted against the error budget instead).
Result<void> CacheDevice::read(std::uint64_t dev_off, std::size_t len, char* out) const {
    const auto t0 = LatencyEstimator::Clock::now();
    if (auto r = file_.read(dev_off, len, out); !r)
        return fail(Error{Errc::CacheIo, r.error().sys_errno, "cache device read"});
    const auto t1 = LatencyEstimator::Clock::now();
    read_latency_.record(t1 - t0, len, t1);
    return {};
}

Result<void> CacheDevice::write(std::uint64_t dev_off, const char* data, std::size_t len) {
    const auto t0 = LatencyEstimator::Clock::now();
    if (auto r = file_.write(dev_off, data, len); !r)
        return fail(Error{Errc::CacheIo, r.error().sys_errno, "cache device write"});
    const auto t1 = LatencyEstimator::Clock::now();
    write_latency_.record(t1 - t0, len, t1);
    return {};
}

Result<void> CacheDevice::adopt_data() {
    struct stat st {};
    if (::fstat(data_.get(), &st) != 0)
        return fail_errno("cannot stat " + data_path_);
    cache_size_.store(sb_.cache_size, std::memory_order_release);
    resize_fd_ = UniqueFd(::fcntl(data_.get(), F_DUPFD_CLOEXEC, 0));
    if (!resize_fd_)
        return fail_errno("cannot dup the cache data fd");
    if (S_ISREG(st.st_mode)) {
        UniqueFd dup(::fcntl(data_.get(), F_DUPFD_CLOEXEC, 0));
        if (!dup)
            return fail_errno("cannot dup the cache data fd");
        space_ = std::make_unique<FileSpace>(std::move(dup), sb_.data_offset, sb_.bucket_size,
                                             min_free_bytes_);
    }
    auto f = DataFile::adopt(std::move(data_));
    if (!f)
        return fail(f.error());
    file_ = std::move(*f);
    return {};
}

meta::Superblock CacheDevice::superblock_for(std::uint64_t size) const {
    meta::Superblock next = sb_;
    next.bucket_count = size / sb_.bucket_size - 1;
    next.cache_size = size;
    return next;
}

Result<void> CacheDevice::prepare_grow(std::uint64_t size) {
    if (auto r = check_resize_room(resize_fd_.get(), data_path_, size); !r)
        return r;
    struct stat st {};
    if (::fstat(resize_fd_.get(), &st) != 0)
        return fail_errno("cannot stat " + data_path_);
    if (!S_ISREG(st.st_mode))
        return {};
    // Sparse: the new buckets get their space when first used (FileSpace).
    if (static_cast<std::uint64_t>(st.st_size) < size &&
        ::ftruncate(resize_fd_.get(), static_cast<off_t>(size)) != 0)
        return fail_errno("cannot extend the cache data file " + data_path_);
    if (::fsync(resize_fd_.get()) != 0)
        return fail_errno("cannot sync " + data_path_);
    return {};
}

Result<void> CacheDevice::write_header(std::uint64_t size) {
    // Through the DataFile: it may be O_DIRECT, which wants aligned buffers.
    const std::string hdr =
        encode_header(DataHeader{sb_.uuid, sb_.bucket_size, size / sb_.bucket_size - 1});
    if (auto r = file_.write(0, hdr.data(), hdr.size()); !r)
        return fail(Error{r.error().code, r.error().sys_errno,
                          "cannot write the cache data header: " + r.error().message});
    if (auto r = file_.sync(); !r)
        return fail(Error{r.error().code, r.error().sys_errno,
                          "cannot sync the cache data header: " + r.error().message});
    return {};
}

Result<void> CacheDevice::trim(std::uint64_t size) {
    struct stat st {};
    if (::fstat(resize_fd_.get(), &st) != 0)
        return fail_errno("cannot stat " + data_path_);
    if (S_ISREG(st.st_mode) && ::ftruncate(resize_fd_.get(), static_cast<off_t>(size)) != 0)
        return fail_errno("cannot truncate the cache data file " + data_path_);
    return {};
}

namespace {

constexpr std::uint64_t kMiB = 1u << 20;
constexpr std::uint64_t kGiB = kMiB << 10;
// Creates the missing directories of `path`, each 0700 whatever the umask.
// Existing ones keep their mode: a cache= directory the user made 0755 is
// theirs, and what matters inside it (index/, data) is private anyway.
Result<void> mkdirs(const std::string& path) {
    std::string cur;
    for (std::size_t i = 0; i <= path.size(); ++i) {
        if (i == path.size() || (path[i] == '/' && i > 0)) {
            cur = path.substr(0, i);
            if (::mkdir(cur.c_str(), 0700) == 0) {
                if (::chmod(cur.c_str(), 0700) != 0) // the umask may have taken the owner's bits
                    return fail_errno("cannot set the mode of " + cur);
            } else if (errno != EEXIST) {
                return fail_errno("cannot create " + cur);
            }
        }
    }
    return {};
}

// A data file (not a block device, whose node is the administrator's) is
// 0600: exactly, when we have just created it; otherwise group and others
// lose their bits.
Result<void> make_data_private(int fd, const std::string& path, bool created, struct stat& st) {
    if (!S_ISREG(st.st_mode))
        return {};
    const mode_t mode = st.st_mode & 07777;
    if ((mode & 077) == 0 && (!created || mode == 0600))
        return {};
    const mode_t want = created ? 0600 : (mode & 0600);
    if (::fchmod(fd, want) != 0)
        return fail_errno("cannot make the cache data file " + path + " private (mode " +
                          std::to_string(want) + ")");
    st.st_mode = (st.st_mode & ~mode_t{07777}) | want;
    return {};
}

std::string reformat_hint(const DeviceConfig& cfg) {
    return "; mount with -o reformat to erase " + cfg.dir + " and start an empty cache";
}

std::string data_path(const DeviceConfig& cfg) {
    return cfg.dev.empty() ? cfg.dir + "/data" : cfg.dev;
}

Result<std::uint64_t> device_size(int fd, const struct stat& st) {
    if (S_ISBLK(st.st_mode)) {
        std::uint64_t sz = 0;
        if (::ioctl(fd, BLKGETSIZE64, &sz) != 0)
            return fail_errno("cannot get the size of the cache device");
        return sz;
    }
    return static_cast<std::uint64_t>(st.st_size);
}

std::array<std::uint8_t, 16> new_uuid() {
    std::random_device rd;
    std::array<std::uint8_t, 16> u{};
    for (auto& b : u)
        b = static_cast<std::uint8_t>(rd());
    u[6] = static_cast<std::uint8_t>((u[6] & 0x0f) | 0x40); // RFC 4122 version 4
    u[8] = static_cast<std::uint8_t>((u[8] & 0x3f) | 0x80);
    return u;
}

bool same_backing(const meta::Superblock& sb, const BackingIdentity& b) {
    return sb.backing_path == b.path && sb.backing_fsid == b.fsid &&
           sb.backing_root_ino == b.root_ino;
}

std::string unknown_version(const DeviceConfig& cfg, std::uint32_t version) {
    return "the cache at " + cfg.dir + " has an unknown format version " + std::to_string(version) +
           " (this overcache reads version " + std::to_string(meta::kFormatVersion) +
           " and older; a newer overcache made it, or it is damaged)";
}

// Whether an older format `sb` (SbDecode::old_version) may be replaced: only
// when it is this backing's cache.
Result<void> check_old_backing(const DeviceConfig& cfg, const meta::Superblock& sb) {
    if (same_backing(sb, cfg.backing))
        return {};
    return fail(Errc::Foreign, "the cache at " + cfg.dir + " (format " +
                                   std::to_string(sb.version) + ") belongs to another backing (" +
                                   sb.backing_path + ", root inode " +
                                   std::to_string(sb.backing_root_ino) + "), not " +
                                   cfg.backing.path + reformat_hint(cfg));
}

// The index at `index_dir` did not open as format 3 (`why`). Returns the
// superblock of an older format of this backing, which the caller replaces;
// anything else is refused, as damaged or as a version we do not know.
Result<meta::Superblock> other_format(const DeviceConfig& cfg, const std::string& index_dir,
                                      const Error& why) {
    auto damaged = [&] {
        return fail(Errc::MetaCorrupt, "the cache at " + cfg.dir + " is damaged (" + why.message +
                                           ")" + reformat_hint(cfg));
    };
    auto v = meta::MetaStore::peek(index_dir, meta::Cf::meta, meta::kSuperblockKey);
    if (!v || !v->has_value())
        return damaged();
    meta::Superblock sb;
    switch (meta::decode_superblock(**v, sb)) {
    case meta::SbDecode::old_version:
        if (auto r = check_old_backing(cfg, sb); !r)
            return fail(r.error());
        return sb;
    case meta::SbDecode::bad_version:
        return fail(Errc::Foreign, unknown_version(cfg, sb.version) + reformat_hint(cfg));
    case meta::SbDecode::ok:
    case meta::SbDecode::bad_magic:
    case meta::SbDecode::truncated:
        break;
    }
    return damaged();
}

// Checks an existing cache; returns the reason it cannot be used, or empty.
// An older format of this backing sets `old` (its superblock) and returns
// empty: the caller replaces it.
Result<std::string> validate(const DeviceConfig& cfg, meta::MetaStore& ms, int data_fd,
                             meta::Superblock& sb, Errc& code,
                             std::optional<meta::Superblock>& old) {
    auto v = ms.get(meta::Cf::meta, meta::kSuperblockKey);
    if (!v) {
        code = Errc::MetaCorrupt;
        return "the cache at " + cfg.dir + " is damaged (" + v.error().message + ")";
    }
    if (!v->has_value()) {
        code = Errc::MetaCorrupt;
        return "the cache at " + cfg.dir + " is damaged: its index has no superblock";
    }
    switch (meta::decode_superblock(**v, sb)) {
    case meta::SbDecode::ok:
        break;
    case meta::SbDecode::old_version:
        if (auto r = check_old_backing(cfg, sb); !r)
            return fail(r.error());
        old = sb;
        return std::string{};
    case meta::SbDecode::bad_version:
        code = Errc::Foreign;
        return unknown_version(cfg, sb.version);
    case meta::SbDecode::bad_magic:
    case meta::SbDecode::truncated:
        code = Errc::MetaCorrupt;
        return "the cache at " + cfg.dir + " is damaged: its superblock does not decode";
    }
    const auto& b = cfg.backing;
    if (sb.backing_path.empty() && sb.backing_fsid == 0 && sb.backing_root_ino == 0 &&
        meta::superblock_problem(sb).empty()) {
        // Made by `overcache format` without a backing: the first mount over
        // it makes it that backing's cache.
        sb.backing_path = b.path;
        sb.backing_fsid = b.fsid;
        sb.backing_root_ino = b.root_ino;
        auto batch = ms.batch();
        batch.put(meta::Cf::meta, meta::kSuperblockKey, meta::encode(sb));
        if (auto r = ms.write(batch, true); !r)
            return fail(r.error());
        log::info("cache at ", cfg.dir, ": now the cache of ", b.path);
    }
    if (!same_backing(sb, b)) {
        code = Errc::Foreign;
        return "the cache at " + cfg.dir + " belongs to another backing (" + sb.backing_path +
               ", root inode " + std::to_string(sb.backing_root_ino) + "), not " + b.path;
    }
    if (const std::string problem = meta::superblock_problem(sb); !problem.empty()) {
        code = Errc::MetaCorrupt;
        return "the cache at " + cfg.dir + " is damaged: its superblock's " + problem;
    }
    if (sb.bucket_size != cfg.bucket_size) {
        code = Errc::Foreign;
        return "the cache at " + cfg.dir +
               " was formatted with bucket_size=" + size_text(sb.bucket_size) + ", not " +
               size_text(cfg.bucket_size) +
               " (bucket_size is fixed when a cache is formatted; cache_size can change)";
    }
    // Another cache_size= is not a problem: open_cache_device resizes.
    auto hdr = read_header(data_fd);
    if (!hdr)
        return fail(hdr.error());
    DataHeader h;
    if (decode_header(*hdr, h) != HeaderState::ours || h.uuid != sb.uuid ||
        h.bucket_size != sb.bucket_size) {
        code = Errc::MetaCorrupt;
        return "the cache at " + cfg.dir + " is damaged: the data device " + data_path(cfg) +
               " does not carry this index's superblock";
    }
    struct stat st {};
    if (::fstat(data_fd, &st) != 0)
        return fail_errno("cannot stat " + data_path(cfg));
    auto size = device_size(data_fd, st);
    if (!size)
        return fail(size.error());
    if (*size < sb.data_offset + sb.bucket_count * sb.bucket_size) {
        code = Errc::MetaCorrupt;
        return "the cache at " + cfg.dir +
               " is damaged: the data device is shorter than its "
               "superblock says";
    }
    if (h.bucket_count != sb.bucket_count) {
        // A resize stopped between its index batch and the header rewrite:
        // the index is the authority, the header only a copy.
        log::warn("cache at ", cfg.dir, ": the data header says ", h.bucket_count,
                  " buckets, the index ", sb.bucket_count, " (an interrupted resize); repaired");
        if (auto r = write_header(data_fd, DataHeader{sb.uuid, sb.bucket_size, sb.bucket_count});
            !r)
            return fail(r.error());
    }
    return std::string{};
}

Result<void> format(const DeviceConfig& cfg, meta::MetaStore& ms, int data_fd,
                    const struct stat& st, meta::Superblock& sb) {
    std::uint64_t size = cfg.cache_size;
    if (S_ISBLK(st.st_mode)) {
        auto dsz = device_size(data_fd, st);
        if (!dsz)
            return fail(dsz.error());
        if (size == 0 || size > *dsz)
            size = *dsz;
    } else if (size == 0) {
        auto d = default_cache_size(cfg.dir, cfg.bucket_size);
        if (!d)
            return fail(d.error());
        size = *d;
    }
    size -= size % cfg.bucket_size;
    if (size < 3 * cfg.bucket_size)
        return fail(Errc::BadValue, "cache_size " + size_text(size) +
                                        " is too small for bucket_size " +
                                        size_text(cfg.bucket_size) + " (3 buckets at least)");
    // Buckets are numbered in 32 bits (keys, extents, the allocator).
    if (const std::uint64_t buckets = size / cfg.bucket_size - 1; buckets > UINT32_MAX)
        return fail(Errc::BadValue,
                    "cache_size " + size_text(size) + " with bucket_size " +
                        size_text(cfg.bucket_size) + " makes " + std::to_string(buckets) +
                        " buckets, more than the limit of " + std::to_string(UINT32_MAX) +
                        "; give a larger bucket_size= or a smaller cache_size=");
    if (!S_ISBLK(st.st_mode)) {
        // The file is sparse and grows bucket by bucket (FileSpace), so free
        // space now says little; a file larger than its whole filesystem can
        // never be filled, though, and is a mistake.
        struct statvfs vfs {};
        if (::fstatvfs(data_fd, &vfs) == 0) {
            const std::uint64_t fs_size = static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize;
            if (size > fs_size)
                return fail(Errc::BadValue,
                            "cache_size " + size_text(size) +
                                " is larger than the filesystem holding " + data_path(cfg) + " (" +
                                size_text(fs_size) +
                                "); give a smaller cache_size= or another cache=");
        }
        // Exactly cache_size bytes long, none of them allocated: a bucket
        // gets its blocks when it is first used, so the cache never grows
        // past its size and a failed mount leaves nothing behind but the
        // header and the index. (Truncating to 0 first gives back the blocks
        // of a reformatted cache.)
        if (::ftruncate(data_fd, 0) != 0 || ::ftruncate(data_fd, static_cast<off_t>(size)) != 0)
            return fail_errno("cannot size the cache data file " + data_path(cfg));
    }
    sb = meta::Superblock{};
    sb.uuid = new_uuid();
    sb.bucket_size = cfg.bucket_size;
    sb.data_offset = cfg.bucket_size; // bucket-aligned; the header fills the first slot
    sb.bucket_count = size / cfg.bucket_size - 1;
    sb.cache_size = size;
    sb.backing_path = cfg.backing.path;
    sb.backing_fsid = cfg.backing.fsid;
    sb.backing_root_ino = cfg.backing.root_ino;

    auto b = ms.batch();
    b.put(meta::Cf::meta, meta::kSuperblockKey, meta::encode(sb));
    std::string next;
    meta::put_be64(next, 1);
    b.put(meta::Cf::meta, meta::kNextFileIdKey, next);
    if (auto r = ms.write(b, true); !r)
        return r;
    if (auto r = write_header(data_fd, DataHeader{sb.uuid, sb.bucket_size, sb.bucket_count}); !r)
        return r;
    log::info("formatted cache ", cfg.dir, ": cache_size=", size_text(size), " in ",
              sb.bucket_count, " buckets of ", size_text(sb.bucket_size),
              S_ISBLK(st.st_mode) ? "" : ", allocated as data is cached");
    return {};
}

// A mount given another cache_size= than the cache has resizes it (whole
// buckets; bucket_size is fixed at format).
Result<void> resize_to_config(const DeviceConfig& cfg, meta::MetaStore& ms, int data_fd,
                              meta::Superblock& sb) {
    if (cfg.cache_size == 0 || cfg.cache_size - cfg.cache_size % sb.bucket_size == sb.cache_size)
        return {};
    const std::uint64_t old_size = sb.cache_size;
    auto r = resize_cache(ms, data_fd, data_path(cfg), sb, cfg.cache_size);
    if (!r)
        return fail(Error{r.error().code, r.error().sys_errno,
                          "cannot resize the cache at " + cfg.dir + " from " + size_text(old_size) +
                              ": " + r.error().message});
    log::info("cache at ", cfg.dir, ": cache_size ", size_text(old_size), " -> ",
              size_text(sb.cache_size),
              r->moved_dirty_bytes
                  ? " (" + size_text(r->moved_dirty_bytes) + " of dirty data moved)"
                  : std::string{},
              r->kept_clean_bytes
                  ? " (" + size_text(r->kept_clean_bytes) + " of clean data moved)"
                  : std::string{},
              r->dropped_clean_bytes
                  ? " (" + size_text(r->dropped_clean_bytes) + " of clean data dropped)"
                  : std::string{});
    return {};
}

} // namespace

Result<std::uint64_t> default_cache_size(const std::string& dir, std::uint64_t bucket_size) {
    struct statvfs vfs {};
    if (::statvfs(dir.c_str(), &vfs) != 0)
        return fail_errno("cannot statvfs " + dir);
    const std::uint64_t fs_size = static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize;
    std::uint64_t size = std::clamp<std::uint64_t>(fs_size / 10, 64 * kMiB, 64 * kGiB);
    size = std::min(size, fs_size / 2);
    size -= size % bucket_size;
    if (size < 3 * bucket_size)
        return fail(Errc::CacheFull, "the filesystem holding " + dir +
                                         " is too small for a cache; give cache_size= or "
                                         "another cache=");
    return size;
}

namespace {

// How long a mount waits for another process to let go of the cache: an
// overcache daemon still closing it after its unmount returned.
constexpr auto kLockWait = std::chrono::seconds(15);

std::string command_line_of(pid_t pid) {
    std::string cmd;
    if (FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/cmdline").c_str(), "re")) {
        for (int c; (c = std::fgetc(f)) != EOF && cmd.size() < 200;)
            cmd += c == '\0' ? ' ' : static_cast<char>(c);
        std::fclose(f);
    }
    while (!cmd.empty() && cmd.back() == ' ')
        cmd.pop_back();
    return cmd;
}

// The index's LOCK is RocksDB's fcntl lock: while another process holds
// it, wait (it may be closing), then name it rather than pass on RocksDB's
// "lock file: Resource temporarily unavailable".
Result<void> wait_index_unlocked(const std::string& dir, const std::string& index_dir) {
    UniqueFd fd(::open((index_dir + "/LOCK").c_str(), O_RDWR | O_CLOEXEC));
    if (!fd)
        return {}; // no index yet, or none we could lock either: RocksDB says
    const auto until = std::chrono::steady_clock::now() + kLockWait;
    bool said = false;
    for (;;) {
        struct flock fl {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (::fcntl(fd.get(), F_GETLK, &fl) != 0 || fl.l_type == F_UNLCK)
            return {};
        if (std::chrono::steady_clock::now() >= until) {
            const std::string cmd = command_line_of(fl.l_pid);
            return fail(Errc::Foreign,
                        "the cache at " + dir + " is in use by process " +
                            std::to_string(fl.l_pid) + (cmd.empty() ? "" : " (" + cmd + ")") +
                            "; unmount the mount it serves, or give this one another cache=");
        }
        if (!said) {
            log::info("waiting for process ", fl.l_pid, " to close the cache at ", dir);
            said = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

} // namespace

Result<std::unique_ptr<CacheDevice>> open_cache_device(const DeviceConfig& cfg_in) {
    DeviceConfig cfg = cfg_in; // a cache of an older format keeps its size when replaced
    if (auto r = mkdirs(cfg.dir); !r)
        return fail(r.error());
    const std::string index_dir = cfg.dir + "/index";
    const std::string dpath = data_path(cfg);
    auto dev = std::unique_ptr<CacheDevice>(new CacheDevice());
    dev->min_free_bytes_ = cfg.min_free_bytes;

    const bool had_index = meta::MetaStore::exists(index_dir);
    if (had_index)
        if (auto r = wait_index_unlocked(cfg.dir, index_dir); !r)
            return fail(r.error());
    struct stat before {};
    const bool had_data = ::stat(dpath.c_str(), &before) == 0;
    int flags = O_RDWR | O_CLOEXEC;
    if (cfg.dev.empty())
        flags |= O_CREAT;
    dev->data_path_ = dpath;
    dev->data_ = UniqueFd(::open(dpath.c_str(), flags, 0600));
    if (!dev->data_)
        return fail_errno("cannot open the cache data device " + dpath);
    struct stat st {};
    if (::fstat(dev->data_.get(), &st) != 0)
        return fail_errno("cannot stat " + dpath);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return fail(Errc::BadValue, dpath + " is neither a regular file nor a block device");
    if (auto r = make_data_private(dev->data_.get(), dpath, !had_data, st); !r)
        return fail(r.error());

    bool must_format = cfg.reformat;
    if (cfg.reformat && had_index && !cfg.discard_dirty) {
        // Reformatting throws away everything, dirty data too: only when
        // asked for by name. An index that cannot be read holds nothing
        // that could be written back anyway.
        if (auto ms = meta::MetaStore::open(index_dir, cfg.store); ms) {
            std::uint64_t dirty = 0;
            auto cur = (*ms)->cursor(meta::Cf::buckets);
            for (cur.seek_to_first(); cur.valid(); cur.next())
                if (auto b = meta::decode_bucket(cur.value()))
                    dirty += b->dirty_bytes;
            if (dirty > 0)
                return fail(Errc::Foreign,
                            "the cache at " + cfg.dir + " holds " + size_text(dirty) +
                                " of dirty data (writes its backing does not have yet); "
                                "mount it over its backing and run `overcache flush MOUNTPOINT` "
                                "first, or add -o discard_dirty to reformat and lose them");
        } else if (ms.error().code == Errc::Sys) {
            return fail(Errc::Sys, "cannot open the cache at " + cfg.dir + " (" +
                                       ms.error().message + "); is it in use by another mount?");
        }
    }
    std::optional<meta::Superblock> old; // an older format of this backing, to replace
    if (!must_format && had_index) {
        auto ms = meta::MetaStore::open(index_dir, cfg.store);
        if (!ms && ms.error().code == Errc::Sys) // e.g. the LOCK of a mount still running
            return fail(Errc::Sys, "cannot open the cache at " + cfg.dir + " (" +
                                       ms.error().message + "); is it in use by another mount?");
        if (!ms) {
            // Another format has other column families: its superblock says
            // which format it is (read-only, nothing written).
            auto o = other_format(cfg, index_dir, ms.error());
            if (!o)
                return fail(o.error());
            old = std::move(*o);
        } else {
            Errc code = Errc::MetaCorrupt;
            auto why = validate(cfg, **ms, dev->data_.get(), dev->sb_, code, old);
            if (!why)
                return fail(why.error());
            if (!why->empty())
                return fail(code, *why + reformat_hint(cfg));
            if (!old) {
                if (auto r = resize_to_config(cfg, **ms, dev->data_.get(), dev->sb_); !r)
                    return fail(r.error());
                dev->meta_ = std::move(*ms);
                if (auto r = dev->adopt_data(); !r)
                    return fail(r.error());
                return dev;
            }
        }
    }
    if (old) {
        // Older formats hold clean data only: nothing is lost but hits.
        // MetaStore::destroy below takes the index's LOCK, so a mount still
        // using it is not pulled from under it.
        log::warn("the cache at ", cfg.dir, " has format ", old->version,
                  ", which this overcache does not read: its cached data is dropped and a new "
                  "format-",
                  meta::kFormatVersion, " cache is started");
        if (cfg.cache_size == 0 && S_ISREG(st.st_mode))
            cfg.cache_size = old->cache_size; // keep the size it was given
        must_format = true;
    }
    if (!must_format) {
        // No index. Only an empty data file (or an all-zero device start) may be
        // formatted without asking: anything else is someone's data or a
        // cache whose index is lost.
        auto hdr = read_header(dev->data_.get());
        if (!hdr)
            return fail(hdr.error());
        DataHeader h;
        const auto state = hdr->empty() ? HeaderState::zero : decode_header(*hdr, h);
        if (state == HeaderState::ours)
            return fail(Errc::MetaCorrupt, "the cache at " + cfg.dir +
                                               " is damaged: its index is missing" +
                                               reformat_hint(cfg));
        if (state == HeaderState::other)
            return fail(Errc::Foreign,
                        dpath + " holds data that is not an overcache cache" + reformat_hint(cfg));
    }
    if (auto r = meta::MetaStore::destroy(index_dir); !r)
        return fail(r.error());
    meta::StoreOptions so = cfg.store;
    so.create_if_missing = true;
    auto ms = meta::MetaStore::open(index_dir, so);
    if (!ms)
        return fail(ms.error());
    if (auto r = format(cfg, **ms, dev->data_.get(), st, dev->sb_); !r) {
        // Leave no half-made cache behind: a later mount must not mistake it
        // for a damaged one, and a new data file must not keep its space.
        ms->reset();
        (void)meta::MetaStore::destroy(index_dir);
        if (!had_data)
            (void)::unlink(dpath.c_str());
        return fail(r.error());
    }
    dev->meta_ = std::move(*ms);
    dev->formatted_now_ = true;
    if (auto r = dev->adopt_data(); !r)
        return fail(r.error());
    return dev;
}

} // namespace overcache::store
