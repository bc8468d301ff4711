// A smoothed latency of one direction of cache device I/O (reads or
// writes), for the congestion bypass (congested_read_threshold_us,
// congested_write_threshold_us, as bcache's). Thread-safe.
//
// The estimate is an exponentially weighted mean of log2(latency): a
// geometric mean, so one outlier (a page fault, a preempted thread) moves it
// by a factor, not by its own size, and a run of slow I/Os is needed to trip
// a threshold. A sample is normalised to kRefBytes first: a 1 MiB transfer
// that takes 4 ms says the device moves 64 KiB in 250 us, not that it is
// congested. The estimate starts at 1 us, so that a cold start takes a run
// of slow I/Os, like any other, to count as congestion. After kIdleGrace
// with no I/O the estimate halves every kIdleHalfLife, so a device that
// everything bypasses (no I/O left to measure it) is tried again soon
// after, as bcache's congestion counter recovers over time; the grace keeps
// a slow device that is used at a slow pace (one I/O every few hundred ms,
// each waiting for the index too) from decaying between its own I/Os.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace overcache::store {

class LatencyEstimator {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr std::size_t kRefBytes = 64 * 1024;
    // A sample moves the log estimate this share of the way to itself.
    static constexpr double kWeight = 1.0 / 8;
    static constexpr std::chrono::milliseconds kIdleGrace{1000};
    static constexpr std::chrono::milliseconds kIdleHalfLife{250};
    // Samples are clamped to [1 us, 60 s] (a clock step, a hung device).
    static constexpr double kMaxUs = 60e6;

    // One I/O of `bytes` that took `elapsed`, ending at `now`.
    void record(Clock::duration elapsed, std::size_t bytes, Clock::time_point now);
    void record(Clock::duration elapsed, std::size_t bytes) {
        record(elapsed, bytes, Clock::now());
    }
    // The estimate at `now` in microseconds (0 before any sample), decayed
    // for the time since the last sample.
    std::uint64_t estimate_us(Clock::time_point now) const;
    std::uint64_t estimate_us() const { return estimate_us(Clock::now()); }

private:
    // log2 of the estimate (us) at `now`; mu_ held.
    double decayed_log(Clock::time_point now) const;

    mutable std::mutex mu_;    // a leaf: held for a few arithmetic operations
    bool any_ = false;         // guarded by mu_
    double log_us_ = 0;        // guarded by mu_: log2 of the estimate at last_
    Clock::time_point last_{}; // guarded by mu_
};

} // namespace overcache::store
