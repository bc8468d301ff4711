// CacheCore: what the caching path's mechanisms share — the cache device,
// the allocator and its foreground write point, the extent index, the file
// table and records, the counters and the test seams. Each mechanism (the
// read path with its fills, the write path, coherency) lives in its own
// file and works on a CacheCore; caching_path.cpp wires them to DataPath.
#pragma once

#include "cache/dirty_files.hpp"
#include "cache/file_records.hpp"
#include "cache/file_table.hpp"
#include "cache/path_policy.hpp"
#include "overcache/cache/meta_cache.hpp"
#include "cache/working_set.hpp"
#include "overcache/bg/executors.hpp"
#include "overcache/cache/caching_path.hpp"
#include "overcache/cache/extent_index.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/store/error_budget.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_set>

namespace overcache::cache {

using Counter = std::atomic<std::uint64_t>;

struct CacheCounters {
    Counter hits{0}, misses{0}, hit_bytes{0}, miss_bytes{0};
    Counter bypass_hits{0}, bypass_misses{0}, read_errors{0}, stale_reads{0};
    Counter bypass_bytes{0}; // read from the backing past sequential_cutoff, not filled
    Counter fills{0}, fills_skipped_full{0}, fills_raced{0} /* cache_miss_collisions */, fill_errors{0};
    Counter fills_skipped_busy{0};
    Counter fills_skipped_unpromoted{0}; // promote_after_hits not reached yet
    Counter writes_cached{0}, writes_punched{0};
    Counter backing_changes{0}; // changes behind the mount seen before one of ours
    Counter writes_dirty{0}, writes_around{0}; // writeback: into the cache, or around it
    Counter writeback_conflicts{0};
    Counter prefetch_bytes{0}; // filled by `prefetch` (also counted in fills)
    Counter pin_over_cap{0};   // bytes of pinned files cached unpinned: past the pinned cap
    // Reads whose misses, and writes, that went to the backing because the
    // cache device was congested (cache/congestion.hpp).
    Counter congested_bypasses{0};
};

struct CacheCore {
private:
    // The adapter's gate must not go while a parked write runs under its
    // deadline: watch_backing waits until no with_backing_deadline call is
    // running. No lock is held across one (it takes the file's locks).
    mutable std::mutex backing_watch_mu_;
    std::condition_variable backing_watch_idle_;
    BackingWatch backing_watch_;       // guarded by backing_watch_mu_
    unsigned backing_watch_users_ = 0; // guarded: calls of with_deadline or post running
    void end_backing_watch_use();

public:
    CacheCore(std::unique_ptr<store::CacheDevice> device, const CachingParams& params);

    std::unique_ptr<store::CacheDevice> dev;
    const CachingParams p;
    store::Allocator alloc;
    ExtentIndex index;
    FileTable files;
    DirtyFiles dirty;
    FileRecords records;
    PathPolicy policy; // per-path settings (user.overcache.mode, ...)
    MetaCache names;   // directory listings
    store::WritePoint fg_wp{"foreground", false};
    CacheCounters c;
    WorkingSet working_set; // what reads and writes touched (stats)
    // Touches [off, off + len) of `key`'s file in the working set.
    void touched(const meta::FileKey& key, std::uint64_t off, std::uint64_t len) noexcept {
        working_set.touch(key.fsid * 0x9E3779B97F4A7C15ull ^ key.ino, off, len);
    }
    std::atomic<bool> stopped{false};
    std::atomic<bool> pin_cap_logged{false}; // pin.cpp: the cap was reached (logged once)
    // The cache device failed past its error budget: the mount runs as a
    // passthrough (reads and writes go to the backing; the index is still
    // kept coherent so nothing stale can come back).
    std::atomic<bool> degraded{false};
    store::ErrorBudget budget;
    // Counts a cache device error against the budget; past it, degrades.
    void device_error(const Error& e);
    // Tells GC that buckets were taken (set once at start-up).
    std::function<void()> kick_gc = [] {};
    // Writes every dirty byte of a file back now, on the calling thread
    // (the writeback service's; set once at start-up). No lock of the file
    // may be held by the caller.
    std::function<Result<void>(FileState&)> write_back_file;
    // Tells writeback there is new dirty data.
    std::function<void()> kick_writeback = [] {};
    // Until this steady-clock time (ns), writes are parked for want of
    // room: writeback runs as if over its target (no writeback_delay, the
    // full rate), since only clean buckets let them in.
    std::atomic<std::int64_t> room_wanted_until_ns{0};
    // Makes dirty data written so far durable: the cache device, then the
    // index's WAL (data before the entries that point at it).
    Result<void> sync_dirty();

    // The mount's gate, as DataPath::watch_backing gave it (waits for
    // with_backing_deadline callers before it replaces it).
    void watch_backing(BackingWatch w);
    // Whether a backing call the foreground gave up on at its deadline is
    // still running: such a change (a write around the cache, a truncate)
    // may yet land, so writeback copies nothing until it has, and its
    // bytes land after it, never under it. False without a watch.
    bool backing_unsettled() const;
    // Closes a descriptor of the backing on a gate thread when there is a
    // gate (see BackingWatch::post), else here.
    void close_backing_fd(UniqueFd fd);
    // f(), its backing calls under the gate's deadline when there is one
    // (a parked write answered on the park strand): a stalled backing
    // fails them with EIO instead of holding the strand and the request.
    template <class F> auto with_backing_deadline(F&& f) -> decltype(f()) {
        std::function<void(const std::function<void()>&)> run;
        {
            std::lock_guard lk(backing_watch_mu_);
            run = backing_watch_.with_deadline;
            if (run)
                ++backing_watch_users_;
        }
        if (!run)
            return f();
        struct Used {
            CacheCore& core;
            ~Used() { core.end_backing_watch_use(); }
        } used{*this};
        std::optional<decltype(f())> r;
        run([&] { r.emplace(f()); });
        return std::move(*r);
    }

    meta::FileKey key_of(int fd, const struct stat& st);
    // key_of without an fd: known only once key_of has seen st_dev.
    std::optional<meta::FileKey> known_key(dev_t st_dev, ino_t ino);

    // The cache mode a file was last opened under when a per-path policy
    // set it (writeback follows it for that file: writeback_delay only
    // for writeback files, at once for the rest). Forgotten at unmount: a
    // file left dirty is written back under the mount-wide mode next time.
    void note_file_mode(const meta::FileKey& k, std::optional<config::CacheMode> m);
    config::CacheMode file_mode(const meta::FileKey& k) const;
    // Forgets the modes of files neither dirty nor in use (writeback's
    // pass), so the map stays as small as the files that need it.
    void prune_file_modes();

private:
    mutable std::mutex mode_mu_; // a leaf
    std::map<std::pair<std::uint64_t, std::uint64_t>, config::CacheMode>
        file_modes_; // guarded by mode_mu_

    std::mutex fsid_mu_;
    std::unordered_map<dev_t, std::uint64_t> fsids_; // guarded by fsid_mu_
};

} // namespace overcache::cache
