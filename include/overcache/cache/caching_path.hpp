// The caching DataPath of issue #3: reads through the cache device, fills on
// the foreground executor, reclaim on the GC executor.
#pragma once

#include "overcache/bg/executors.hpp"
#include "overcache/cache/data_path.hpp"
#include "overcache/config/config.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/util/tunable.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>
#include <memory>
#include <string>

namespace overcache::cache {

struct FileState;

struct CachingParams {
    // Tunable: fields a mounted cache takes new values of (apply_settings).
    Tunable<config::CacheMode> mode = config::CacheMode::writethrough;
    Tunable<std::uint64_t> fill_size = 256u << 10; // at most the cache's bucket_size
    Tunable<std::uint64_t> sequential_cutoff = 4u << 20;
    Tunable<unsigned> promote_after_hits = 1u; // misses of a range before it is cached
    // Congestion bypass (cache/congestion.hpp): microseconds of smoothed
    // cache device latency past which I/O goes to the backing; 0: never.
    Tunable<unsigned> congested_read_threshold_us = 2000u;
    Tunable<unsigned> congested_write_threshold_us = 20000u;
    Tunable<unsigned> gc_low_percent = 5u;
    Tunable<unsigned> gc_high_percent = 10u;
    // Which clean buckets GC reclaims first (the allocator's policy).
    Tunable<config::ReplacementPolicy> replacement_policy = config::ReplacementPolicy::lru;
    // Fills waiting for the foreground executor hold at most this much
    // memory; past it misses are served without filling.
    std::uint64_t max_pending_fill_bytes = 64u << 20;
    // The backing root's absolute path: file records keep paths below it.
    std::string backing_root;
    // A directory changed less than this long before it is read is not
    // kept as a whole listing (cache/meta_cache.hpp): dir_settle.
    std::chrono::nanoseconds dir_settle = std::chrono::seconds(2);
    // Cache device errors tolerated (decaying by half every
    // io_error_halflife_s) before the mount stops using the cache.
    unsigned io_error_limit = 8;
    unsigned io_error_halflife_s = 60;

    // Writeback (cache_mode=writeback); names and meanings as bcache's.
    Tunable<unsigned> writeback_percent = 10u; // dirty share of the cache before full speed
    Tunable<double> writeback_delay_s = 30.0; // a dirty extent ages this long first
    Tunable<std::uint64_t> writeback_rate_minimum = 1u << 20; // bytes/s while below the target
    Tunable<bool> writeback_running = true; // false: writeback paused
    Tunable<bool> fsync_to_backing = false; // fsync writes the file back and syncs the backing
    Tunable<bool> flush_on_unmount = false; // stop() writes everything back first
    Tunable<double> writeback_wait_max_s = 10.0; // a write waits this long for space, then goes around
    // Where dirty data that cannot be written back goes (conflicts, files
    // gone from the backing): CACHE_DIR/lost+found.
    std::string lost_found_dir;
    // A live shrink whose retiring buckets make no progress for this long
    // (writes in flight that do not end, data that cannot move) gives up.
    unsigned resize_stall_limit_ms = 30000;
    // The most the kept names and attributes may take in the index; 0: an
    // eighth of cache_size (at least 16 MiB).
    std::uint64_t metadata_max = 0;
};

// Seams where tests force an interleaving; each runs, when set, at the
// named point (with the file's owner lock held where noted).
struct CacheHooks {
    // A fill is about to take the file's owner lock and commit.
    std::function<void()> before_fill_commit;
    // A thread is about to commit a group of `n` queued writeback writes
    // (the first group it commits holds its own write); writes that come
    // meanwhile queue, and it commits and answers them after.
    std::function<void(std::size_t n)> before_dirty_commit;
    // A writeback write joined its file's commit queue, now `n` long
    // (called with the queue's lock held: it must not block).
    std::function<void(std::size_t n)> dirty_queued;
    // A write has reached the backing, before the cache follows (write_mu held).
    std::function<void()> after_backing_write;
    // A record was compared with the backing, nothing written yet (owner lock held).
    std::function<void()> after_compare;
    // A fill's bytes are on the cache device, its bucket pinned, nothing committed.
    std::function<void(std::uint32_t bucket)> after_device_write;
    // GC picked victims and is about to bump their gens.
    std::function<void(const std::vector<std::uint32_t>&)> before_reclaim;
    // A writeback batch chose its extents and marked the record; nothing is
    // copied yet (the file's backing_mu held, its owner lock not).
    std::function<void(FileState&)> before_writeback_copy;
    // A writeback batch is about to start at file offset `from` (no lock of
    // the file held): between two batches of one pass when from > 0.
    std::function<void(FileState&, std::uint64_t from)> before_writeback_batch;
    // An unlink through the mount took the file's write lock and wrote back
    // what an open file needed; its record is not dropped yet.
    std::function<void()> before_unlinked_drop;
    // A live shrink finished an evacuation round with `busy` retiring
    // buckets still in use and is about to try again (its strand, no lock).
    std::function<void(std::size_t busy)> between_resize_rounds;
};

// Fills run on ex.fill(), reclaim on ex.gc(); `ex` outlives the DataPath
// and keeps running until after its stop().
std::unique_ptr<DataPath> make_caching_path(std::unique_ptr<store::CacheDevice> dev,
                                            const CachingParams& p, bg::Executors& ex,
                                            CacheHooks hooks = {});

// Extra control for tests and the later control surface: the caching path's
// DataPath also implements this.
class CacheControl {
public:
    virtual ~CacheControl() = default;
    // Runs a GC pass now and waits for queued fills and GC work to finish.
    virtual void gc_now() = 0;
    // Waits until every fill queued so far has finished.
    virtual void drain_fills() = 0;
    // Runs a writeback pass now (settings apply: delay, rate) and waits for it.
    virtual void writeback_now() = 0;
};

// The default cache directory of a mount: /var/cache/overcache/<escaped
// mountpoint> for root, $XDG_CACHE_HOME/overcache/<...> (or
// ~/.cache/overcache/<...>) otherwise. The name stays typable: "/" becomes
// "-" and "-" becomes "--" ("/srv/my-data/fast" -> "srv-my--data-fast"),
// letters, digits and . _ : + , @ = stay, anything else is %XX. A cache under
// the name earlier versions used ("mnt-a\x2db") is still found there.
std::string default_cache_dir(const std::string& mountpoint);
std::string escape_path(const std::string& path);

} // namespace overcache::cache
