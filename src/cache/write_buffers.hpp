// WriteBuffers: page-aligned buffers for the bytes of writeback writes.
// A write's bytes are copied once, out of the request, into one of these;
// the cache device is written (O_DIRECT) straight from it, and it stays
// with the write until its index commit, which may run on another thread
// (write_path.cpp, commit_dirty). Buffers come back here when the write is
// answered, so a stream of large writes does not map and fault in fresh
// memory for every request.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

namespace overcache::cache {

class WriteBuffers {
public:
    // A buffer of at least the size asked for; goes back to its pool when
    // destroyed.
    class Buffer {
    public:
        Buffer() = default;
        Buffer(Buffer&&) noexcept = default;
        Buffer& operator=(Buffer&& o) noexcept;
        ~Buffer() { give_back(); }
        char* data() const { return p_.get(); }
        std::size_t capacity() const { return cap_; }

    private:
        friend class WriteBuffers;
        void give_back() noexcept;
        std::unique_ptr<char, decltype(&std::free)> p_{nullptr, &std::free};
        std::size_t cap_ = 0;
        WriteBuffers* pool_ = nullptr;
    };

    WriteBuffers() = default;
    WriteBuffers(const WriteBuffers&) = delete;
    WriteBuffers& operator=(const WriteBuffers&) = delete;

    // The smallest kept buffer that holds `size` bytes, else a new one.
    // Throws std::bad_alloc.
    Buffer get(std::size_t size);

private:
    // What the pool keeps when buffers come back: enough for the writes a
    // mount has in flight at once (the FUSE threads', each up to max_write).
    static constexpr std::size_t kKeepBuffers = 64;
    static constexpr std::size_t kKeepBytes = 16u << 20;

    void put(Buffer& b) noexcept;

    std::mutex mu_; // a leaf
    std::vector<Buffer> kept_;
    std::size_t kept_bytes_ = 0;
};

} // namespace overcache::cache
