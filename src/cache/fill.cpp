// DOC: the commit of a fill, shared by the read path and the prefetcher.
// The ticket (FileId, epoch, write_seq) is read before the backing read and
// compared under the file's owner lock at commit, so a fill can never put
// older bytes over newer ones: a write, a truncate or a detected backing
// change in between makes it stand down (fills_raced, bcache's
// cache_miss_collisions). A file with dirty data is never filled.
#include "cache/fill.hpp"

#include "cache/pin.hpp"
#include "util/log.hpp"

#include <mutex>

namespace overcache::cache {

FillOutcome commit_fill(CacheCore& core, FileState& st, const FillTicket& t, std::uint64_t start,
                        std::span<const char> data) {
    std::lock_guard lk(st.mu);
    if (st.uncached.load() || core.degraded.load() || st.ahead.load() || st.fid.load() != t.fid ||
        st.epoch.load() != t.epoch || st.write_seq.load() != t.seq) {
        ++core.c.fills_raced;
        return FillOutcome::raced;
    }
    auto txn = core.index.txn();
    auto r = core.index.stage_insert(txn, core.fg_wp, t.fid, start, data.data(),
                                     static_cast<std::uint32_t>(data.size()),
                                     pin_flag(core, st, data.size()));
    if (r && *r)
        if (auto c = core.index.commit(txn); !c)
            r = fail(c.error());
    if (!r) {
        ++core.c.fill_errors;
        log::warn("cache: fill failed: ", to_string(r.error()));
        return FillOutcome::failed;
    }
    if (!*r) {
        ++core.c.fills_skipped_full;
        return FillOutcome::full;
    }
    ++core.c.fills;
    return FillOutcome::filled;
}

} // namespace overcache::cache
