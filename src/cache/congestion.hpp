// The congestion bypass, as bcache's congested_read_threshold_us and
// congested_write_threshold_us: while the cache device's smoothed latency
// (store/latency_estimator.hpp) in a direction is above its threshold, I/O
// that would add to that direction's load goes to the backing instead.
//  - reads: hits are still served from the cache (the data is there, and a
//    hit is one device read where a bypass is a backing read); a miss is
//    read from the backing and not filled. A fill is a device write, so a
//    write-congested device bypasses misses too.
//  - writes: writethrough writes go around the cache (the range is punched,
//    as in writearound); writeback writes too, except over dirty data,
//    which must stay in the cache (write_path.cpp).
// 0 disables a direction. The estimate decays while the device is idle, so
// a device that everything bypassed is tried again (recovery).
#pragma once

#include "cache/cache_core.hpp"

namespace overcache::cache {

// The threshold is read first: a disabled direction costs no estimate.
inline bool read_congested(const CacheCore& core) noexcept {
    const unsigned t = core.p.congested_read_threshold_us;
    return t != 0 && core.dev->read_latency_us() > t;
}

inline bool write_congested(const CacheCore& core) noexcept {
    const unsigned t = core.p.congested_write_threshold_us;
    return t != 0 && core.dev->write_latency_us() > t;
}

// Whether a read miss should skip its fill (and count as a bypass).
inline bool miss_congested(const CacheCore& core) noexcept {
    return read_congested(core) || write_congested(core);
}

} // namespace overcache::cache
