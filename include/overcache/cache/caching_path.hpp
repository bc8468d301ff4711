// The caching DataPath of issue #3: reads through the cache device, fills on
// the foreground executor, reclaim on the GC executor.
#pragma once

#include "overcache/cache/data_path.hpp"
#include "overcache/config/config.hpp"
#include "overcache/store/cache_device.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace overcache::cache {

struct CachingParams {
    config::CacheMode mode = config::CacheMode::writethrough; // writethrough or writearound
    std::uint64_t fill_size = 256u << 10;                     // clamped to bucket_size
    std::uint64_t sequential_cutoff = 4u << 20;
    unsigned gc_low_percent = 5;
    unsigned gc_high_percent = 10;
    // Fills waiting for the foreground executor hold at most this much
    // memory; past it misses are served without filling.
    std::uint64_t max_pending_fill_bytes = 64u << 20;
};

std::unique_ptr<DataPath> make_caching_path(std::unique_ptr<store::CacheDevice> dev,
                                            const CachingParams& p);

// Extra control for tests and the later control surface: the caching path's
// DataPath also implements this.
class CacheControl {
public:
    virtual ~CacheControl() = default;
    // Runs a GC pass now and waits for queued fills and GC work to finish.
    virtual void gc_now() = 0;
    // Waits until every fill queued so far has finished.
    virtual void drain_fills() = 0;
};

// The default cache directory of a mount: /var/cache/overcache/<escaped
// mountpoint> for root, $XDG_CACHE_HOME/overcache/<...> (or
// ~/.cache/overcache/<...>) otherwise. The escaping is systemd-escape
// --path's: "/mnt/a-b" -> "mnt-a\x2db".
std::string default_cache_dir(const std::string& mountpoint);
std::string escape_path(const std::string& path);

} // namespace overcache::cache
