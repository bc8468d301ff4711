// LiveResize: `set cache_size` on a mounted cache, grow or shrink, one at a
// time, on its own strand of the GC executor (never a FUSE thread: the
// control write that asked is answered from `done`). A shrink that cannot
// keep the dirty and pinned data below the new end is refused up front
// with nothing changed, and stopped (the retiring buckets back in use) if
// new dirty data makes it stop fitting midway.
#pragma once

#include "cache/cache_core.hpp"
#include "overcache/bg/executors.hpp"
#include "overcache/bg/gc.hpp"
#include "overcache/cache/data_path.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

namespace overcache::cache {

class LiveResize {
public:
    // `changed` runs after the count changed (the caller's watermarks and
    // reserve follow it), on the strand.
    LiveResize(CacheCore& core, bg::Gc& gc, bg::Strand strand, std::function<void()> changed);
    ~LiveResize() { stop(); }
    LiveResize(const LiveResize&) = delete;
    LiveResize& operator=(const LiveResize&) = delete;

    // Any thread; never waits. `done` gets the new size in bytes.
    void resize(std::uint64_t size, Done<std::uint64_t> done);
    // A resize in flight stops (a shrink gives its buckets back; `done`
    // gets ESHUTDOWN) and this waits for it. Call from outside the strand.
    void stop();

    // How long a shrink waits for retiring buckets that make no progress
    // (writes in flight, extents that keep changing) before it gives up.
    std::chrono::milliseconds stall_limit{30000};
    // Test seam: runs on the strand between two evacuation rounds of a
    // shrink, with how many retiring buckets are still busy.
    std::function<void(std::size_t busy)> between_rounds;

private:
    void run(std::uint64_t size);
    Result<std::uint64_t> grow(std::uint64_t size);
    // The gens the new buckets [old, n) must start at: one past the highest
    // gen of any extent entry naming their number (a read-only scan).
    Result<std::vector<std::uint32_t>> gens_above_stale(std::uint32_t old, std::uint32_t n);
    void shrink_round();  // on the strand
    void shrink_finish(); // every retiring bucket is free
    void retry_later(std::chrono::milliseconds after);
    void end(Result<std::uint64_t> r); // answers, marks idle

    CacheCore& core_;
    bg::Gc& gc_;
    bg::Strand strand_;
    std::function<void()> changed_;
    bg::StrandTimer timer_; // strand
    // The resize in flight (strand, once started).
    std::uint64_t target_ = 0;
    std::uint32_t keep_ = 0;
    std::size_t last_busy_ = 0;
    std::chrono::steady_clock::time_point progress_at_;
    Done<std::uint64_t> done_;

    std::mutex mu_;
    std::condition_variable idle_cv_;
    bool active_ = false;   // guarded by mu_
    bool stopping_ = false; // guarded by mu_
};

} // namespace overcache::cache
