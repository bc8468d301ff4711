// DOC: the data calls on an open backing file (file_ops.hpp), here or
// through the request thread's gate.
#include "backing/file_ops.hpp"

#include "backing/request_scope.hpp"
#include "util/file_io.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

namespace overcache::backing {
namespace {

// What a call answered: a count (or offset), or an errno.
struct Answer {
    int err = 0;
    std::int64_t n = 0;
};

// `raw(fds)` here, or through this thread's request scope with `fds` lent:
// its answer, judged; EIO when it got none. These calls move bytes: they
// are waited for while the backing answers (Gate::Patience::while_alive),
// but for lseek.
template <class F>
Answer answered(std::initializer_list<int> fds, F raw,
                Gate::Patience patience = Gate::Patience::while_alive) {
    RequestScope* s = RequestScope::active();
    if (s == nullptr) {
        int here[2] = {-1, -1};
        std::copy(fds.begin(), fds.end(), here);
        return raw(here);
    }
    auto r = s->run(fds, std::move(raw), patience);
    if (!r)
        return {EIO, 0};
    r->err = s->judged(r->err);
    return *r;
}

Answer of_rc(long rc) noexcept {
    return rc < 0 ? Answer{errno, 0} : Answer{0, rc};
}

} // namespace

Result<struct stat> fstat_file(int fd) {
    struct stat st {};
    if (!scoped()) {
        if (::fstat(fd, &st) != 0)
            return fail_errno();
        return st;
    }
    if (const int err = stat_fd(fd, st))
        return fail_sys(err);
    return st;
}

Result<std::size_t> write_all(int fd, const char* data, std::size_t len, std::uint64_t off) {
    Answer a;
    if (!scoped()) {
        const ssize_t n = pwrite_upto(fd, data, len, off);
        a = n < 0 ? Answer{static_cast<int>(-n), 0} : Answer{0, n};
    } else {
        // The call may outlive the caller's buffer.
        a = answered({fd}, [bytes = std::vector<char>(data, data + len), off](const int* f) {
            const ssize_t n = pwrite_upto(f[0], bytes.data(), bytes.size(), off);
            return n < 0 ? Answer{static_cast<int>(-n), 0} : Answer{0, n};
        });
    }
    if (a.err != 0)
        return fail_sys(a.err);
    return static_cast<std::size_t>(a.n);
}

Result<void> sync_file(int fd, bool datasync) {
    const Answer a = answered({fd}, [datasync](const int* f) {
        return of_rc(datasync ? ::fdatasync(f[0]) : ::fsync(f[0]));
    });
    if (a.err != 0)
        return fail_sys(a.err);
    return {};
}

void start_writeout(int fd, std::uint64_t off, std::uint64_t len) {
    (void)::sync_file_range(fd, static_cast<off64_t>(off), static_cast<off64_t>(len),
                            SYNC_FILE_RANGE_WRITE);
}

Result<void> wait_writeout(int fd, std::uint64_t off, std::uint64_t len) {
    const Answer a = answered({fd}, [off, len](const int* f) {
        return of_rc(::sync_file_range(f[0], static_cast<off64_t>(off), static_cast<off64_t>(len),
                                       SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                           SYNC_FILE_RANGE_WAIT_AFTER));
    });
    switch (a.err) {
    case 0:
    case EINVAL: // no range waits here (or a range it refuses)
    case ESPIPE: // not a file
    case ENOSYS:
    case EOPNOTSUPP:
        return {};
    default:
        return fail_sys(a.err);
    }
}

Result<void> truncate_file(int fd, bool fd_is_open, std::uint64_t size) {
    int err = 0;
    if (fd_is_open)
        err = answered({fd}, [size](const int* f) {
                  return of_rc(::ftruncate(f[0], static_cast<off_t>(size)));
              }).err;
    else
        err = truncate_path(fd, static_cast<off_t>(size));
    if (err != 0)
        return fail_sys(err);
    return {};
}

Result<void> fallocate_file(int fd, int mode, off_t off, off_t len) {
    const Answer a = answered({fd}, [mode, off, len](const int* f) {
        return of_rc(::fallocate(f[0], mode, off, len));
    });
    if (a.err != 0)
        return fail_sys(a.err);
    return {};
}

Result<std::size_t> copy_range(int in, off_t off_in, int out, off_t off_out, std::size_t len,
                               unsigned flags) {
    const Answer a = answered({in, out}, [off_in, off_out, len, flags](const int* f) {
        loff_t from = off_in, to = off_out;
        return of_rc(::copy_file_range(f[0], &from, f[1], &to, len, flags));
    });
    if (a.err != 0)
        return fail_sys(a.err);
    return static_cast<std::size_t>(a.n);
}

Result<off_t> seek(int fd, off_t off, int whence) {
    const Answer a = answered(
        {fd}, [off, whence](const int* f) { return of_rc(::lseek(f[0], off, whence)); },
        Gate::Patience::deadline);
    if (a.err != 0)
        return fail_sys(a.err);
    return static_cast<off_t>(a.n);
}

} // namespace overcache::backing
