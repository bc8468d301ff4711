// CachedFile: one open of a file through the caching path — the adapter's
// backing fd (borrowed) and a reference to the file's shared state.
#pragma once

#include "cache/file_table.hpp"
#include "overcache/cache/data_path.hpp"

#include <cstdint>
#include <mutex>

namespace overcache::cache {

class CachedFile final : public OpenFile {
public:
    CachedFile(int fd, StateRef st) : fd_(fd), st_(std::move(st)) {}
    int fd() const { return fd_; }
    FileState& state() const { return *st_; }
    const StateRef& ref() const { return st_; }

    // Sequential-stream detection: true once this open has read more than
    // `cutoff` bytes in a row without a seek.
    bool note_read(std::uint64_t off, std::uint64_t len, std::uint64_t cutoff) {
        std::lock_guard lk(mu_);
        seq_bytes_ = off == next_off_ ? seq_bytes_ + len : len;
        next_off_ = off + len;
        return cutoff != 0 && seq_bytes_ > cutoff;
    }

private:
    int fd_; // borrowed from the adapter
    StateRef st_;
    std::mutex mu_; // FUSE threads may read one open concurrently
    std::uint64_t next_off_ = 0;
    std::uint64_t seq_bytes_ = 0;
};

} // namespace overcache::cache
