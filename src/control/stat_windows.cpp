// DOC: statistics windows as bcache keeps them (stats_five_minute, _hour,
// _day; the unwindowed key is the total since the mount). Each sample holds
// every followed counter's running total, in which a drop of the counter
// (a reset) counts as a restart from zero, so a window never goes negative.
// A window's increase is the live total less the total of the oldest
// sample inside the window: exact to a step (10 s for five minutes, a
// minute for the hour and the day). Two rings of samples, 31 and 1441 long,
// bound the memory whatever the uptime. Not thread-safe: StatSampler locks.
#include "control/stat_windows.hpp"

#include <algorithm>
#include <charconv>

namespace overcache::control {
namespace {

constexpr std::array<std::string_view, 37> kCounters{
    "cache_hits",
    "cache_misses",
    "cache_hit_bytes",
    "cache_miss_bytes",
    "cache_bypass_hits",
    "cache_bypass_misses",
    "cache_bypass_bytes",
    "cache_read_errors",
    "cache_stale_reads",
    "cache_read_bytes",
    "cache_io_errors",
    "writes_dirty",
    "writes_around",
    "foreground_waits",
    "foreground_waits_around",
    "writeback_bytes",
    "writeback_errors",
    "writeback_conflicts",
    "writeback_lost_bytes",
    "fills",
    "fills_skipped_full",
    "fills_skipped_busy",
    "cache_miss_collisions",
    "fill_errors",
    "prefetch_bytes",
    "pin_over_cap",
    "writes_cached",
    "writes_punched",
    "files_invalidated",
    "backing_changes_seen",
    "gc_runs",
    "gc_buckets_reclaimed",
    "gc_moved_bytes",
    "gc_buckets_moved",
    "gc_buckets_given_back",
    "gc_stale_extents_removed",
    "congested_bypasses",
};

// A counter that went down was reset: it counted `now` since.
std::uint64_t growth(std::uint64_t before, std::uint64_t now) {
    return now >= before ? now - before : now;
}

} // namespace

bool parse_counter(std::string_view s, std::uint64_t& out) noexcept {
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size() && !s.empty();
}

bool is_counter(std::string_view key) noexcept {
    return std::find(kCounters.begin(), kCounters.end(), key) != kCounters.end();
}

const std::vector<std::string>& windowed_counters() {
    static const std::vector<std::string> kWindowed{
        "cache_hits",        "cache_misses",        "cache_hit_bytes",    "cache_miss_bytes",
        "cache_bypass_hits", "cache_bypass_misses", "cache_bypass_bytes", "cache_read_errors",
        "writes_dirty",      "writeback_bytes",     "writeback_errors",   "fills",
        "gc_runs",           "gc_moved_bytes",
    };
    return kWindowed;
}

StatWindows::StatWindows(std::vector<std::string> counters)
    : counters_(std::move(counters)), raw_(counters_.size()), total_(counters_.size()),
      seen_(counters_.size()) {}

std::vector<std::uint64_t> StatWindows::totals_of(const StatLines& live) const {
    std::vector<std::uint64_t> out = total_;
    for (const auto& [key, value] : live) {
        const auto it = std::find(counters_.begin(), counters_.end(), key);
        std::uint64_t v = 0;
        if (it == counters_.end() || !parse_counter(value, v))
            continue;
        const auto i = static_cast<std::size_t>(it - counters_.begin());
        if (seen_[i])
            out[i] += growth(raw_[i], v);
    }
    return out;
}

void StatWindows::sample(TimePoint now, const StatLines& lines) {
    for (const auto& [key, value] : lines) {
        const auto it = std::find(counters_.begin(), counters_.end(), key);
        std::uint64_t v = 0;
        if (it == counters_.end() || !parse_counter(value, v))
            continue;
        const auto i = static_cast<std::size_t>(it - counters_.begin());
        if (seen_[i])
            total_[i] += growth(raw_[i], v);
        raw_[i] = v;
        seen_[i] = true;
    }
    auto keep = [&](std::deque<Sample>& ring, std::chrono::seconds step, std::size_t max) {
        if (!ring.empty() && now - ring.back().at < step)
            return;
        ring.push_back(Sample{now, total_});
        while (ring.size() > max)
            ring.pop_front();
    };
    keep(fine_, kFineStep, kFineSamples);
    keep(coarse_, kCoarseStep, kCoarseSamples);
}

const StatWindows::Sample* StatWindows::baseline(std::chrono::seconds length, TimePoint now) const {
    const auto& ring = length <= kFineStep * (kFineSamples - 1) ? fine_ : coarse_;
    if (ring.empty())
        return nullptr;
    const TimePoint from = now - length;
    const auto it =
        std::find_if(ring.begin(), ring.end(), [&](const Sample& s) { return s.at >= from; });
    // Every sample older than the window: the sampler fell behind; the
    // newest one is the best bound there is.
    return it == ring.end() ? &ring.back() : &*it;
}

std::uint64_t StatWindows::increase(std::string_view counter, std::chrono::seconds length,
                                    TimePoint now, const StatLines& live) const {
    const auto it = std::find(counters_.begin(), counters_.end(), counter);
    if (it == counters_.end())
        return 0;
    const auto i = static_cast<std::size_t>(it - counters_.begin());
    const std::uint64_t total = totals_of(live)[i];
    const Sample* base = baseline(length, now);
    const std::uint64_t from = base == nullptr ? 0 : base->total[i];
    return total >= from ? total - from : 0;
}

StatLines StatWindows::window_lines(TimePoint now, const StatLines& live) const {
    StatLines out;
    const std::vector<std::uint64_t> totals = totals_of(live);
    std::vector<bool> present(counters_.size());
    for (const auto& [key, value] : live) {
        const auto it = std::find(counters_.begin(), counters_.end(), key);
        std::uint64_t v = 0;
        if (it != counters_.end() && parse_counter(value, v))
            present[static_cast<std::size_t>(it - counters_.begin())] = true;
    }
    const auto index = [&](std::string_view name) -> std::size_t {
        const auto it = std::find(counters_.begin(), counters_.end(), name);
        return static_cast<std::size_t>(it - counters_.begin());
    };
    const std::size_t hits = index("cache_hits"), misses = index("cache_misses");
    const bool ratio =
        hits < counters_.size() && misses < counters_.size() && present[hits] && present[misses];
    for (const auto& w : kWindows) {
        const Sample* base = baseline(w.length, now);
        std::vector<std::uint64_t> inc(counters_.size());
        for (std::size_t i = 0; i < counters_.size(); ++i) {
            const std::uint64_t from = base == nullptr ? 0 : base->total[i];
            inc[i] = totals[i] >= from ? totals[i] - from : 0;
        }
        for (std::size_t i = 0; i < counters_.size(); ++i)
            if (present[i])
                out.emplace_back(std::string(w.name) + "." + counters_[i], std::to_string(inc[i]));
        if (ratio) {
            const std::uint64_t reads = inc[hits] + inc[misses];
            out.emplace_back(std::string(w.name) + ".cache_hit_ratio",
                             std::to_string(reads == 0 ? 0 : inc[hits] * 100 / reads));
        }
    }
    return out;
}

} // namespace overcache::control
