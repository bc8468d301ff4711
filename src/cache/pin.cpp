// DOC: pinned files. A file whose effective user.overcache.pin is 1 (on it
// or the nearest directory above that sets one) has its extents flagged
// kExtentPinned; the Allocator counts each bucket's pinned bytes and never
// reclaims a bucket holding some (moving GC may move them, flag and all).
// The flag is per extent, not looked up per bucket at reclaim, because
// reclaim must stay a walk of bucket slots with no index I/O. A file's
// extents are re-marked when the pin it runs under changes: at an open
// (so a file renamed out of a pinned tree is unpinned at its next open,
// and one renamed in is pinned), and at once when the pin is set or
// removed on the file itself. The record's kFilePinned says how its
// extents are marked, so an open with nothing changed costs nothing.
// Pinned data is capped at half of what reclaim may free
// (Allocator::pinned_cap): pinning more would leave fills and writeback no
// room. Past the cap new fills are cached unpinned (evictable), marking
// stops, prefetches of pinned files fail with ENOSPC saying so, and
// pin_over_cap counts it: pin never fills the cache and never hangs.
#include "cache/pin.hpp"

#include "util/log.hpp"

namespace overcache::cache {

std::uint32_t pin_flag(CacheCore& core, const FileState& st, std::uint64_t len) {
    if (!st.pinned.load(std::memory_order_relaxed))
        return 0;
    if (core.alloc.pinned_bytes() + len <= core.alloc.pinned_cap())
        return meta::kExtentPinned;
    core.c.pin_over_cap += len;
    if (!core.pin_cap_logged.exchange(true))
        log::warn("cache: pinned data reached its cap (", core.alloc.pinned_cap(),
                  " bytes, half of the cache): more of pinned files is cached unpinned");
    return 0;
}

Result<void> apply_pin(CacheCore& core, FileState& st, bool want) {
    st.pinned.store(want);
    if (!st.rec || st.uncached.load())
        return {};
    const bool marked = (st.rec->flags & meta::kFilePinned) != 0;
    if (marked == want)
        return {};
    const std::uint64_t pinned = core.alloc.pinned_bytes();
    const std::uint64_t cap = core.alloc.pinned_cap();
    auto t = core.index.txn();
    auto changed = core.index.stage_pinned(t, st.fid.load(), want, cap > pinned ? cap - pinned : 0);
    if (!changed)
        return fail(changed.error());
    if (auto r = core.index.commit(t); !r)
        return r;
    // Extents first, then the record: see kFilePinned.
    return core.records.set_flags(st, want ? meta::kFilePinned : 0, want ? 0 : meta::kFilePinned);
}

} // namespace overcache::cache
