// How much memory the daemon has allocated and not yet freed.
//
// RSS also holds what malloc keeps for reuse after a free (its arenas'
// free chunks), which moves with how many threads allocated at once; the
// bytes in use do not, so a leak shows in them and allocator slack does not.
#pragma once

#include <cstdint>
#include <malloc.h>

namespace overcache {

// Bytes handed out by malloc and not freed: small chunks in the arenas plus
// the large ones malloc mmaps by themselves. Meaningless where malloc is
// not glibc's (a sanitizer's allocator keeps its own counters).
inline std::uint64_t heap_in_use_bytes() noexcept {
    const struct mallinfo2 mi = ::mallinfo2();
    return static_cast<std::uint64_t>(mi.uordblks) + static_cast<std::uint64_t>(mi.hblkhd);
}

} // namespace overcache
