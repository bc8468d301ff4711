// A page-aligned buffer per thread and per Tag, grown on demand and kept: no
// allocation on a hot path once a thread has handled its largest request.
// Page-aligned because the cache device is written O_DIRECT straight from
// such buffers; an unaligned one would be copied once more, through the
// device's bounce buffer. Each Tag is a buffer of its own, so that a caller
// holding one may call code that uses another.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace overcache {

// At least `size` bytes, valid until this thread asks for the Tag again.
// Throws std::bad_alloc.
template <class Tag> char* thread_buffer(std::size_t size) {
    constexpr std::size_t kAlign = 4096;
    struct Buffer {
        std::unique_ptr<char, decltype(&std::free)> p{nullptr, &std::free};
        std::size_t cap = 0;
    };
    thread_local Buffer b;
    if (b.cap < size) {
        const std::size_t cap = (size + kAlign - 1) / kAlign * kAlign;
        char* p = static_cast<char*>(std::aligned_alloc(kAlign, cap));
        if (p == nullptr)
            throw std::bad_alloc();
        b.p.reset(p);
        b.cap = cap;
    }
    return b.p.get();
}

} // namespace overcache
