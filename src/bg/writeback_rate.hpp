// Writeback's rate control, as bcache's: WritebackRate decides how many
// bytes per second writeback should write to the backing, from how much of
// the cache is dirty; WritebackPacer turns that rate into sleeps between
// writes. Both are pure arithmetic over the numbers and times they are
// given (no threads, no sleeping, no clock of their own unless defaulted),
// so that the writeback service drives them on its strand and tests drive
// them with a fake clock. Neither is thread-safe: one owner (the writeback
// strand) calls them; stats() is a copy to publish from there.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>

namespace overcache::bg {

// What the controller is told at each update.
struct RateInputs {
    std::uint64_t dirty_bytes = 0;    // dirty data in the cache now
    std::uint64_t capacity_bytes = 0; // the cache's size
    unsigned writeback_percent = 10;  // share of capacity dirty data may hold; 0: full speed
    std::uint64_t rate_minimum_bytes_per_s = 1u << 20; // the rate at or below the target
};

// The controller's state after its last update, for stats
// (writeback_rate, writeback_rate_target, ...). The terms are signed: below
// the target the proportional term is negative, and a shrinking dirty set
// gives a negative derivative term.
struct WritebackRateStats {
    std::uint64_t rate_bytes_per_s = 0;
    std::uint64_t target_bytes = 0; // capacity * percent / 100
    std::uint64_t dirty_bytes = 0;
    std::int64_t proportional_bytes_per_s = 0;
    std::int64_t derivative_bytes_per_s = 0;
    std::uint64_t updates = 0;
};

// The controller's constants, bcache's names where they mean the same.
struct RateTuning {
    // The proportional term writes the dirty data above the target in
    // about this many seconds (bcache's writeback_rate_p_term_inverse).
    double p_term_inverse_s = 40;
    // The derivative term adds the growth of dirty data over this many
    // seconds, also retired over p_term_inverse_s: writeback speeds up while
    // dirty data grows and brakes while it drains, ahead of the error.
    double d_term_s = 30;
    // Time constant of the moving average that smooths the growth of dirty
    // data (it is measured in steps, as batches are written back).
    double d_smooth_s = 10;
};

inline constexpr std::uint64_t kUnlimitedRate = std::numeric_limits<std::uint64_t>::max();

// A proportional-derivative controller of the writeback rate. Below the
// target the rate is the minimum; above it, the rate is
//   (error + d_term_s * smoothed growth of dirty bytes per second) / p_term_inverse_s
// clamped to [minimum, maximum]. A percent of 0 means full speed always.
class WritebackRate {
public:
    // `maximum_bytes_per_s` is full speed; kUnlimitedRate means no limit.
    explicit WritebackRate(std::uint64_t maximum_bytes_per_s = kUnlimitedRate,
                           RateTuning tuning = {});

    // Recomputes the rate from the state now, `elapsed` after the previous
    // update (about a second). The first update has no growth to measure;
    // one with no time elapsed keeps the smoothed growth as it was and
    // leaves the change in dirty bytes to the next.
    // Returns the new rate.
    std::uint64_t update(const RateInputs& in, std::chrono::nanoseconds elapsed);

    // The rate of the last update; 0 before the first (update, then write).
    std::uint64_t rate_bytes_per_s() const noexcept { return stats_.rate_bytes_per_s; }
    const WritebackRateStats& stats() const noexcept { return stats_; }
    std::uint64_t maximum_bytes_per_s() const noexcept { return maximum_bytes_per_s_; }

private:
    std::uint64_t maximum_bytes_per_s_;
    RateTuning tuning_;
    bool have_last_ = false;
    std::uint64_t last_dirty_bytes_ = 0;
    double dirty_growth_bytes_per_s_ = 0; // smoothed
    WritebackRateStats stats_;
};

// capacity * percent / 100 without overflow, percent capped at 100.
std::uint64_t dirty_target_bytes(std::uint64_t capacity_bytes, unsigned percent) noexcept;

// The pacer's bounds.
struct PacerLimits {
    // Longest delay returned: a writer sleeping this long sees a rate change
    // soon; when more is owed, it asks delay() again.
    std::chrono::nanoseconds max_delay = std::chrono::seconds(1);
    // Unused time saved up as credit, at most this much of the rate: after
    // an idle spell (or a slow backing that could not keep the rate)
    // writeback may catch up by this much, not by a huge burst.
    std::chrono::nanoseconds max_credit = std::chrono::seconds(1);
};

// A token bucket in bytes: writing spends tokens, time refills them at the
// current rate, and a shortfall is a delay. The shortfall is kept in bytes,
// not time, so that a new rate applies at once to what is still owed.
class WritebackPacer {
public:
    using Clock = std::function<std::chrono::steady_clock::time_point()>;

    // Starts with no credit at `rate_bytes_per_s`; kUnlimitedRate never
    // delays. `now` is the clock (tests pass a fake one).
    explicit WritebackPacer(std::uint64_t rate_bytes_per_s, Clock now = default_clock(),
                            PacerLimits limits = {});

    // Changes the rate from now on; time before now is counted at the old
    // rate. A rate of 0 stops writing: the delay is always max_delay.
    void set_rate(std::uint64_t rate_bytes_per_s);
    std::uint64_t rate_bytes_per_s() const noexcept { return rate_bytes_per_s_; }

    // Records that `bytes` were written and returns how long to sleep before
    // the next write (0 when the rate allows it now), at most max_delay.
    std::chrono::nanoseconds delay_for(std::uint64_t bytes);
    // How long to sleep before the next write, with nothing new written:
    // after sleeping a capped delay, the writer asks again.
    std::chrono::nanoseconds delay();

    // Bytes owed (positive) or saved up as credit (negative), now.
    double owed_bytes();

    static Clock default_clock();

private:
    void refill();
    double max_credit_bytes() const;

    Clock now_;
    PacerLimits limits_;
    std::uint64_t rate_bytes_per_s_;
    std::chrono::steady_clock::time_point last_;
    double owed_bytes_ = 0;
};

} // namespace overcache::bg
