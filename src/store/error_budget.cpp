// DOC: the cache device's error budget (bcache's io_error_limit). Each I/O
// error adds 1 to a count that halves every `halflife` of wall time (steady
// clock, injectable). bcache decays by I/O count instead (every error_decay
// I/Os); time was chosen here because counting I/Os would put a shared
// atomic on every cache read and write from every FUSE thread, and because
// an idle mount with an occasional error should forgive it, which an I/O
// clock that does not tick while idle never does. The cost: under heavy load
// a fixed per-I/O error rate spends the budget sooner, which is the
// behaviour wanted from a device that is failing. The decay is exact
// (count * 2^(-dt/halflife)), applied lazily when the count is touched. One
// small mutex (errors are rare); degraded() is a lock-free load.
#include "overcache/store/error_budget.hpp"

#include <cmath>
#include <utility>

namespace overcache::store {

ErrorBudget::ErrorBudget(const ErrorBudgetParams& p, NowFn now) : p_(p), now_(std::move(now)) {}

double ErrorBudget::decayed_locked(Clock::time_point now) const {
    if (count_ == 0 || p_.halflife <= Clock::duration::zero() || now <= last_)
        return count_; // a clock that steps back decays nothing
    const double halves = std::chrono::duration<double>(now - last_).count() /
                          std::chrono::duration<double>(p_.halflife).count();
    return count_ * std::exp2(-halves);
}

bool ErrorBudget::record_error() {
    const auto now = now_();
    std::lock_guard lk(mu_);
    count_ = decayed_locked(now) + 1;
    if (now > last_)
        last_ = now;
    if (count_ <= p_.limit || degraded_.load(std::memory_order_relaxed))
        return false;
    degraded_.store(true, std::memory_order_release);
    return true;
}

double ErrorBudget::error_count() const {
    const auto now = now_();
    std::lock_guard lk(mu_);
    return decayed_locked(now);
}

void ErrorBudget::reset() {
    std::lock_guard lk(mu_);
    count_ = 0;
    degraded_.store(false, std::memory_order_release);
}

} // namespace overcache::store
