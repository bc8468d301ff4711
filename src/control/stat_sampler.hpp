// Feeds StatWindows: a thread of its own samples the counters every 10 s
// while the mount runs, whether or not anyone reads them, and a read of the
// control file adds the windows computed against its own (live) values.
#pragma once

#include "control/stat_windows.hpp"
#include "control/stats_text.hpp"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace overcache::control {

class StatSampler {
public:
    // `source` returns the counters (the DataPath's stats): it must not
    // wait for the backing, and must stay callable until stop().
    using Source = std::function<StatLines()>;
    explicit StatSampler(Source source, std::chrono::milliseconds every = StatWindows::kFineStep);
    ~StatSampler() { stop(); }
    StatSampler(const StatSampler&) = delete;
    StatSampler& operator=(const StatSampler&) = delete;

    // Takes the first sample and starts the thread; once.
    void start();
    // Ends the thread (it is waiting, or back within one source() call);
    // idempotent.
    void stop();

    // Appends the window lines (StatWindows::append_lines) for `live`.
    void append_lines(StatLines& live) const;

private:
    void loop();

    const Source source_;
    const std::chrono::milliseconds every_;
    mutable std::mutex mu_;
    StatWindows windows_;   // guarded by mu_
    bool stopping_ = false; // guarded by mu_
    std::condition_variable cv_;
    std::thread thread_;
};

} // namespace overcache::control
