// DOC: writeback's rate, as bcache's writeback rate control, and the pacer
// that spends it. The controller aims dirty data at a target share of the
// cache: at or below it writeback trickles at the minimum rate; above it the
// rate is proportional to the excess (retired in about p_term_inverse_s)
// plus a derivative term from the smoothed growth of dirty data, which makes
// writeback speed up while writes outpace it (a burst peaks lower) and brake
// while dirty data drains back towards the target. The derivative is taken
// of the dirty bytes, not of the error, so that a change of
// writeback_percent moves the target without a jolt of the rate. The pacer
// is a token bucket in bytes. Both are pure: the writeback strand owns them
// and gives them the time; nothing here sleeps, locks or reads the metadata.
#include "bg/writeback_rate.hpp"

#include <algorithm>
#include <cmath>

namespace overcache::bg {

namespace {

double seconds(std::chrono::nanoseconds d) {
    return std::chrono::duration<double>(d).count();
}

// Rounds a rate to whole bytes per second within [lo, hi]; hi wins over lo
// (a minimum above full speed cannot be had). Doubles at or beyond 2^64
// cannot be converted, so the ends are compared first.
std::uint64_t clamp_rate(double r, std::uint64_t lo, std::uint64_t hi) {
    const std::uint64_t floor_rate = std::min(lo, hi);
    if (!(r > static_cast<double>(floor_rate))) // also NaN
        return floor_rate;
    if (r >= static_cast<double>(hi))
        return hi;
    // r < hi <= 2^64 here, so the rounded value converts.
    return std::max(floor_rate, static_cast<std::uint64_t>(std::round(r)));
}

std::int64_t to_signed(double r) {
    constexpr double kLimit = 9.0e18; // within int64 either way
    return static_cast<std::int64_t>(std::llround(std::clamp(r, -kLimit, kLimit)));
}

} // namespace

std::uint64_t dirty_target_bytes(std::uint64_t capacity_bytes, unsigned percent) noexcept {
    const std::uint64_t p = std::min(percent, 100u);
    // Split so that capacity * p cannot overflow: (q*100 + r) * p / 100.
    return capacity_bytes / 100 * p + capacity_bytes % 100 * p / 100;
}

WritebackRate::WritebackRate(std::uint64_t maximum_bytes_per_s, RateTuning tuning)
    : maximum_bytes_per_s_(maximum_bytes_per_s), tuning_(tuning) {
    // A zero or negative constant would divide by zero or flip the signs.
    tuning_.p_term_inverse_s = std::max(tuning_.p_term_inverse_s, 1e-3);
    tuning_.d_term_s = std::max(tuning_.d_term_s, 0.0);
    tuning_.d_smooth_s = std::max(tuning_.d_smooth_s, 0.0);
}

std::uint64_t WritebackRate::update(const RateInputs& in, std::chrono::nanoseconds elapsed) {
    const double dt = seconds(elapsed);
    if (have_last_ && dt > 0) {
        const double growth =
            (static_cast<double>(in.dirty_bytes) - static_cast<double>(last_dirty_bytes_)) / dt;
        // An exponential moving average with a time constant, not a fixed
        // weight per update, so that late or early updates weigh what the
        // time they cover is worth.
        const double weight =
            tuning_.d_smooth_s > 0 ? 1.0 - std::exp(-dt / tuning_.d_smooth_s) : 1.0;
        dirty_growth_bytes_per_s_ += weight * (growth - dirty_growth_bytes_per_s_);
    }
    if (!have_last_ || dt > 0) {
        // With no time elapsed the change is kept for the next update to
        // measure, over the time it took.
        have_last_ = true;
        last_dirty_bytes_ = in.dirty_bytes;
    }

    const std::uint64_t target = dirty_target_bytes(in.capacity_bytes, in.writeback_percent);
    const double error = static_cast<double>(in.dirty_bytes) - static_cast<double>(target);
    const double proportional = error / tuning_.p_term_inverse_s;
    const double derivative =
        tuning_.d_term_s * dirty_growth_bytes_per_s_ / tuning_.p_term_inverse_s;

    std::uint64_t rate = 0;
    if (in.writeback_percent == 0)
        rate = maximum_bytes_per_s_; // bcache's meaning of 0: no dirty share, full speed
    else if (error <= 0)
        rate = std::min(in.rate_minimum_bytes_per_s, maximum_bytes_per_s_);
    else
        rate = clamp_rate(proportional + derivative, in.rate_minimum_bytes_per_s,
                          maximum_bytes_per_s_);

    stats_.rate_bytes_per_s = rate;
    stats_.target_bytes = target;
    stats_.dirty_bytes = in.dirty_bytes;
    stats_.proportional_bytes_per_s = to_signed(proportional);
    stats_.derivative_bytes_per_s = to_signed(derivative);
    ++stats_.updates;
    return rate;
}

WritebackPacer::Clock WritebackPacer::default_clock() {
    return [] { return std::chrono::steady_clock::now(); };
}

WritebackPacer::WritebackPacer(std::uint64_t rate_bytes_per_s, Clock now, PacerLimits limits)
    : now_(std::move(now)), limits_(limits), rate_bytes_per_s_(rate_bytes_per_s), last_(now_()) {}

double WritebackPacer::max_credit_bytes() const {
    return static_cast<double>(rate_bytes_per_s_) * seconds(limits_.max_credit);
}

void WritebackPacer::refill() {
    const auto t = now_();
    const double dt = seconds(t - last_);
    last_ = std::max(last_, t); // a clock that steps back repays nothing
    if (dt <= 0)
        return;
    owed_bytes_ -= static_cast<double>(rate_bytes_per_s_) * dt;
    owed_bytes_ = std::max(owed_bytes_, -max_credit_bytes());
}

void WritebackPacer::set_rate(std::uint64_t rate_bytes_per_s) {
    refill(); // the time so far was paid for at the old rate
    rate_bytes_per_s_ = rate_bytes_per_s;
    if (rate_bytes_per_s_ == kUnlimitedRate)
        owed_bytes_ = 0;
    else
        owed_bytes_ = std::max(owed_bytes_, -max_credit_bytes()); // less credit at a lower rate
}

std::chrono::nanoseconds WritebackPacer::delay_for(std::uint64_t bytes) {
    refill();
    if (rate_bytes_per_s_ != kUnlimitedRate)
        owed_bytes_ += static_cast<double>(bytes);
    return delay();
}

std::chrono::nanoseconds WritebackPacer::delay() {
    refill();
    if (rate_bytes_per_s_ == 0)
        return limits_.max_delay;
    if (rate_bytes_per_s_ == kUnlimitedRate || owed_bytes_ <= 0)
        return std::chrono::nanoseconds(0);
    const double wait_s = owed_bytes_ / static_cast<double>(rate_bytes_per_s_);
    if (wait_s >= seconds(limits_.max_delay))
        return limits_.max_delay;
    // Rounded up: a sleep a nanosecond short would leave a sliver owed and
    // cost the writer another wake-up.
    return std::chrono::nanoseconds(static_cast<std::int64_t>(std::ceil(wait_s * 1e9)));
}

double WritebackPacer::owed_bytes() {
    refill();
    return owed_bytes_;
}

} // namespace overcache::bg
