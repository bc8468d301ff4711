// The readable table of `overcache stats MOUNTPOINT`: the hit ratio and the
// counters over the windows (five minutes, hour, day, since the mount) at a
// glance, then the cache's space, buckets and writeback, sizes in binary
// units. Pure: from the control file's lines to text.
#pragma once

#include "control/stats_text.hpp"

#include <string>

namespace overcache::cli {

std::string render_table(const control::StatLines& lines, const std::string& mountpoint);

} // namespace overcache::cli
