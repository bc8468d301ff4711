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
    CachedFile(int fd, StateRef st) : fd_(fd), st_(std::move(st)) {}
    int fd() const { return fd_; }
    FileState& state() const { return *st_; }
    const StateRef& ref() const { return st_; }

    // Sequential-stream detection: true once this open's stream has read
    // more than `cutoff` bytes (out-of-order async reads included).
    bool note_read(std::uint64_t off, std::uint64_t len, std::uint64_t cutoff) {
        return streams_.note_read(off, len, cutoff);
    }

private:
    int fd_; // borrowed from the adapter
    StateRef st_;
    StreamDetector streams_; // thread-safe: FUSE threads read one open concurrently
};

} // namespace overcache::cache
