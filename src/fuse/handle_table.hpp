// The handles the kernel holds (fuse_file_info::fh) for open files and
// directories, owned here until their RELEASE. A RELEASE still queued when
// the mount goes away is never delivered: such a handle is freed with the
// table (the adapter) instead of leaking, and with it the DataPath's state
// for the open, before the cache stops.
#pragma once

#include <memory>
#include <mutex>
#include <unordered_map>

namespace overcache::fuse {

template <class Handle>
class HandleTable {
public:
    // Takes the handle; the pointer is what the kernel gets. Adopt before
    // the reply that hands it out: RELEASE may follow the reply at once.
    Handle* adopt(std::unique_ptr<Handle> h) {
        Handle* p = h.get();
        std::lock_guard lk(mu_);
        owned_.emplace(p, std::move(h));
        return p;
    }

    // The handle back, at RELEASE or when the reply that would have handed
    // it out failed; empty for a pointer the table does not hold. The
    // caller frees it, outside the table's lock.
    std::unique_ptr<Handle> take(const Handle* p) {
        std::lock_guard lk(mu_);
        auto it = owned_.find(p);
        if (it == owned_.end())
            return nullptr;
        std::unique_ptr<Handle> h = std::move(it->second);
        owned_.erase(it);
        return h;
    }

    std::size_t size() const {
        std::lock_guard lk(mu_);
        return owned_.size();
    }

private:
    mutable std::mutex mu_;
    std::unordered_map<const Handle*, std::unique_ptr<Handle>> owned_; // guarded by mu_
};

} // namespace overcache::fuse
