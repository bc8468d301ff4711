// Feeds StatWindows: a thread of its own samples the counters every 10 s
// while the mount runs, whether or not anyone reads them, and a read of the
// control file gets the counters and their windows from one call of the
// source, so a window never shows more than its total.
#pragma once

#include "control/stat_windows.hpp"
#include "control/stats_text.hpp"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

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

    struct Reading {
        StatLines lines;   // the source's, as of now
        StatLines windows; // StatWindows::window_lines() for them
    };
    // Calls the source (after any sample in progress: the values are never
    // older than the windows' last sample) and computes the windows.
    Reading read() const;

    // reset_stats: from now on every counter (is_counter) reads as its
    // growth since this call, cache_hit_ratio is the ratio of those, and
    // the windows start again empty. The source's own counters keep
    // running: nothing in the cache is written to, so no module's counting
    // races with the reset.
    void reset();

private:
    void loop();
    // The source's lines with the counters taken from the reset's
    // baseline; under mu_.
    StatLines current() const;

    const Source source_;
    const std::chrono::milliseconds every_;
    // Held across source() too: a sample and a read are ordered.
    mutable std::mutex mu_;
    StatWindows windows_;   // guarded by mu_
    // Guarded by mu_: the counters as of the last reset().
    std::unordered_map<std::string, std::uint64_t> baseline_;
    bool stopping_ = false; // guarded by mu_
    std::condition_variable cv_;
    std::thread thread_;
};

} // namespace overcache::control
