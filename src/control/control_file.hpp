// The control file's identity, shared by the adapter that serves it and the
// CLI that talks to it: its name in the mount's root, and the st_ino stat(2)
// reports for it, by which a client tells it from a file of that name that
// is not an overcache control file.
#pragma once

#include <cstddef>
#include <sys/types.h>

namespace overcache::control {

inline constexpr const char* kControlName = ".overcache";

// Far from where small filesystems hand out numbers, and still fits a 32-bit
// ino_t for old binaries.
inline constexpr ino_t kControlStIno = 0xFFFFFFF0u;

// The most a single write(2) to the control file may carry. The kernel
// hands a write(2) this size to the daemon as one request (it splits a
// direct-I/O write at its request size, at least 128 KiB less a page, or a
// writev(2) at its pieces past the request's page count), so a write the
// daemon accepts is whole; a larger one is refused, not run in pieces.
inline constexpr std::size_t kMaxControlWrite = 64u << 10;

} // namespace overcache::control
