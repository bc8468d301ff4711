#include "fuse/kernel_channel.hpp"

#include <cerrno>
#include <cstring>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

namespace overcache::fuse {
namespace {

thread_local RequestFlags t_flags;

// The field of type T at byte `at` of the request's argument, if the request
// is long enough to hold it (a shorter one is left for libfuse to refuse).
template <typename T> bool field(const char* buf, std::size_t n, std::size_t at, T& out) noexcept {
    const std::size_t from = sizeof(fuse_in_header) + at;
    if (n < from + sizeof(T))
        return false;
    std::memcpy(&out, buf + from, sizeof(T));
    return true;
}

bool kill_flag(const char* buf, std::size_t n, std::uint32_t opcode) noexcept {
    std::uint32_t v = 0;
    switch (opcode) {
    case FUSE_WRITE:
        return field(buf, n, offsetof(fuse_write_in, write_flags), v) &&
               (v & FUSE_WRITE_KILL_SUIDGID) != 0;
    case FUSE_SETATTR:
        return field(buf, n, offsetof(fuse_setattr_in, valid), v) && (v & FATTR_KILL_SUIDGID) != 0;
    case FUSE_OPEN:
        return field(buf, n, offsetof(fuse_open_in, open_flags), v) &&
               (v & FUSE_OPEN_KILL_SUIDGID) != 0;
    case FUSE_CREATE:
        return field(buf, n, offsetof(fuse_create_in, open_flags), v) &&
               (v & FUSE_OPEN_KILL_SUIDGID) != 0;
    default:
        return false;
    }
}

} // namespace

RequestFlags request_flags() noexcept {
    return t_flags;
}

mode_t mode_without_setid(mode_t mode) noexcept {
    mode &= ~static_cast<mode_t>(S_ISUID);
    if ((mode & S_IXGRP) != 0)
        mode &= ~static_cast<mode_t>(S_ISGID);
    return mode;
}

ssize_t KernelChannel::read(int fd, void* buf, std::size_t len) {
    const ssize_t n = ::read(fd, buf, len);
    const int err = errno;
    t_flags = {};
    if (n >= static_cast<ssize_t>(sizeof(fuse_in_header))) {
        const char* b = static_cast<const char*>(buf);
        const auto size = static_cast<std::size_t>(n);
        fuse_in_header h{};
        std::memcpy(&h, b, sizeof h);
        if (h.opcode == FUSE_INIT) {
            std::uint32_t flags = 0;
            if (field(b, size, offsetof(fuse_init_in, flags), flags))
                offered_.store((flags & FUSE_HANDLE_KILLPRIV_V2) != 0);
            init_unique_.store(h.unique);
        } else {
            t_flags.kill_suidgid = kill_flag(b, size, h.opcode);
        }
    }
    errno = err;
    return n;
}

ssize_t KernelChannel::writev(int fd, struct iovec* iov, int count) {
    const std::uint64_t init = init_unique_.load();
    if (init != 0 && count >= 2 && iov[0].iov_len >= sizeof(fuse_out_header) &&
        iov[1].iov_len >= offsetof(fuse_init_out, flags) + sizeof(std::uint32_t)) {
        fuse_out_header h{};
        std::memcpy(&h, iov[0].iov_base, sizeof h);
        if (h.unique == init) {
            init_unique_.store(0);
            if (h.error == 0 && want_killpriv_v2_ && offered_.load()) {
                // libfuse built the reply in its own writable buffer.
                char* arg = static_cast<char*>(iov[1].iov_base);
                std::uint32_t flags = 0;
                std::memcpy(&flags, arg + offsetof(fuse_init_out, flags), sizeof flags);
                // The first version of the flag makes the server kill in
                // every case; it must not be asked for alongside.
                flags &= ~static_cast<std::uint32_t>(FUSE_HANDLE_KILLPRIV);
                flags |= FUSE_HANDLE_KILLPRIV_V2;
                std::memcpy(arg + offsetof(fuse_init_out, flags), &flags, sizeof flags);
                killpriv_v2_.store(true, std::memory_order_release);
            }
        }
    }
    return ::writev(fd, iov, count);
}

} // namespace overcache::fuse
