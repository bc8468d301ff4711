// Fetching files into a mount's cache with a progress line: `prefetch` and
// `pin` share it (prefetch.cpp).
#pragma once

#include <string>
#include <vector>

namespace overcache::cli {

// Runs the mount's `prefetch` command for each regular file of `paths`
// (directories walked), one at a time, with a progress line on a terminal
// ("overcache: VERB: ..."). `cmd` names the subcommand in messages. Returns
// `rc`, or 1 when any path or file failed (each reported on stderr).
int fetch_files(const char* cmd, const char* verb, const std::vector<std::string>& paths, int rc);

} // namespace overcache::cli
