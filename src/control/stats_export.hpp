// The control file's statistics in other formats: JSON for scripts and
// Prometheus' text exposition format for node_exporter's textfile collector.
// Pure functions over the parsed `key value` lines; the CLI (overcache
// stats --json / --prometheus) reads the control file and prints these.
#pragma once

#include "control/stats_text.hpp"

#include <string>
#include <string_view>

namespace overcache::control {

// The control file's text back into pairs: each non-empty line split at its
// first space (a line without one is a key with an empty value).
StatLines parse_stats(std::string_view text);

// One JSON object, keys in the control file's order: a value that is a
// number is a JSON number, "-" (nothing) is null, anything else a string.
// Ends with a newline.
std::string render_json(const StatLines& lines);

// Prometheus text format, every series labelled mountpoint="...":
//   counters (is_counter())      overcache_KEY_total, TYPE counter
//   other numbers                overcache_KEY, TYPE gauge; _ms and _us keys
//                                in _seconds, cache_hit_ratio as a fraction
//                                (0..1), a _total suffix dropped
//   WINDOW.KEY (stat_windows)    overcache_window_KEY{window="WINDOW"}, gauge
//   cache_mode, cache_state      labels of overcache_info, value 1
//   "max" (no limit)             +Inf
// Other text values are left out. Names are sanitized to [a-zA-Z0-9_];
// label values escaped (\\, \", \n). Every family has HELP and TYPE lines.
std::string render_prometheus(const StatLines& lines, std::string_view mountpoint);

} // namespace overcache::control
