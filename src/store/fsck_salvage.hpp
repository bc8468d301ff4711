// fsck's copies of dirty bytes it is about to drop: CACHEDIR/lost+found/
// fsck-<fileid>-<offset> holding the bytes as the data device has them, and
// fsck-<fileid>-<offset>.txt saying whose they are and why they were dropped.
#pragma once

#include "overcache/util/result.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace overcache::store {

struct Salvage {
    std::uint64_t file_id = 0;
    std::uint64_t offset = 0; // in the file
    std::uint64_t len = 0;    // what the index says
    std::string file_path;    // from the FileRecord; empty: unknown
    std::string why;          // "fails its checksum", ...
    bool readable = true;     // false: no bytes to copy (the .txt says so)
    std::vector<char> bytes;  // as read back
};

// Writes and fsyncs the copy and its note under `lost_found` (made 0700 if
// missing; its directory synced), never replacing an earlier copy (a
// ".N" suffix instead). Returns the path of the copy (or of the note when
// there were no bytes).
Result<std::string> save_salvage(const std::string& lost_found, const Salvage& s);

} // namespace overcache::store
