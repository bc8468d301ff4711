// DOC: lazy allocation of a file-backed cache. format() only sizes the data
// file (ftruncate: sparse); the Allocator calls back() before it first hands
// out a bucket that has no space of its own, so a full filesystem shows as
// "no bucket available" (fills skip, writes behave as with a full cache),
// never as a failed write in the middle of an extent. fallocate on a range
// that already has its blocks changes nothing, so a bucket whose state is
// unknown is simply allocated again. room_for_fresh() keeps the filesystem's
// free space at cache_min_free or above; it reads statvfs at most once a
// second or every 4 MiB the file grew, and in between counts what it
// allocated and punched itself.
#include "overcache/store/file_space.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

namespace overcache::store {

FileSpace::FileSpace(UniqueFd fd, std::uint64_t data_offset, std::uint64_t bucket_size,
                     std::uint64_t min_free_bytes)
    : fd_(std::move(fd)), data_offset_(data_offset), bucket_size_(bucket_size),
      min_free_(min_free_bytes) {
    struct stat st {};
    if (::fstat(fd_.get(), &st) == 0)
        all_backed_ = static_cast<std::uint64_t>(st.st_blocks) * 512 >=
                      static_cast<std::uint64_t>(st.st_size);
    std::lock_guard lk(mu_);
    read_locked();
}

Result<void> FileSpace::back(std::uint32_t bucket) {
    const auto off = static_cast<off_t>(data_offset_ + std::uint64_t{bucket} * bucket_size_);
    if (::fallocate(fd_.get(), 0, off, static_cast<off_t>(bucket_size_)) != 0) {
        // A filesystem without fallocate allocates as data is written, as a
        // sparse file always did.
        if (const int err = errno; err != EOPNOTSUPP)
            return fail_sys(err, "cannot allocate bucket " + std::to_string(bucket) +
                                     " of the cache data file");
    }
    std::lock_guard lk(mu_);
    free_est_ -= static_cast<std::int64_t>(bucket_size_);
    backed_since_read_ += bucket_size_;
    return {};
}

Result<void> FileSpace::release(std::uint32_t bucket) {
    const auto off = static_cast<off_t>(data_offset_ + std::uint64_t{bucket} * bucket_size_);
    if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                    static_cast<off_t>(bucket_size_)) != 0) {
        const int err = errno;
        return fail_sys(err, "cannot give back the space of bucket " + std::to_string(bucket) +
                                 " of the cache data file");
    }
    std::lock_guard lk(mu_);
    free_est_ += static_cast<std::int64_t>(bucket_size_);
    return {};
}

void FileSpace::read_locked() {
    read_at_ = std::chrono::steady_clock::now();
    backed_since_read_ = 0;
    struct statvfs vfs {};
    if (::fstatvfs(fd_.get(), &vfs) != 0)
        return; // keep the estimate: better than guessing
    free_est_ = static_cast<std::int64_t>(static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize);
}

void FileSpace::refresh() {
    std::lock_guard lk(mu_);
    read_locked();
}

std::uint64_t FileSpace::free_bytes() {
    std::lock_guard lk(mu_);
    if (backed_since_read_ >= kReadEveryBytes ||
        std::chrono::steady_clock::now() - read_at_ >= kReadInterval)
        read_locked();
    return free_est_ > 0 ? static_cast<std::uint64_t>(free_est_) : 0;
}

bool FileSpace::room_for_fresh() {
    if (min_free_ == 0)
        return true;
    // A fresh bucket may not take the filesystem below the floor.
    return free_bytes() >= min_free_ + bucket_size_;
}

} // namespace overcache::store
