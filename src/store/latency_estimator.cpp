// DOC: the smoothed cache device latency behind the congestion bypass (see
// the header for the model). Kept in log2 space: blending logs is the
// geometric mean, and the idle decay (halving per half-life) is a
// subtraction.
#include "overcache/store/latency_estimator.hpp"

#include <algorithm>
#include <cmath>

namespace overcache::store {

double LatencyEstimator::decayed_log(Clock::time_point now) const {
    if (now <= last_)
        return log_us_;
    const double idle = std::chrono::duration<double>(now - last_ - kIdleGrace).count();
    if (idle <= 0)
        return log_us_;
    const double half = std::chrono::duration<double>(kIdleHalfLife).count();
    return log_us_ - idle / half;
}

void LatencyEstimator::record(Clock::duration elapsed, std::size_t bytes, Clock::time_point now) {
    double us = std::chrono::duration<double, std::micro>(elapsed).count();
    // Larger transfers are scaled down to kRefBytes; smaller ones are not
    // scaled up (a device's fixed cost per I/O is what congestion raises).
    if (bytes > kRefBytes)
        us *= static_cast<double>(kRefBytes) / static_cast<double>(bytes);
    us = std::clamp(us, 1.0, kMaxUs);
    const double sample = std::log2(us);
    std::lock_guard lk(mu_);
    // The first sample, and the first after the estimate decayed below
    // 1 us, blend with 1 us (log 0): a mount's first, cold I/O is one
    // sample among others, not the estimate.
    const double cur = any_ ? std::max(0.0, decayed_log(now)) : 0.0;
    log_us_ = cur + (sample - cur) * kWeight;
    any_ = true;
    last_ = std::max(last_, now);
}

std::uint64_t LatencyEstimator::estimate_us(Clock::time_point now) const {
    std::lock_guard lk(mu_);
    if (!any_)
        return 0;
    const double l = decayed_log(now);
    if (l < 0)
        return 0; // decayed below 1 us: idle
    return static_cast<std::uint64_t>(std::llround(std::exp2(l)));
}

} // namespace overcache::store
