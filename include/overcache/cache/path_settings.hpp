// Per-path policy (issue #8): the settings a file or directory carries as
// user.overcache.{mode,sequential_cutoff,promote_after_hits,pin}. Each field is
// unset (inherit) or a value; a file runs under the nearest value on its
// path (the file, its parent, ..., the root), and the mount's where nothing
// on the path sets one.
#pragma once

#include "overcache/config/config.hpp"

#include <cstdint>
#include <optional>
#include <span>

namespace overcache::cache {

struct PathSettings {
    std::optional<config::CacheMode> mode;
    std::optional<std::uint64_t> sequential_cutoff;
    std::optional<unsigned> promote_after_hits;
    // Keep the file's data cached (fetched in the background, never
    // evicted); 0 on a file or directory below a pinned one unpins it.
    std::optional<bool> pin;

    bool empty() const noexcept {
        return !mode && !sequential_cutoff && !promote_after_hits && !pin;
    }
    bool operator==(const PathSettings&) const = default;
};

// What one open runs under: resolved settings, where an unset field means
// the mount-wide value, read live at each use (so a `set` still reaches a
// file nothing overrides).
using FilePolicy = PathSettings;

// Resolves a path's settings, nearest first: each field from the first
// entry that sets it.
inline FilePolicy resolve(std::span<const PathSettings> nearest_first) noexcept {
    FilePolicy out;
    for (const PathSettings& s : nearest_first) {
        if (!out.mode)
            out.mode = s.mode;
        if (!out.sequential_cutoff)
            out.sequential_cutoff = s.sequential_cutoff;
        if (!out.promote_after_hits)
            out.promote_after_hits = s.promote_after_hits;
        if (!out.pin)
            out.pin = s.pin;
    }
    return out;
}

} // namespace overcache::cache
