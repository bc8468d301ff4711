// A file's backing lock (FileState::backing_mu) as a request takes it.
// Writeback holds it across its copies, on a thread of its own that calls
// the backing without a deadline; a backing that stops answering then keeps
// it held until it answers again. A request thread (one in a RequestScope
// over a gate) waits for it only while the backing still answers, and then
// fails with EIO; threads without a scope (writeback, GC) wait as long as
// it takes.
#pragma once

#include "backing/request_scope.hpp"
#include "cache/file_table.hpp"
#include "overcache/util/result.hpp"

#include <cerrno>
#include <mutex>

namespace overcache::cache {

using BackingLock = std::unique_lock<std::timed_mutex>;

inline Result<BackingLock> lock_backing(FileState& st) {
    if (auto* scope = backing::RequestScope::active()) {
        if (!scope->lock(st.backing_mu))
            return fail_sys(EIO, "the backing stopped answering while writeback held the file");
        return BackingLock(st.backing_mu, std::adopt_lock);
    }
    return BackingLock(st.backing_mu);
}

} // namespace overcache::cache
