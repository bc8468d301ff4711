// DOC: the thread behind the statistics windows ("oc-stats"). It only
// calls the source (the DataPath's stats: counters and short locks, never
// the backing) and keeps samples in memory, so it cannot stall a request
// and is stopped at once at unmount. The source is called under mu_, by
// the sampler and by readers alike: values are read in the order they are
// sampled, so a value below the last sample is a reset, never a stale read
// (a control-file read waits for one source() call at most).
#include "control/stat_sampler.hpp"

#include <pthread.h>

namespace overcache::control {

StatLines StatSampler::current() const {
    StatLines lines = source_();
    if (baseline_.empty())
        return lines;
    std::uint64_t hits = 0, misses = 0;
    for (auto& [key, value] : lines) {
        std::uint64_t v = 0;
        if (!is_counter(key) || !parse_counter(value, v))
            continue;
        if (const auto it = baseline_.find(key); it != baseline_.end()) {
            // Below its baseline, the counter itself restarted: it counts
            // from zero, as the windows take it.
            v = v >= it->second ? v - it->second : v;
            value = std::to_string(v);
        }
        if (key == "cache_hits")
            hits = v;
        else if (key == "cache_misses")
            misses = v;
    }
    for (auto& [key, value] : lines)
        if (key == "cache_hit_ratio")
            value = std::to_string(hits + misses == 0 ? 0 : hits * 100 / (hits + misses));
    return lines;
}

void StatSampler::reset() {
    std::lock_guard lk(mu_);
    baseline_.clear();
    for (const auto& [key, value] : source_()) {
        std::uint64_t v = 0;
        if (is_counter(key) && parse_counter(value, v))
            baseline_[key] = v;
    }
    windows_ = StatWindows();
    windows_.sample(StatWindows::Clock::now(), current());
}

StatSampler::StatSampler(Source source, std::chrono::milliseconds every)
    : source_(std::move(source)), every_(every) {}

void StatSampler::start() {
    if (thread_.joinable())
        return;
    {
        std::lock_guard lk(mu_);
        const StatLines first = current();
        windows_.sample(StatWindows::Clock::now(), first);
    }
    thread_ = std::thread([this] { loop(); });
}

void StatSampler::stop() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable())
        thread_.join();
}

StatSampler::Reading StatSampler::read() const {
    std::lock_guard lk(mu_);
    Reading r;
    r.lines = current();
    r.windows = windows_.window_lines(StatWindows::Clock::now(), r.lines);
    return r;
}

void StatSampler::loop() {
    ::pthread_setname_np(::pthread_self(), "oc-stats");
    std::unique_lock lk(mu_);
    while (!cv_.wait_for(lk, every_, [this] { return stopping_; })) {
        const StatLines lines = current();
        windows_.sample(StatWindows::Clock::now(), lines);
    }
}

} // namespace overcache::control
