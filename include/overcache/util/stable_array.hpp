// StableArray: an array that can grow while other threads read it without a
// lock. Elements live in fixed-size chunks behind a directory allocated once
// for the largest index there can be, so growing only adds chunks: no
// element ever moves, and a reader never sees a half-built copy (as it would
// with a vector that reallocates). Made for the allocator's per-bucket gens
// and LRU ticks, read by every hit, while a live resize adds buckets.
//
// Contract: grow() is called by one thread at a time (the owner's lock);
// a reader only touches indices below a size the owner published after the
// grow() that covers them (e.g. a bucket count stored with release and read
// with acquire), which orders the chunk's construction before the read.
// Shrinking is the owner's business (indices past its count are simply not
// read); chunks stay until destruction.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace overcache {

template <typename T, unsigned ChunkBits = 16> class StableArray {
public:
    static constexpr std::size_t kChunk = std::size_t{1} << ChunkBits;

    // `max_size`: the most elements the array will ever hold (the directory
    // is sized for it now: a pointer per chunk).
    explicit StableArray(std::uint64_t max_size)
        : chunks_((max_size + kChunk - 1) / kChunk),
          dir_(std::make_unique<std::atomic<T*>[]>(chunks_)) {
        for (std::size_t i = 0; i < chunks_; ++i)
            dir_[i].store(nullptr, std::memory_order_relaxed);
    }
    StableArray(const StableArray&) = delete;
    StableArray& operator=(const StableArray&) = delete;
    ~StableArray() {
        for (std::size_t i = 0; i < chunks_; ++i)
            delete[] dir_[i].load(std::memory_order_relaxed);
    }

    // Makes indices [0, n) exist; new elements are value-initialised
    // (zero for atomics of integers). Existing ones are left as they are.
    void grow(std::uint64_t n) {
        const std::size_t need = (n + kChunk - 1) / kChunk;
        for (std::size_t i = 0; i < need && i < chunks_; ++i)
            if (dir_[i].load(std::memory_order_relaxed) == nullptr)
                dir_[i].store(new T[kChunk](), std::memory_order_release);
    }

    T& operator[](std::uint64_t i) noexcept {
        return dir_[i >> ChunkBits].load(std::memory_order_acquire)[i & (kChunk - 1)];
    }
    const T& operator[](std::uint64_t i) const noexcept {
        return dir_[i >> ChunkBits].load(std::memory_order_acquire)[i & (kChunk - 1)];
    }

private:
    const std::size_t chunks_;
    std::unique_ptr<std::atomic<T*>[]> dir_;
};

} // namespace overcache
