// bcache-style statistics windows: how much each monotonic counter of the
// control file (cache_hits, gc_runs, ...) grew over the last five minutes,
// hour and day, and the hit ratio of each window. Pure bookkeeping on
// samples of the counters, with the time passed in, so tests move a fake
// clock; StatSampler (stat_sampler.hpp) feeds it from a thread of its own.
#pragma once

#include "control/stats_text.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace overcache::control {

// The counters of the control file that only grow while a mount runs (a
// drop, e.g. after a reset, is taken as a restart from zero). Prometheus
// renders them as counters, everything else numeric as gauges.
bool is_counter(std::string_view key) noexcept;

// A counter's value as the control file writes it (decimal digits only).
bool parse_counter(std::string_view s, std::uint64_t& out) noexcept;

// The counters that get windows.
const std::vector<std::string>& windowed_counters();

struct WindowSpec {
    const char* name; // key prefix: "five_minute" -> five_minute.cache_hits
    std::chrono::seconds length;
};
inline constexpr std::array<WindowSpec, 3> kWindows{{
    {"five_minute", std::chrono::minutes(5)},
    {"hour", std::chrono::hours(1)},
    {"day", std::chrono::hours(24)},
}};

class StatWindows {
public:
    using Clock = std::chrono::steady_clock;
    using TimePoint = Clock::time_point;

    // Samples kept: one each 10 s for the five-minute window, one a minute
    // for the hour and the day; older ones are dropped, so memory is fixed.
    static constexpr auto kFineStep = std::chrono::seconds(10);
    static constexpr auto kCoarseStep = std::chrono::seconds(60);
    static constexpr std::size_t kFineSamples = 5 * 60 / 10 + 1;
    static constexpr std::size_t kCoarseSamples = 24 * 60 + 1;

    explicit StatWindows(std::vector<std::string> counters = windowed_counters());

    // Takes the counters' values in `lines` as of `now` (a counter missing
    // or not a number keeps its last value; one lower than its last value
    // was reset and counts from zero). Call it at least every 10 s, with
    // values in the order they were read; more often is harmless (a sample
    // is kept per step at most).
    void sample(TimePoint now, const StatLines& lines);

    // How much `counter` grew over the window of `length` ending at `now`,
    // `live` being the counters' values now, read after the last sample (a
    // value below it was reset, as in sample()): from the oldest sample no
    // older than the window (so at most the window, at most a step less),
    // or since the first sample when the windows are younger than that.
    // 0 for a counter not followed.
    std::uint64_t increase(std::string_view counter, std::chrono::seconds length, TimePoint now,
                           const StatLines& live) const;

    // "five_minute.COUNTER N" ... "day.COUNTER N" for every followed
    // counter present in `live` (read as for increase()), and
    // "WINDOW.cache_hit_ratio" (a percentage, 0 with no reads) where hits
    // and misses are followed.
    StatLines window_lines(TimePoint now, const StatLines& live) const;

    std::size_t samples_held() const noexcept { return fine_.size() + coarse_.size(); }

private:
    struct Sample {
        TimePoint at;
        std::vector<std::uint64_t> total; // per counter, resets folded in
    };
    // Each counter's running total as of `live` (resets folded in).
    std::vector<std::uint64_t> totals_of(const StatLines& live) const;
    const Sample* baseline(std::chrono::seconds length, TimePoint now) const;

    std::vector<std::string> counters_;
    std::vector<std::uint64_t> raw_;   // the last value seen of each counter
    std::vector<std::uint64_t> total_; // its running total
    std::vector<bool> seen_;
    std::deque<Sample> fine_;   // every kFineStep, at most kFineSamples
    std::deque<Sample> coarse_; // every kCoarseStep, at most kCoarseSamples
};

} // namespace overcache::control
