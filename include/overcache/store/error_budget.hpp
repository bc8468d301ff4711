// ErrorBudget: bcache's io_error_limit with a half-life. Cache-device I/O
// errors add to a count that decays; when the count goes past the limit the
// budget is spent, once, and the mount should stop using the cache device
// (passthrough, `cache_state degraded`) until someone resets it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>

namespace overcache::store {

struct ErrorBudgetParams {
    // The budget is spent when the decayed error count exceeds this; 0 means
    // the first error spends it.
    double limit = 8;
    // Time for the count to halve. Zero or negative: no decay (errors add up
    // until reset()).
    std::chrono::steady_clock::duration halflife = std::chrono::minutes(1);
};

class ErrorBudget {
public:
    using Clock = std::chrono::steady_clock;
    using NowFn = std::function<Clock::time_point()>; // injectable for tests

    explicit ErrorBudget(const ErrorBudgetParams& p, NowFn now = &Clock::now);

    // Adds one error. Returns true exactly once per crossing: for the error
    // that takes the count past the limit (log once and degrade the mount
    // then). Errors recorded while degraded still count, but return false.
    // Thread-safe.
    [[nodiscard]] bool record_error();
    // True from the crossing until reset(). Lock-free.
    bool degraded() const noexcept { return degraded_.load(std::memory_order_acquire); }
    // The decayed count as of now, for stats.
    double error_count() const;
    // Clears the count and leaves the degraded state (an operator's
    // `reset`, after replacing the device); the next crossing reports again.
    void reset();

private:
    double decayed_locked(Clock::time_point now) const; // needs mu_

    const ErrorBudgetParams p_;
    const NowFn now_;
    mutable std::mutex mu_;
    double count_ = 0;                  // guarded by mu_; as of last_
    Clock::time_point last_{};          // guarded by mu_
    std::atomic<bool> degraded_{false}; // written under mu_
};

} // namespace overcache::store
