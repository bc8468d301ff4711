// DOC: fd-based helpers over the backing tree. All of them take O_PATH (or
// open) descriptors and use *at() calls with AT_EMPTY_PATH, or the
// /proc/self/fd magic link where the kernel offers no fd form, so no path is
// ever resolved from the backing's root and a rename elsewhere in the tree
// cannot redirect an operation. Errors come back as errno values.
#include "backing/backing_fs.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

namespace overcache::backing {

Result<UniqueFd> open_path(int dirfd, const char* name) {
    const int fd = ::openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return fail_errno();
    return UniqueFd(fd);
}

Result<UniqueFd> path_of(int fd) {
    const ProcPath p(fd);
    const int pfd = ::open(p.c_str(), O_PATH | O_CLOEXEC);
    if (pfd < 0)
        return fail_errno();
    return UniqueFd(pfd);
}

Result<UniqueFd> reopen(int path_fd, int flags) {
    const ProcPath p(path_fd);
    const int fd = ::open(p.c_str(), (flags & ~O_NOFOLLOW) | O_CLOEXEC);
    if (fd < 0)
        return fail_errno();
    return UniqueFd(fd);
}

int stat_fd(int fd, struct stat& st) noexcept {
    return ::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

int set_times(int path_fd, const struct timespec times[2]) noexcept {
    if (::utimensat(path_fd, "", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0)
        return 0;
    if (errno != EINVAL)
        return errno;
    // Kernels before AT_EMPTY_PATH support in utimensat: go through /proc,
    // which is right for everything but symlinks.
    const ProcPath p(path_fd);
    return ::utimensat(AT_FDCWD, p.c_str(), times, 0) == 0 ? 0 : errno;
}

int set_mode(int path_fd, mode_t mode) noexcept {
    const ProcPath p(path_fd);
    return ::chmod(p.c_str(), mode) == 0 ? 0 : errno;
}

int set_owner(int path_fd, uid_t uid, gid_t gid) noexcept {
    return ::fchownat(path_fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

int truncate_path(int path_fd, off_t size) noexcept {
    const ProcPath p(path_fd);
    return ::truncate(p.c_str(), size) == 0 ? 0 : errno;
}

unsigned long raise_fd_limit() noexcept {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    // Root may go past the hard limit, up to fs.nr_open.
    rlim_t want = rl.rlim_max;
    if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "re")) {
        unsigned long nr_open = 0;
        if (std::fscanf(f, "%lu", &nr_open) == 1 && nr_open > want)
            want = nr_open;
        std::fclose(f);
    }
    struct rlimit up {
        want, want
    };
    if (::setrlimit(RLIMIT_NOFILE, &up) != 0) {
        up = {rl.rlim_max, rl.rlim_max};
        if (::setrlimit(RLIMIT_NOFILE, &up) != 0)
            return rl.rlim_cur;
    }
    return up.rlim_cur;
}

} // namespace overcache::backing
