// Saving dirty data that cannot go where it belongs: the backing file was
// changed behind the mount while the cache held dirty data for it (another
// NFS client wrote it), or it is gone. Neither version may be lost: the
// backing keeps its own, and ours is written beside the cache, under
// lost_found_dir, as a sparse file holding the dirty ranges at their
// offsets, sized as the mount showed the file.
#pragma once

#include "cache/cache_core.hpp"

#include <string>

namespace overcache::cache {

// Writes the dirty extents of `st` (st.mu held, st.rec set) to a new file
// in `dir` named after the file's path (or its FileId) and the time, and
// syncs it. Returns the new file's path.
Result<std::string> save_dirty_copy(CacheCore& core, FileState& st, const std::string& dir);

} // namespace overcache::cache
