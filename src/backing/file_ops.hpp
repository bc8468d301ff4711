// Data calls on an open backing file, for the data paths: each returns a
// Result carrying the errno, loops over short transfers and EINTR where the
// call can be short, and knows nothing about the cache.
#pragma once

#include "backing/backing_fs.hpp"
#include "overcache/util/result.hpp"
#include "util/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace overcache::backing {

inline Result<struct stat> fstat_file(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        return fail_errno();
    return st;
}

inline Result<std::size_t> write_all(int fd, const char* data, std::size_t len, std::uint64_t off) {
    const ssize_t n = pwrite_upto(fd, data, len, off);
    if (n < 0)
        return fail_sys(static_cast<int>(-n));
    return static_cast<std::size_t>(n);
}

inline Result<void> sync_file(int fd, bool datasync) {
    if ((datasync ? ::fdatasync(fd) : ::fsync(fd)) != 0)
        return fail_errno();
    return {};
}

// Starts writing [off, off + len) of the file out to its disk without
// waiting for it, so that the disk works while the caller prepares more;
// a later sync_file waits for the rest. Best effort: a filesystem that
// cannot (or a pipe) just keeps the pages until then.
inline void start_writeout(int fd, std::uint64_t off, std::uint64_t len) {
    (void)::sync_file_range(fd, static_cast<off64_t>(off), static_cast<off64_t>(len),
                            SYNC_FILE_RANGE_WRITE);
}

// Sets the size of the file behind `fd`: an open, writable fd when
// `fd_is_open`, else an O_PATH handle (truncated through /proc).
inline Result<void> truncate_file(int fd, bool fd_is_open, std::uint64_t size) {
    const int err = fd_is_open ? (::ftruncate(fd, static_cast<off_t>(size)) == 0 ? 0 : errno)
                               : truncate_path(fd, static_cast<off_t>(size));
    if (err != 0)
        return fail_sys(err);
    return {};
}

inline Result<void> fallocate_file(int fd, int mode, off_t off, off_t len) {
    if (::fallocate(fd, mode, off, len) != 0)
        return fail_errno();
    return {};
}

inline Result<std::size_t> copy_range(int in, off_t off_in, int out, off_t off_out,
                                      std::size_t len, unsigned flags) {
    loff_t from = off_in, to = off_out;
    const ssize_t n = ::copy_file_range(in, &from, out, &to, len, flags);
    if (n < 0)
        return fail_errno();
    return static_cast<std::size_t>(n);
}

inline Result<off_t> seek(int fd, off_t off, int whence) {
    const off_t r = ::lseek(fd, off, whence);
    if (r < 0)
        return fail_errno();
    return r;
}

} // namespace overcache::backing
