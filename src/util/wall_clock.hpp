// Times as signed nanoseconds since the epoch: a stat(2) timestamp, and the
// wall clock now (which backing timestamps are compared with: the
// backing's clock, or an NFS server's, may differ from it by some skew).
#pragma once

#include <cstdint>
#include <ctime>

namespace overcache {

inline std::int64_t ns_of(const struct timespec& t) noexcept {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

inline std::int64_t wall_ns() noexcept {
    struct timespec t {};
    ::clock_gettime(CLOCK_REALTIME, &t);
    return ns_of(t);
}

} // namespace overcache
