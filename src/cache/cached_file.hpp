// CachedFile: one open of a file through the caching path — the adapter's
// backing fd (borrowed) and a reference to the file's shared state.
#pragma once

#include "cache/file_table.hpp"
#include "overcache/cache/data_path.hpp"
#include "overcache/cache/stream_detector.hpp"

#include <cstdint>

namespace overcache::cache {

class CachedFile final : public OpenFile {
public:
    // `sync_writes`: opened O_SYNC or O_DSYNC (each write is durable when
    // it returns).
    CachedFile(int fd, StateRef st, bool sync_writes = false)
        : fd_(fd), sync_writes_(sync_writes), st_(std::move(st)) {
        ++st_->opens;
    }
    ~CachedFile() override { --st_->opens; }
    CachedFile(const CachedFile&) = delete;
    CachedFile& operator=(const CachedFile&) = delete;
    int fd() const { return fd_; }
    bool sync_writes() const { return sync_writes_; }
    FileState& state() const { return *st_; }
    const StateRef& ref() const { return st_; }

    // Sequential-stream detection: true once this open's stream has read
    // more than `cutoff` bytes (out-of-order async reads included).
    bool note_read(std::uint64_t off, std::uint64_t len, std::uint64_t cutoff) {
        return streams_.note_read(off, len, cutoff);
    }

private:
    int fd_; // borrowed from the adapter
    const bool sync_writes_;
    StateRef st_;
    StreamDetector streams_; // thread-safe: FUSE threads read one open concurrently
};

} // namespace overcache::cache
