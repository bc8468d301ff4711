// The daemon's end of /dev/fuse, seen through libfuse's custom I/O hooks
// (fuse_session_custom_io): libfuse 3.14 still speaks the protocol; this
// reads each raw request before it does, and edits one reply. It exists for
// what libfuse 3.14 cannot say or does not pass on:
//  - HANDLE_KILLPRIV_V2 in the INIT reply, when the kernel offers it. With
//    it the kernel marks an inode S_NOSEC once it found nothing to kill, so
//    a write(2) no longer costs a GETXATTR of security.capability first (a
//    round trip per write, a fifth of a 4 KiB write's time here). In
//    return the server clears setuid (and setgid, with group execute) where
//    the kernel asks it to, on a truncate, an open with O_TRUNC and a write
//    by a caller without CAP_FSETID: the flags below.
//  - those flags (FATTR_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID,
//    FUSE_WRITE_KILL_SUIDGID), which libfuse 3.14 drops from the requests it
//    decodes. A worker thread reads a request and handles it before it reads
//    the next, so the flags of "the request this thread handles" are kept in
//    a thread-local, set by read() and valid until the thread's next read().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <sys/types.h>
#include <sys/uio.h>

namespace overcache::fuse {

// What the kernel asked of the request this thread is handling, beyond what
// libfuse passes to the handler. Read it in the handler, before it returns
// or hands the request to another thread.
struct RequestFlags {
    // A truncate (setattr size, open with O_TRUNC) or a write by a caller
    // without CAP_FSETID: setuid, and setgid with group execute, must go.
    bool kill_suidgid = false;
};
RequestFlags request_flags() noexcept;

// The mode bits a kill of set-id bits leaves: S_ISUID off, and S_ISGID off
// when group execute is on (setgid without it marks mandatory locking, which
// a write does not clear). Equal to `mode` when nothing is to be killed.
mode_t mode_without_setid(mode_t mode) noexcept;

class KernelChannel {
public:
    // `killpriv_v2`: take HANDLE_KILLPRIV_V2 when the kernel offers it.
    explicit KernelChannel(bool killpriv_v2) noexcept : want_killpriv_v2_(killpriv_v2) {}

    // read(2) of one request from `fd`, noting what it carries (above);
    // returns as read(2) does, errno included. Not noexcept: libfuse ends
    // its workers with pthread_cancel, whose unwinding starts in read(2).
    ssize_t read(int fd, void* buf, std::size_t len);
    // writev(2) of one reply or notification; the reply to INIT gains
    // HANDLE_KILLPRIV_V2 when it was offered and is wanted.
    ssize_t writev(int fd, struct iovec* iov, int count);

    // While INIT is handled: whether the kernel offered it (and so gets it).
    bool killpriv_v2_offered() const noexcept { return want_killpriv_v2_ && offered_.load(); }
    // After INIT: whether the kernel kills set-id bits at the server.
    bool killpriv_v2() const noexcept { return killpriv_v2_.load(std::memory_order_acquire); }

private:
    const bool want_killpriv_v2_;
    std::atomic<std::uint64_t> init_unique_{0}; // the INIT request awaiting its reply
    std::atomic<bool> offered_{false};
    std::atomic<bool> killpriv_v2_{false};
};

} // namespace overcache::fuse
