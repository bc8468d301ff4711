// ParkedWrites: writeback-mode writes that found no cache space, waiting
// for it without a FUSE thread and without any lock of their file. Each
// owns what it needs until it is answered (its bytes, a dup of the
// request's fd, a reference to the file's state), so neither the request's
// buffer nor its open has to outlive the FUSE handler. Waiters are retried
// in FIFO order, on a strand of a foreground-class executor, when space may
// have appeared (buckets freed, a periodic recheck); at its deadline a
// waiter is written around the cache. While any write is parked, new writes
// park behind it: acknowledgements follow the order writes took effect
// (a newer write of the same range wins), and a fresh write cannot take
// the room an older waiter was woken for.
#pragma once

#include "cache/cached_file.hpp"
#include "overcache/bg/executors.hpp"
#include "util/unique_fd.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace overcache::cache {

struct ParkedWrite {
    using Clock = std::chrono::steady_clock;
    UniqueFd fd;                      // a dup of the request's backing fd
    std::unique_ptr<CachedFile> file; // on `fd`; declared after it, so destroyed first
    std::vector<char> data;
    std::uint64_t off = 0;
    bool stamp = true; // write_dirty's: the write sets the mtime
    Done<std::size_t> done;
    Clock::time_point parked_at{};
    Clock::time_point deadline{};
};

struct ParkedStats {
    std::uint64_t waits = 0;          // writes ever parked
    std::uint64_t waiting = 0;        // parked now
    std::uint64_t written_around = 0; // parked writes that ended around the cache
    std::uint64_t wait_max_ms = 0;    // the longest wait that has ended
};

class ParkedWrites {
public:
    // What a retry of a waiter found.
    struct Tried {
        enum class Kind {
            cached,       // its bytes are in the cache: answer with `answer`
            no_room,      // still no room: it keeps waiting
            not_cacheable // the cache cannot take it any more: around it, now
        } kind = Kind::no_room;
        Result<std::size_t> answer; // for cached: bytes, or an error (a failed sync)
    };
    struct Ops {
        std::function<Tried(ParkedWrite&)> try_cache;
        // Writes the waiter around the cache to the backing: the answer.
        std::function<Result<std::size_t>(ParkedWrite&)> write_around;
        // Asks GC and writeback to make room.
        std::function<void()> make_room;
        // Closes an answered waiter's dup of the request's fd (a FUSE or
        // NFS backing answers every close, a stalled one never); unset:
        // closed here.
        std::function<void(UniqueFd)> close_fd;
    };

    // Everything runs on `strand` (a foreground-class executor: never
    // writeback's or GC's, which must not do foreground work).
    ParkedWrites(bg::Strand strand, std::chrono::nanoseconds wait_max, Ops ops);

    // writeback_wait_max changed: writes parked from now on wait this long
    // (those parked already keep their deadline).
    void set_wait_max(std::chrono::nanoseconds wait_max) noexcept {
        wait_max_ns_.store(wait_max.count(), std::memory_order_relaxed);
    }
    ~ParkedWrites();
    ParkedWrites(const ParkedWrites&) = delete;
    ParkedWrites& operator=(const ParkedWrites&) = delete;

    // True while any write is parked (or being answered): a new write
    // parks behind it.
    bool any_parked() const;
    // Queues `w` (its deadline set here) behind every parked write. false
    // after stop(): the caller answers `w` itself.
    bool park(std::unique_ptr<ParkedWrite>& w);
    // Space may have appeared: retry soon. Cheap, callable from any thread
    // (and with the Allocator's commit lock held: it only posts).
    void wake();
    // Answers every parked write (around the cache) and parks no more.
    // Waits for the strand; never call it from the strand's executor.
    void stop();

    ParkedStats stats() const;

private:
    void process();                // on the strand
    void arm();                    // on the strand
    // Takes the head off the queue and answers it with `r` (on the strand).
    void answer(std::unique_ptr<ParkedWrite> w, Result<std::size_t> r, bool around);

    bg::Strand strand_;
    std::atomic<std::int64_t> wait_max_ns_; // set_wait_max: a live setting
    const Ops ops_;
    bg::StrandTimer timer_; // on the strand
    std::atomic<bool> woken_{false};

    mutable std::mutex mu_; // a leaf: held for queue changes only, never across I/O
    bool stopping_ = false;                                // guarded by mu_
    // guarded by mu_; popped on the strand, only once its head is answered
    std::deque<std::unique_ptr<ParkedWrite>> queue_;
    ParkedStats stats_; // guarded by mu_
};

} // namespace overcache::cache
