// CachedFile: one open of a file through the caching path — the adapter's
// backing fd (borrowed) and a reference to the file's shared state. An open
// made without the backing has no fd: offline, for good; from kept
// attributes (`lazy`), until the adapter attaches one at the first request
// the cache cannot answer alone.
#pragma once

#include "cache/file_table.hpp"
#include "overcache/cache/data_path.hpp"
#include "overcache/cache/stream_detector.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace overcache::cache {

class CachedFile final : public OpenFile {
public:
    // `sync_writes`: opened O_SYNC or O_DSYNC (each write is durable when
    // it returns).
    CachedFile(int fd, StateRef st, bool sync_writes = false, FilePolicy policy = {},
               bool lazy = false)
        : fd_(fd), lazy_(lazy), sync_writes_(sync_writes), policy_(policy), st_(std::move(st)) {
        ++st_->opens;
    }
    ~CachedFile() override { --st_->opens; }
    CachedFile(const CachedFile&) = delete;
    CachedFile& operator=(const CachedFile&) = delete;
    // -1 until a backing fd is attached (an open without the backing).
    int fd() const { return fd_.load(std::memory_order_acquire); }
    // Opened from kept attributes: a request the cache cannot answer alone
    // asks for the backing (ReadOut::needs_backing) instead of failing.
    bool lazy() const { return lazy_; }
    // The backing fd of a lazy open, once; the adapter keeps it open.
    void attach(int fd) { fd_.store(fd, std::memory_order_release); }
    bool sync_writes() const { return sync_writes_; }
    FileState& state() const { return *st_; }
    // Per-path settings of this open; unset fields are the mount's, read live.
    const FilePolicy& policy() const { return policy_; }
    const StateRef& ref() const { return st_; }

    // Sequential-stream detection: true once this open's stream has read
    // more than `cutoff` bytes (out-of-order async reads included).
    bool note_read(std::uint64_t off, std::uint64_t len, std::uint64_t cutoff) {
        return streams_.note_read(off, len, cutoff);
    }

    // Whether this open's miss of `chunk` counts for promote_after_hits: a
    // stream reading a chunk in several requests, even out of order (the
    // kernel sends reads of one file on several threads), counts one miss,
    // not one a request. A miss of a chunk this open missed less than
    // kSamePass ago does not count; the last kRecentMisses chunks missed are
    // remembered, far more than the requests the kernel keeps in flight.
    bool first_miss_of(std::uint64_t chunk) {
        const auto now = std::chrono::steady_clock::now();
        std::lock_guard lk(recent_mu_);
        for (const auto& r : recent_)
            if (r.chunk == chunk && now - r.at < kSamePass)
                return false;
        recent_[recent_next_++ % kRecentMisses] = Recent{chunk, now};
        return true;
    }

private:
    std::atomic<int> fd_; // borrowed from the adapter; set once
    const bool lazy_;
    const bool sync_writes_;
    const FilePolicy policy_;
    StateRef st_;
    StreamDetector streams_; // thread-safe: FUSE threads read one open concurrently
    static constexpr std::size_t kRecentMisses = 64;
    static constexpr std::chrono::seconds kSamePass{1};
    struct Recent {
        std::uint64_t chunk = ~std::uint64_t{0};
        std::chrono::steady_clock::time_point at{};
    };
    std::mutex recent_mu_;                         // a leaf
    std::array<Recent, kRecentMisses> recent_{};   // guarded by recent_mu_
    std::size_t recent_next_ = 0;                  // guarded by recent_mu_
};

} // namespace overcache::cache
