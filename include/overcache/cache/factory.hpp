// Builds the DataPath a mount uses from its Config.
#pragma once

#include "overcache/bg/executors.hpp"
#include "overcache/cache/data_path.hpp"
#include "overcache/config/config.hpp"

#include <memory>
#include <string>

namespace overcache::cache {

struct MountPaths {
    std::string backing;    // absolute path of the backing directory
    std::string mountpoint; // absolute path of the mountpoint
    int backing_fd = -1;    // O_PATH fd of the backing root, borrowed
};

// Opens (or formats) the cache a mount will use and starts its background
// executors. Fails with a message naming the problem (a foreign or damaged
// cache, a bad location) without changing anything on disk.
// Must be called after daemonizing: it starts threads.
// Background work runs on `ex`, which outlives the DataPath.
Result<std::unique_ptr<DataPath>> open_data_path(const config::Config& cfg,
                                                 const MountPaths& paths, bg::Executors& ex);

// A DataPath that serves every read from the backing (cache_mode=none and
// the fallback while there is no cache).
std::unique_ptr<DataPath> make_passthrough();

} // namespace overcache::cache
