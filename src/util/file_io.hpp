// Whole-buffer positional I/O: loops over short transfers and EINTR so the
// callers (backing reads, cache device reads, backing writes) see one result.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <sys/types.h>
#include <unistd.h>

namespace overcache {

// Reads up to `len` bytes at `off`; fewer only at end of file or when an
// error follows some progress. -errno when nothing could be read.
inline ssize_t pread_upto(int fd, char* out, std::size_t len, std::uint64_t off) noexcept {
    std::size_t done = 0;
    while (done < len) {
        const ssize_t n = ::pread(fd, out + done, len - done, static_cast<off_t>(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return done > 0 ? static_cast<ssize_t>(done) : -errno;
        if (n == 0)
            break;
        done += static_cast<std::size_t>(n);
    }
    return static_cast<ssize_t>(done);
}

// Writes `len` bytes at `off`; fewer only when an error follows some
// progress. -errno when nothing could be written.
inline ssize_t pwrite_upto(int fd, const char* data, std::size_t len, std::uint64_t off) noexcept {
    std::size_t done = 0;
    while (done < len) {
        const ssize_t n = ::pwrite(fd, data + done, len - done, static_cast<off_t>(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return done > 0 ? static_cast<ssize_t>(done) : -errno;
        if (n == 0)
            break;
        done += static_cast<std::size_t>(n);
    }
    return static_cast<ssize_t>(done);
}

} // namespace overcache
