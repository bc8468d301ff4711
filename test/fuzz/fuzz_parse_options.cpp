// Fuzz target: config::parse_options, the -o lists (and with them the
// boolean, whole-number, seconds and size parsers of the option table). The
// input is split at '\n' into separate -o lists.
// Properties: a refusal is BadValue with a one-line message; an accepted
// Config has every field within the bounds the option table documents, and
// rendered back as one -o list (every overcache option, then the options
// passed to libfuse) it parses to the same Config and the same pass-through
// list.
#include "fuzz_check.hpp"
#include "overcache/config/config.hpp"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

using namespace overcache;
using config::Config;

namespace {

constexpr std::uint64_t kKiB = 1024, kMiB = kKiB << 10, kTiB = kMiB << 20;

bool power_of_two(std::uint64_t v) {
    return v != 0 && (v & (v - 1)) == 0;
}

std::string seconds(double d) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", d);
    return buf;
}

// The exact part of format_size ("1073741825 (1.0 GiB)" -> "1073741825").
std::string size(std::uint64_t v) {
    std::string s = config::format_size(v);
    return s.substr(0, s.find(' '));
}

std::string render(const Config& c) {
    auto b = [](bool v) { return v ? "1" : "0"; };
    std::string o;
    auto add = [&](const std::string& item) { o += (o.empty() ? "" : ",") + item; };
    if (!c.cache_dir.empty())
        add("cache=" + c.cache_dir);
    if (!c.cache_dev.empty())
        add("cache_dev=" + c.cache_dev);
    if (c.cache_size != 0)
        add("cache_size=" + size(c.cache_size));
    add("cache_min_free=" + size(c.cache_min_free));
    add("bucket_size=" + size(c.bucket_size));
    add("fill_size=" + size(c.fill_size));
    add("sequential_cutoff=" + size(c.sequential_cutoff));
    add(std::string("cache_mode=") + config::to_string(c.cache_mode));
    add(std::string("reformat=") + b(c.reformat));
    add(std::string("discard_dirty=") + b(c.discard_dirty));
    add("block_cache_size=" + size(c.block_cache_size));
    add("gc_low_percent=" + std::to_string(c.gc_low_percent));
    add("gc_high_percent=" + std::to_string(c.gc_high_percent));
    add("writeback_percent=" + std::to_string(c.writeback_percent));
    add("writeback_delay=" + seconds(c.writeback_delay_s));
    add("writeback_rate_minimum=" + size(c.writeback_rate_minimum));
    add(std::string("writeback_running=") + b(c.writeback_running));
    add("writeback_wait_max=" + seconds(c.writeback_wait_max_s));
    add(std::string("fsync_to_backing=") + b(c.fsync_to_backing));
    add(std::string("kernel_writeback_cache=") + b(c.kernel_writeback_cache));
    add(std::string("flush_on_unmount=") + b(c.flush_on_unmount));
    add("attr_timeout=" + seconds(c.attr_timeout));
    add("entry_timeout=" + seconds(c.entry_timeout));
    add("negative_timeout=" + seconds(c.negative_timeout));
    add(std::string("default_permissions=") + b(c.default_permissions));
    if (c.allow_other_given)
        add(std::string("allow_other=") + b(c.allow_other));
    add(std::string("allow_suid=") + b(c.allow_suid));
    add(std::string("allow_dev=") + b(c.allow_dev));
    add("max_threads=" + std::to_string(c.max_threads));
    static const char* const kLevels[] = {"debug", "info", "warning", "error"};
    add(std::string("log_level=") + kLevels[static_cast<int>(c.log_level)]);
    return o;
}

bool same(const Config& a, const Config& b) {
    return a.attr_timeout == b.attr_timeout && a.entry_timeout == b.entry_timeout &&
           a.negative_timeout == b.negative_timeout &&
           a.default_permissions == b.default_permissions && a.allow_other == b.allow_other &&
           a.allow_other_given == b.allow_other_given && a.allow_suid == b.allow_suid &&
           a.allow_dev == b.allow_dev && a.cache_dir == b.cache_dir && a.cache_dev == b.cache_dev &&
           a.cache_size == b.cache_size && a.cache_min_free == b.cache_min_free &&
           a.bucket_size == b.bucket_size && a.fill_size == b.fill_size &&
           a.sequential_cutoff == b.sequential_cutoff && a.block_cache_size == b.block_cache_size &&
           a.gc_low_percent == b.gc_low_percent && a.gc_high_percent == b.gc_high_percent &&
           a.cache_mode == b.cache_mode && a.reformat == b.reformat &&
           a.discard_dirty == b.discard_dirty && a.writeback_percent == b.writeback_percent &&
           a.writeback_delay_s == b.writeback_delay_s &&
           a.writeback_rate_minimum == b.writeback_rate_minimum &&
           a.writeback_running == b.writeback_running && a.fsync_to_backing == b.fsync_to_backing &&
           a.flush_on_unmount == b.flush_on_unmount &&
           a.kernel_writeback_cache == b.kernel_writeback_cache &&
           a.writeback_wait_max_s == b.writeback_wait_max_s && a.max_threads == b.max_threads &&
           a.log_level == b.log_level;
}

bool seconds_ok(double d) {
    return std::isfinite(d) && d >= 0 && d <= 86400.0 * 365;
}

void check_bounds(const Config& c, const std::string& shown) {
    FUZZ_CHECK(c.cache_size == 0 || (c.cache_size >= 16 * kMiB && c.cache_size <= 1024 * kTiB),
               shown);
    FUZZ_CHECK(c.cache_min_free <= 1024 * kTiB, shown);
    FUZZ_CHECK(power_of_two(c.bucket_size) && c.bucket_size >= 64 * kKiB &&
                   c.bucket_size <= 64 * kMiB,
               shown);
    FUZZ_CHECK(power_of_two(c.fill_size) && c.fill_size >= 4 * kKiB && c.fill_size <= c.bucket_size,
               shown);
    FUZZ_CHECK(c.sequential_cutoff <= 1024 * kTiB, shown);
    FUZZ_CHECK(c.block_cache_size >= kMiB && c.block_cache_size <= 64 * kTiB / 1024, shown);
    FUZZ_CHECK(c.gc_low_percent >= 1 && c.gc_low_percent < c.gc_high_percent &&
                   c.gc_high_percent <= 90,
               shown);
    FUZZ_CHECK(c.writeback_percent <= 100, shown);
    FUZZ_CHECK(c.writeback_rate_minimum >= 4 * kKiB && c.writeback_rate_minimum <= kTiB, shown);
    FUZZ_CHECK(seconds_ok(c.writeback_delay_s) && seconds_ok(c.writeback_wait_max_s) &&
                   seconds_ok(c.attr_timeout) && seconds_ok(c.entry_timeout) &&
                   seconds_ok(c.negative_timeout),
               shown);
    FUZZ_CHECK(c.max_threads >= 1 && c.max_threads <= 256, shown);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text = fuzz::as_text(data, size);
    fuzz::current_input = text;
    std::vector<std::string> lists;
    for (std::size_t start = 0; start <= text.size();) {
        const std::size_t nl = std::min(text.find('\n', start), text.size());
        lists.emplace_back(text.substr(start, nl - start));
        start = nl + 1;
    }
    auto r = config::parse_options(lists);
    if (!r) {
        FUZZ_CHECK(r.error().code == Errc::BadValue, r.error().message);
        FUZZ_CHECK(fuzz::one_line(r.error().message), r.error().message);
        return 0;
    }
    std::string shown = render(r->config);
    check_bounds(r->config, shown);
    for (const auto& f : r->fuse_options)
        shown += "," + f;
    auto again = config::parse_options({shown});
    FUZZ_CHECK(again.has_value(), shown + " -> " + again.error().message);
    FUZZ_CHECK(same(again->config, r->config), shown);
    FUZZ_CHECK(again->fuse_options == r->fuse_options, shown);
    return 0;
}
