// faultfs's fault settings: which operations fail with which errno, how
// long each call is held, and how fast data may flow. They come from a small
// text file outside the mount (the control file), one directive a line:
//
//   fail CLASSES ERRNO      e.g. `fail write,fsync EIO`, `fail all ESTALE`
//   delay CLASSES MS        each call of these classes first sleeps MS ms
//   throttle read|write N   at most N bytes/s (K, M, G suffixes; 0: no limit)
//   # a comment
//
// CLASSES is a comma-separated list of read, write, fsync, open (open for
// writing, create, mknod), truncate, meta (namespace and attribute changes),
// lookup (getattr, readdir, open for reading, xattr reads, ...) or all.
// ERRNO is a name (EIO, ENOSPC, EACCES, EROFS, ESTALE, ...) or a number.
// A later line overrides an earlier one for the classes it names.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace faultfs {

enum class OpClass { read, write, fsync, open, truncate, meta, lookup };
inline constexpr std::size_t kOpClasses = 7;

struct FaultConfig {
    std::array<int, kOpClasses> fail_errno{};    // 0: the call goes through
    std::array<unsigned, kOpClasses> delay_ms{}; // 0: no delay
    std::uint64_t read_bytes_per_s = 0;          // 0: unlimited
    std::uint64_t write_bytes_per_s = 0;

    int fails(OpClass c) const noexcept { return fail_errno[static_cast<std::size_t>(c)]; }
    unsigned delay(OpClass c) const noexcept { return delay_ms[static_cast<std::size_t>(c)]; }
};

// Parses the control file's text. Returns an empty string and fills `out`,
// or says what is wrong with which line (and leaves `out` alone).
std::string parse_fault_config(const std::string& text, FaultConfig& out);

// "EIO" -> EIO; a decimal number as itself; 0 when unknown.
int errno_from_name(const std::string& name);

} // namespace faultfs
