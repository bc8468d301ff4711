// FileSpace: where the buckets of a file-backed cache get their disk space.
// The data file is sparse at its full length; a bucket's bytes are allocated
// (fallocate) the first time the allocator hands it out, and given back
// (punched) by GC while the filesystem holding the cache runs short of free
// space (cache_min_free). A block device has no FileSpace: it is used whole.
#pragma once

#include "overcache/store/allocator.hpp"
#include "overcache/util/result.hpp"
#include "util/unique_fd.hpp"

#include <chrono>
#include <cstdint>
#include <mutex>

namespace overcache::store {

class FileSpace final : public BucketSpace {
public:
    // `fd` is the data file (a dup of it: any fd of the file will do); bucket
    // b's bytes are [data_offset + b * bucket_size, + bucket_size).
    // `min_free_bytes` 0: no free-space floor.
    FileSpace(UniqueFd fd, std::uint64_t data_offset, std::uint64_t bucket_size,
              std::uint64_t min_free_bytes);

    bool all_backed() const override { return all_backed_; }
    Result<void> back(std::uint32_t bucket) override;
    Result<void> release(std::uint32_t bucket) override;
    bool room_for_fresh() override;

    std::uint64_t min_free_bytes() const { return min_free_; }
    // The free bytes of the filesystem as last read (statvfs f_bavail *
    // f_frsize), minus what back() took and plus what release() gave since.
    // Re-read once kReadInterval has passed or kReadEveryBytes were backed
    // since the last reading (whichever comes first), so an allocation does
    // not statvfs, and a filesystem filling behind our back is seen within a
    // few buckets when the cache grows fast.
    std::uint64_t free_bytes();
    // Reads statvfs now (tests; after the filesystem changed behind us).
    void refresh();

    static constexpr std::chrono::milliseconds kReadInterval{1000};
    static constexpr std::uint64_t kReadEveryBytes = 4u << 20;

private:
    void read_locked(); // mu_ held

    const UniqueFd fd_;
    const std::uint64_t data_offset_;
    const std::uint64_t bucket_size_;
    const std::uint64_t min_free_;
    // The file's blocks cover its whole length: a cache preallocated by an
    // older overcache (or fully grown). Every bucket is backed.
    bool all_backed_ = false;
    std::mutex mu_;
    std::chrono::steady_clock::time_point read_at_; // guarded by mu_
    std::int64_t free_est_ = 0;                     // guarded by mu_
    std::uint64_t backed_since_read_ = 0;           // guarded by mu_
};

} // namespace overcache::store
