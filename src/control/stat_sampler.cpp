// DOC: the thread behind the statistics windows ("oc-stats"). It only
// calls the source (the DataPath's stats: counters and short locks, never
// the backing) and keeps samples in memory, so it cannot stall a request
// and is stopped at once at unmount. The source runs outside mu_, so a
// control-file read never waits for it.
#include "control/stat_sampler.hpp"

#include <pthread.h>

namespace overcache::control {

StatSampler::StatSampler(Source source, std::chrono::milliseconds every)
    : source_(std::move(source)), every_(every) {}

void StatSampler::start() {
    if (thread_.joinable())
        return;
    {
        StatLines first = source_();
        std::lock_guard lk(mu_);
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

void StatSampler::append_lines(StatLines& live) const {
    const auto now = StatWindows::Clock::now();
    std::lock_guard lk(mu_);
    windows_.append_lines(now, live);
}

void StatSampler::loop() {
    ::pthread_setname_np(::pthread_self(), "oc-stats");
    std::unique_lock lk(mu_);
    while (!cv_.wait_for(lk, every_, [this] { return stopping_; })) {
        lk.unlock();
        StatLines lines = source_();
        const auto now = StatWindows::Clock::now();
        lk.lock();
        windows_.sample(now, lines);
    }
}

} // namespace overcache::control
