// DOC: the default output of `overcache stats`. Rows whose keys the mount
// does not have (a cache_mode=none mount has no cache) are left out rather
// than shown as zero; the control file itself (or --json) has every key.
#include "cli/stats_table.hpp"

#include "cli/progress.hpp"
#include "control/stat_windows.hpp"

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string_view>

namespace overcache::cli {
namespace {

class Lookup {
public:
    explicit Lookup(const control::StatLines& lines) : lines_(lines) {}

    std::optional<std::string> text(std::string_view key) const {
        for (const auto& [k, v] : lines_)
            if (k == key)
                return v;
        return std::nullopt;
    }
    // The first value of `key` that is a plain number: a live setting's
    // line ("cache_size 16M") comes before the stat of the same name in bytes.
    std::optional<std::uint64_t> number(std::string_view key) const {
        for (const auto& [k, t] : lines_) {
            std::uint64_t v = 0;
            if (k != key || t.empty())
                continue;
            const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
            if (ec == std::errc() && end == t.data() + t.size())
                return v;
        }
        return std::nullopt;
    }

private:
    const control::StatLines& lines_;
};

enum class Unit { count, bytes, percent };

std::string show(std::optional<std::uint64_t> v, Unit unit) {
    if (!v)
        return "-";
    switch (unit) {
    case Unit::bytes:
        return human_bytes(*v);
    case Unit::percent:
        return std::to_string(*v) + "%";
    case Unit::count:
        break;
    }
    return std::to_string(*v);
}

std::string row(const char* label, const std::string (&cells)[4]) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%-16s %12s %12s %12s %12s\n", label, cells[0].c_str(),
                  cells[1].c_str(), cells[2].c_str(), cells[3].c_str());
    return buf;
}

} // namespace

std::string render_table(const control::StatLines& lines, const std::string& mountpoint) {
    const Lookup s(lines);
    std::string out = mountpoint;
    if (auto mode = s.text("cache_mode"))
        out += ": " + *mode;
    if (auto state = s.text("cache_state"))
        out += ", " + *state;
    out += "\n";

    struct Row {
        const char* label;
        const char* key;
        Unit unit;
    };
    static constexpr Row kRows[] = {
        {"hit ratio", "cache_hit_ratio", Unit::percent},
        {"hits", "cache_hits", Unit::count},
        {"misses", "cache_misses", Unit::count},
        {"hit bytes", "cache_hit_bytes", Unit::bytes},
        {"miss bytes", "cache_miss_bytes", Unit::bytes},
        {"bypass hits", "cache_bypass_hits", Unit::count},
        {"bypass misses", "cache_bypass_misses", Unit::count},
        {"bypassed bytes", "cache_bypass_bytes", Unit::bytes},
        {"read errors", "cache_read_errors", Unit::count},
        {"writes dirty", "writes_dirty", Unit::count},
        {"written back", "writeback_bytes", Unit::bytes},
        {"writeback errors", "writeback_errors", Unit::count},
        {"fills", "fills", Unit::count},
        {"gc runs", "gc_runs", Unit::count},
        {"gc moved", "gc_moved_bytes", Unit::bytes},
    };
    std::string table;
    // The working set has windows but no total: it is not a counter.
    if (s.number("five_minute.working_set_bytes")) {
        std::string cells[4];
        for (std::size_t i = 0; i < control::kWindows.size(); ++i)
            cells[i] = show(s.number(std::string(control::kWindows[i].name) + ".working_set_bytes"),
                            Unit::bytes);
        cells[3] = "-";
        table += row("working set", cells);
    }
    for (const auto& r : kRows) {
        const auto total = s.number(r.key);
        if (!total)
            continue;
        std::string cells[4];
        for (std::size_t i = 0; i < control::kWindows.size(); ++i)
            cells[i] = show(s.number(std::string(control::kWindows[i].name) + "." + r.key), r.unit);
        cells[3] = show(total, r.unit);
        table += row(r.label, cells);
    }
    if (!table.empty()) {
        const std::string head[4] = {"5 min", "hour", "day", "total"};
        out += "\n" + row("", head) + table;
    }

    std::string facts;
    auto fact = [&](const char* label, const std::string& text) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%-12s", label);
        facts += buf + text + "\n";
    };
    if (auto size = s.number("cache_size")) {
        std::string t =
            show(s.number("cache_used_bytes"), Unit::bytes) + " used of " + human_bytes(*size);
        if (auto live = s.number("cache_live_bytes"))
            t += " (" + human_bytes(*live) + " live)";
        fact("cache", t);
    }
    if (auto dirty = s.number("dirty_data")) {
        std::string t = human_bytes(*dirty);
        if (auto files = s.number("dirty_files"))
            t += " in " + std::to_string(*files) + (*files == 1 ? " file" : " files");
        fact("dirty", t);
    }
    if (auto pinned = s.number("pinned_bytes")) {
        // user.overcache.pin: kept from eviction, up to its cap.
        std::string t = human_bytes(*pinned);
        if (auto cap = s.number("pinned_cap"))
            t += " of at most " + human_bytes(*cap);
        if (auto over = s.number("pin_over_cap"); over && *over != 0)
            t += ", " + human_bytes(*over) + " cached unpinned past the cap";
        fact("pinned", t);
    }
    if (auto total = s.number("buckets_total")) {
        std::string t =
            show(s.number("buckets_free"), Unit::count) + " free of " + std::to_string(*total);
        if (auto reserve = s.number("buckets_reserve"))
            t += " (" + std::to_string(*reserve) + " reserved for gc)";
        if (auto clean = s.number("buckets_clean"))
            t += ", " + std::to_string(*clean) + " clean";
        if (auto dirty = s.number("buckets_dirty"))
            t += ", " + std::to_string(*dirty) + " dirty";
        if (auto size = s.number("bucket_size"))
            t += ", " + human_bytes(*size) + " each";
        fact("buckets", t);
    }
    if (auto median = s.number("bucket_age_median")) {
        // bcache's priority_stats: how long ago buckets were last used.
        std::string t = "last used " + show(s.number("bucket_age_min"), Unit::count) + " / " +
                        show(s.number("bucket_age_q25"), Unit::count) + " / " +
                        std::to_string(*median) + " / " +
                        show(s.number("bucket_age_q75"), Unit::count) + " / " +
                        show(s.number("bucket_age_max"), Unit::count) +
                        " allocations ago (min / 25% / median / 75% / max)";
        fact("bucket age", t);
    }
    if (auto rate = s.text("writeback_rate")) {
        std::string t =
            "rate " + (*rate == "max" ? std::string("unlimited")
                                      : show(s.number("writeback_rate"), Unit::bytes) + "/s");
        if (auto target = s.number("writeback_target"))
            t += ", target " + human_bytes(*target) + " dirty";
        fact("writeback", t);
    }
    if (auto rd = s.number("cache_read_latency_us")) {
        // What the congestion thresholds are compared with.
        std::string t = "read " + std::to_string(*rd) + " us, write " +
                        show(s.number("cache_write_latency_us"), Unit::count) + " us";
        if (auto n = s.number("congested_bypasses"))
            t += "; " + std::to_string(*n) + " bypassed while congested";
        fact("device", t);
    }
    if (auto err = s.text("last_error"); err && *err != "-")
        fact("last error", *err);
    if (!facts.empty())
        out += "\n" + facts;
    return out;
}

} // namespace overcache::cli
