// The admission filter behind promote_after_hits (as Open-CAS' nhit and
// dm-cache's smq): a missed range is cached only once it has been missed N
// times recently, so a one-off scan reads through without evicting the
// working set. "Recently" is two generations of miss counts: the current
// one and the one before it; a generation ends after `window` or once it
// holds `capacity` ranges, whichever comes first, and the oldest is then
// forgotten. Memory: at most 2 x capacity counts, whatever is read.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace overcache::cache {

class MissFilter {
public:
    using Clock = std::chrono::steady_clock;

    explicit MissFilter(std::size_t capacity = 1u << 16,
                        std::chrono::nanoseconds window = std::chrono::minutes(10));

    // Counts a miss of `range` (a file's chunk, hashed by the caller) at
    // `now`; true once it has been missed `needed` times within the last
    // generations (this miss included). needed <= 1: always true, nothing
    // counted. An admitted range is forgotten (a later eviction starts it
    // over).
    bool admit(std::uint64_t range, unsigned needed, Clock::time_point now = Clock::now());

    std::size_t tracked() const; // counts held now (tests)

private:
    void maybe_rotate(Clock::time_point now);

    const std::size_t capacity_;
    const std::chrono::nanoseconds window_;
    mutable std::mutex mu_; // a leaf
    std::unordered_map<std::uint64_t, std::uint32_t> current_, previous_;
    Clock::time_point started_;
};

} // namespace overcache::cache
