// Prefetcher: `prefetch PATH` (issue #8) — reads the chunks of a file that
// the cache lacks from the backing and fills them, on a thread of its own,
// one file at a time, the others queued. Pin builds on it.
#pragma once

#include "cache/cache_core.hpp"
#include "cache/cached_file.hpp"
#include "cache/read_path.hpp"
#include "overcache/cache/data_path.hpp"
#include "util/unique_fd.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <sys/stat.h>
#include <thread>
#include <vector>

namespace overcache::cache {

class Prefetcher {
public:
    // What the prefetcher needs of the caching path besides the core.
    struct Deps {
        ReadPath& reader; // the in-flight set and the pending-fill cap
        const CacheHooks& hooks;
        // Opens the file as the adapter would (close-to-open check); runs
        // on the prefetcher's thread.
        std::function<Result<OpenOut>(int fd, const struct stat& st, const FilePolicy& policy)>
            open;
        // Runs a GC pass now and waits for it (room for the next chunk).
        std::function<void()> gc_now;
        // Bytes of clean data the cache can hold now without evicting what
        // this prefetch just filled.
        std::function<std::uint64_t()> room_bytes;
    };

    Prefetcher(CacheCore& core, Deps deps);
    ~Prefetcher() { stop(); }
    Prefetcher(const Prefetcher&) = delete;
    Prefetcher& operator=(const Prefetcher&) = delete;

    // Queues the file (`fd` readable, owned from now on; `st` its fstat).
    // `done` once all of it is cached, or with why not. A file already
    // queued or running is not queued twice: `done` joins that prefetch.
    void enqueue(const meta::FileKey& key, UniqueFd fd, const struct stat& st,
                 const FilePolicy& policy, Done<void> done);

    // Cancels the running prefetch and fails the queued ones (ESHUTDOWN);
    // returns once the thread has ended. Idempotent.
    void stop();

    std::uint64_t queued() const; // files queued or running (stats)

private:
    struct Job {
        meta::FileKey key;
        UniqueFd fd;
        struct stat st {};
        FilePolicy policy;
        std::vector<Done<void>> waiters;
    };

    void loop();
    Result<void> run(Job& job);
    // The chunk [start, end) of file `fid` is all in the cache (dirty
    // extents count: they are the file's newest bytes).
    bool cached(meta::FileId fid, std::uint64_t start, std::uint64_t end);
    bool cancelled() const;

    CacheCore& core_;
    Deps deps_;

    mutable std::mutex mu_; // a leaf
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Job>> queue_; // guarded by mu_
    std::shared_ptr<Job> running_;           // guarded by mu_
    bool stopping_ = false;                  // guarded by mu_
    std::atomic<bool> cancel_{false};        // stopping_, read without mu_
    std::thread thread_;
};

} // namespace overcache::cache
