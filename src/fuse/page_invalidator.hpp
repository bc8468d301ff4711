// PageInvalidator: tells the kernel to drop its cached pages of an inode,
// from a thread of its own. A request handler must not do it itself: the
// kernel may be holding locks of that inode for the very request, and
// fuse_lowlevel_notify_inval_inode would wait on them.
#pragma once

#include <condition_variable>
#include <deque>
#include <fuse_lowlevel.h>
#include <mutex>
#include <thread>

namespace overcache::fuse {

class PageInvalidator {
public:
    PageInvalidator() = default;
    ~PageInvalidator() { stop(); }
    PageInvalidator(const PageInvalidator&) = delete;
    PageInvalidator& operator=(const PageInvalidator&) = delete;

    void start(fuse_session* se);
    // Drops what is queued; idempotent. Before the session is destroyed.
    void stop();
    // Queues `ino`; never waits.
    void post(fuse_ino_t ino);
    std::uint64_t sent() const;

private:
    void run();

    fuse_session* se_ = nullptr;
    std::thread thread_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<fuse_ino_t> queue_; // guarded by mu_
    bool stopping_ = false;        // guarded by mu_
    std::uint64_t sent_ = 0;       // guarded by mu_
};

} // namespace overcache::fuse
