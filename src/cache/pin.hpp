// Pinned files (user.overcache.pin): which extents a change marks
// kExtentPinned, and re-marking a file's extents when its effective pin
// changes. The policy (which files are pinned) is PathPolicy's; keeping
// pinned buckets is the Allocator's.
#pragma once

#include "cache/cache_core.hpp"
#include "cache/file_table.hpp"

#include <cstdint>

namespace overcache::cache {

// The flag for `len` new bytes of the file: kExtentPinned if the file is
// pinned and the pinned data stays within Allocator::pinned_cap(), else 0
// (counted in pin_over_cap, logged once a mount).
std::uint32_t pin_flag(CacheCore& core, const FileState& st, std::uint64_t len);

// Sets the file's pin to `want` (st.mu held, st.rec loaded): st.pinned,
// and, if the record says its extents are marked otherwise, re-marks them
// (within the cap) and then the record's kFilePinned.
Result<void> apply_pin(CacheCore& core, FileState& st, bool want);

} // namespace overcache::cache
