// DOC: promote_after_hits' miss counts. Two generations instead of a clock
// per range: counting is one map lookup, aging is dropping a whole map, and
// a range missed once long ago never adds to a miss today.
#include "cache/admission.hpp"

namespace overcache::cache {

MissFilter::MissFilter(std::size_t capacity, std::chrono::nanoseconds window)
    : capacity_(capacity == 0 ? 1 : capacity), window_(window) {}

void MissFilter::maybe_rotate(Clock::time_point now) {
    if (started_ == Clock::time_point{})
        started_ = now;
    if (now - started_ < window_ && current_.size() < capacity_)
        return;
    previous_ = std::move(current_);
    current_.clear();
    started_ = now;
}

bool MissFilter::admit(std::uint64_t range, unsigned needed, Clock::time_point now) {
    if (needed <= 1)
        return true;
    std::lock_guard lk(mu_);
    maybe_rotate(now);
    std::uint32_t seen = 0;
    if (auto it = previous_.find(range); it != previous_.end()) {
        seen = it->second;
        previous_.erase(it); // its count moves to the current generation
    }
    std::uint32_t& count = current_[range];
    count += seen + 1;
    if (count < needed)
        return false;
    current_.erase(range);
    return true;
}

std::size_t MissFilter::tracked() const {
    std::lock_guard lk(mu_);
    return current_.size() + previous_.size();
}

} // namespace overcache::cache
