// MetaBudget: keeps the names and attributes the index keeps of the backing
// (MetaCache) within `metadata_max` (0: an eighth of cache_size, at least
// 16 MiB), so that they are bounded by the cache's size rules, not by how
// big a tree was walked. It looks at their size every few seconds and, past
// the budget, trims them to four fifths of it (the oldest readings go
// first; pinned trees stay). It runs on the meta executor: a trim of
// millions of records never holds up GC or a request.
#pragma once

#include "cache/cache_core.hpp"
#include "overcache/bg/executors.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace overcache::cache {

class MetaBudget {
public:
    MetaBudget(CacheCore& core, bg::Strand strand);
    // Arms the first look. Once.
    void start();
    // Cancels the timer; a trim in flight stops at its next record. Returns
    // once nothing of it runs. The strand's executor must be running.
    void stop();
    // Looks now (the `gc` command), as well as on the timer.
    void check_now();
    // The budget in bytes, as it stands (cache_size may change live).
    std::uint64_t budget() const;

private:
    void arm();
    void check(); // on the strand

    CacheCore& core_;
    bg::Strand strand_;
    bg::StrandTimer timer_; // strand
    std::mutex mu_;
    bool stopping_ = false; // guarded by mu_
    // The size a trim left while still over the budget (0: none did); the
    // strand's.
    std::uint64_t over_after_ = 0;
};

} // namespace overcache::cache
