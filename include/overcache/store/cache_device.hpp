// The cache device: the data file (or block device) split into buckets, the
// RocksDB index beside it, and the superblock that ties them to one backing.
#pragma once

#include "overcache/meta/meta_store.hpp"
#include "overcache/store/data_file.hpp"
#include "overcache/store/file_space.hpp"
#include "overcache/store/latency_estimator.hpp"
#include "overcache/util/result.hpp"
#include "util/unique_fd.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace overcache::store {

// Who the cache belongs to. Compared at every mount.
struct BackingIdentity {
    std::string path;
    std::uint64_t fsid = 0; // statfs f_fsid of the backing root
    std::uint64_t root_ino = 0;
};

struct DeviceConfig {
    std::string dir;              // CACHE: holds `index/` and, by default, `data`
    std::string dev;              // data device; empty: DIR/data
    std::uint64_t cache_size = 0; // 0: the default size rule (default_cache_size)
    std::uint64_t bucket_size = 1u << 20;
    // A data file (not a block device) takes no new bucket that would leave
    // its filesystem with fewer free bytes than this; 0: no floor.
    std::uint64_t min_free_bytes = 0;
    meta::StoreOptions store;
    bool reformat = false;
    // reformat may throw away dirty data (writes the backing lacks); without
    // it, reformatting a cache that holds some is refused.
    bool discard_dirty = false;
    BackingIdentity backing;
};

class CacheDevice {
public:
    meta::MetaStore& meta() { return *meta_; }
    // The superblock as the cache was opened. Never changed afterwards, so
    // any thread may read it; a live resize changes the size, which is
    // cache_size() here and the Allocator's bucket_count().
    const meta::Superblock& superblock() const { return sb_; }
    // The cache's size now (bucket_count + 1 buckets: the first slot holds
    // the data header).
    std::uint64_t cache_size() const { return cache_size_.load(std::memory_order_acquire); }

    // Steps of a live resize (cache/live_resize.cpp), one resize at a time.
    // The superblock for `size` bytes (a whole number of buckets).
    meta::Superblock superblock_for(std::uint64_t size) const;
    // Before a grow's index batch: a data file is extended (sparse) to
    // `size` and synced; a block device must be that large. A size larger
    // than the device, or a data file larger than its filesystem, is
    // refused (Errc::BadValue) as offline resize refuses it.
    Result<void> prepare_grow(std::uint64_t size);
    // After the index batch: the data header carries `size`'s bucket count.
    Result<void> write_header(std::uint64_t size);
    // After a shrink's header: a data file is cut to `size`.
    Result<void> trim(std::uint64_t size);
    // The last step: cache_size() becomes `size`.
    void set_cache_size(std::uint64_t size) { cache_size_.store(size, std::memory_order_release); }
    // Bucket I/O on the data device; errors come back as Errc::CacheIo
    // carrying the errno (a short transfer is EIO).
    Result<void> read(std::uint64_t dev_off, std::size_t len, char* out) const;
    Result<void> write(std::uint64_t dev_off, const char* data, std::size_t len);
    // Makes every write so far durable (fdatasync of the data device).
    Result<void> sync() { return file_.sync(); }
    // The alignment of device offsets that writes must start at (the
    // allocator places every extent in blocks of its own).
    std::uint32_t block_size() const { return static_cast<std::uint32_t>(file_.block_size()); }
    // Whether the page cache is bypassed (O_DIRECT).
    bool direct_io() const { return file_.direct(); }
    // The data file or device (for tools and tests that look at it).
    const std::string& data_path() const { return data_path_; }
    DataFileStats io_stats() const { return file_.stats(); }
    // Smoothed latencies of the data reads and writes above (not syncs: an
    // fdatasync's cost is the device's cache flush, paid by writeback and
    // fsync, and says little of how long a read or a fill waits), in
    // microseconds; what congested_*_threshold_us are compared with.
    std::uint64_t read_latency_us() const { return read_latency_.estimate_us(); }
    std::uint64_t write_latency_us() const { return write_latency_.estimate_us(); }
    // Test seam: fail cache device I/O on demand.
    void set_fault(FaultHook hook) { file_.set_fault(std::move(hook)); }
    bool formatted_now() const { return formatted_now_; }
    // Where a data file's buckets get their space (it grows bucket by
    // bucket); null for a block device, which is used whole.
    BucketSpace* space() { return space_.get(); }
    FileSpace* file_space() { return space_.get(); }
    // Byte offset of `off` inside `bucket` on the data device.
    std::uint64_t device_offset(std::uint32_t bucket, std::uint32_t off) const {
        return sb_.data_offset + static_cast<std::uint64_t>(bucket) * sb_.bucket_size + off;
    }

private:
    friend Result<std::unique_ptr<CacheDevice>> open_cache_device(const DeviceConfig& cfg);
    // Hands the data fd over to file_ once the cache is validated or formatted.
    Result<void> adopt_data();
    std::unique_ptr<meta::MetaStore> meta_;
    UniqueFd data_; // while opening; file_ owns it afterwards
    DataFile file_;
    std::string data_path_;
    std::unique_ptr<FileSpace> space_;
    UniqueFd resize_fd_; // a dup of the data fd, for ftruncate and fsync
    std::uint64_t min_free_bytes_ = 0;
    meta::Superblock sb_;
    std::atomic<std::uint64_t> cache_size_{0};
    bool formatted_now_ = false;
    mutable LatencyEstimator read_latency_, write_latency_;
};

// Opens the cache at cfg.dir, formatting it when there is none. An existing
// cache that belongs to another backing, has a newer (unknown) format version
// or another bucket size, or is damaged is refused (Errc::Foreign or
// Errc::MetaCorrupt, the message says which and to use -o reformat) and left
// untouched, unless cfg.reformat. Another cfg.cache_size (non-zero) resizes
// the cache (store/resize.hpp), keeping its data; a size it cannot take is
// refused with the reason, the cache unchanged. A cache made by `overcache
// format` without a backing becomes cfg.backing's. A cache of this backing in an older format
// (1, 2: clean data only) is dropped with a warning and reformatted, keeping
// its cache_size unless cfg gives one; formatted_now() is then true.
// The cache is private to its owner whatever the umask: cfg.dir is created
// 0700 (an existing one keeps its mode), index/ is 0700 with 0600 files, and
// a data file is 0600 (an existing one loses group and other bits). A size
// of more than 2^32 - 1 buckets, or a data file larger than the filesystem
// holding it, is refused (Errc::BadValue). A new data file is made sparse
// (ftruncate): formatting writes only the index and the data header, and a
// bucket gets its blocks when first used (FileSpace).
Result<std::unique_ptr<CacheDevice>> open_cache_device(const DeviceConfig& cfg);

// The default size rule: 10% of the size of the filesystem holding `dir`,
// clamped to [64 MiB, 64 GiB] and never more than half that size, rounded
// down to whole buckets. The data file is sparse and grows as buckets are
// used, and cache_min_free keeps it from eating the last of the free space,
// so the cap is taken from the filesystem's size, not from what happens to
// be free at format time.
Result<std::uint64_t> default_cache_size(const std::string& dir, std::uint64_t bucket_size);

} // namespace overcache::store
