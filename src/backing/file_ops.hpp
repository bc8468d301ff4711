// Data calls on an open backing file, for the data paths: each returns a
// Result carrying the errno, loops over short transfers and EINTR where the
// call can be short, and knows nothing about the cache. On a request
// thread with a RequestScope (request_scope.hpp) they run through the
// gate: EIO when the backing does not answer in time (a write's bytes are
// copied for it).
#pragma once

#include "backing/backing_fs.hpp"
#include "overcache/util/result.hpp"

#include <cstdint>
#include <sys/stat.h>
#include <sys/types.h>

namespace overcache::backing {

Result<struct stat> fstat_file(int fd);
Result<std::size_t> write_all(int fd, const char* data, std::size_t len, std::uint64_t off);
Result<void> sync_file(int fd, bool datasync);

// Starts writing [off, off + len) of the file out to its disk without
// waiting for it, so that the disk works while the caller prepares more;
// a later sync_file waits for the rest. Best effort: a filesystem that
// cannot (or a pipe) just keeps the pages until then. Never gated (the
// writeback executor's).
void start_writeout(int fd, std::uint64_t off, std::uint64_t len);
// Waits until [off, off + len) is written out (what start_writeout began,
// or what the kernel began on its own). Its error is the one a sync_file
// after it would no longer report (the file's writeback error is taken
// once), so the caller must treat it as the sync's. A filesystem that
// cannot wait by range answers nothing here; its sync_file waits.
Result<void> wait_writeout(int fd, std::uint64_t off, std::uint64_t len);

// Sets the size of the file behind `fd`: an open, writable fd when
// `fd_is_open`, else an O_PATH handle (truncated through /proc).
Result<void> truncate_file(int fd, bool fd_is_open, std::uint64_t size);
Result<void> fallocate_file(int fd, int mode, off_t off, off_t len);
Result<std::size_t> copy_range(int in, off_t off_in, int out, off_t off_out, std::size_t len,
                               unsigned flags);
Result<off_t> seek(int fd, off_t off, int whence);

} // namespace overcache::backing
