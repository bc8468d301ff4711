// Fills: putting bytes read from the backing into the cache as clean
// extents. The read path's fills after a miss and the prefetcher's chunks
// both commit through commit_fill, so one set of race rules guards them.
#pragma once

#include "cache/cache_core.hpp"
#include "cache/file_table.hpp"

#include <cstdint>
#include <span>

namespace overcache::cache {

// What a fill must still find when it commits, taken before its backing
// read: a write, a truncate or a detected backing change in between moves
// one of them.
struct FillTicket {
    meta::FileId fid = 0;
    std::uint64_t epoch = 0;
    std::uint64_t seq = 0;
};

inline FillTicket fill_ticket(const FileState& st) {
    return FillTicket{st.fid.load(), st.epoch.load(), st.write_seq.load()};
}

enum class FillOutcome {
    filled, // committed as a clean extent
    raced,  // the file changed since the ticket, or has dirty data: nothing inserted
    full,   // no free bucket
    failed, // the cache device or the index refused (counted, logged)
};

// Inserts `data` (the backing's bytes at `start`) as a clean extent of the
// file, under its owner lock, if the ticket still holds and the file has
// no dirty data (the backing's bytes may be older than a dirty extent).
// Counts fills, fills_raced, fills_skipped_full and fill_errors.
FillOutcome commit_fill(CacheCore& core, FileState& st, const FillTicket& t, std::uint64_t start,
                        std::span<const char> data);

} // namespace overcache::cache
