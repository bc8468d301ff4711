// Thin, fd-based access to the backing tree. Every file the mount knows is
// held as an O_PATH descriptor (see fuse/inode_table.hpp), so operations keep
// working across renames and never resolve a path from the backing's root.
// Calls return 0 or an errno value, which is what the FUSE replies need.
#pragma once

#include "overcache/util/result.hpp"
#include "util/unique_fd.hpp"

#include <cstdio>
#include <sys/stat.h>
#include <sys/types.h>

namespace overcache::backing {

// "/proc/self/fd/N": reopening an O_PATH fd, or using a call that has no
// AT_EMPTY_PATH form (chmod, truncate, xattrs). On a symlink's O_PATH fd the
// magic link resolves to the symlink itself, not its target.
struct ProcPath {
    explicit ProcPath(int fd) noexcept { std::snprintf(buf, sizeof buf, "/proc/self/fd/%d", fd); }
    const char* c_str() const noexcept { return buf; }
    char buf[32];
};

// O_PATH|O_NOFOLLOW handle on `name` in directory `dirfd`.
Result<UniqueFd> open_path(int dirfd, const char* name);
// O_PATH handle on the file an open descriptor refers to.
Result<UniqueFd> path_of(int fd);
// A real open of the file behind an O_PATH handle.
Result<UniqueFd> reopen(int path_fd, int flags);

// lstat of the file behind `fd` (any kind of fd). 0 or errno.
int stat_fd(int fd, struct stat& st) noexcept;
// Sets atime/mtime (UTIME_NOW/UTIME_OMIT allowed) without following symlinks.
int set_times(int path_fd, const struct timespec times[2]) noexcept;
// chmod of the file behind an O_PATH handle (never a symlink: Linux has no lchmod).
int set_mode(int path_fd, mode_t mode) noexcept;
int set_owner(int path_fd, uid_t uid, gid_t gid) noexcept;
int truncate_path(int path_fd, off_t size) noexcept;

// Raises RLIMIT_NOFILE as far as allowed: the inode table holds one O_PATH
// descriptor per file the kernel remembers. Returns the new soft limit.
unsigned long raise_fd_limit() noexcept;

} // namespace overcache::backing
