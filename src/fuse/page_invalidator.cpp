// DOC: the kernel page invalidator. When the cache finds that the backing
// changed behind the mount (before one of our own changes, or at getattr),
// the kernel's pages of that file are stale even if its mtime and size did
// not move (which is all auto_inval_data looks at). The ino is queued here
// and a thread of our own sends the notification, outside any request.
#include "fuse/page_invalidator.hpp"

#include <pthread.h>

namespace overcache::fuse {

void PageInvalidator::start(fuse_session* se) {
    std::lock_guard lk(mu_);
    if (thread_.joinable())
        return;
    se_ = se;
    stopping_ = false;
    thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "oc-inval");
        run();
    });
}

void PageInvalidator::stop() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
        queue_.clear();
    }
    cv_.notify_all();
    if (thread_.joinable())
        thread_.join();
}

void PageInvalidator::post(fuse_ino_t ino) {
    {
        std::lock_guard lk(mu_);
        if (stopping_ || !thread_.joinable())
            return;
        queue_.push_back(ino);
    }
    cv_.notify_one();
}

std::uint64_t PageInvalidator::sent() const {
    std::lock_guard lk(mu_);
    return sent_;
}

void PageInvalidator::run() {
    std::unique_lock lk(mu_);
    for (;;) {
        cv_.wait(lk, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_)
            return;
        const fuse_ino_t ino = queue_.front();
        queue_.pop_front();
        lk.unlock();
        // -ENOENT: the kernel has no such inode cached; nothing to drop.
        (void)fuse_lowlevel_notify_inval_inode(se_, ino, 0, 0);
        lk.lock();
        ++sent_;
    }
}

} // namespace overcache::fuse
