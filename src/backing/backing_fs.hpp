// Thin, fd-based access to the backing tree. Every file the mount knows is
// held as an O_PATH descriptor (see fuse/inode_table.hpp), so operations keep
// working across renames and never resolve a path from the backing's root.
// Calls return 0 or an errno value, which is what the FUSE replies need.
#pragma once

#include "overcache/util/result.hpp"
#include "util/unique_fd.hpp"

#include <cstdio>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
#include <vector>

namespace overcache::backing {

// "/proc/self/fd/N": reopening an O_PATH fd, or using a call that has no
// AT_EMPTY_PATH form (chmod, truncate, xattrs). On a symlink's O_PATH fd the
// magic link resolves to the symlink itself, not its target.
struct ProcPath {
    explicit ProcPath(int fd) noexcept { std::snprintf(buf, sizeof buf, "/proc/self/fd/%d", fd); }
    const char* c_str() const noexcept { return buf; }
    char buf[32];
};

// On a request thread with a RequestScope (request_scope.hpp) these run
// through the gate: EIO when the backing does not answer in time.

// O_PATH|O_NOFOLLOW handle on `name` in directory `dirfd`.
Result<UniqueFd> open_path(int dirfd, const char* name);
// O_PATH handle on the file an open descriptor refers to.
Result<UniqueFd> path_of(int fd);
// A real open of the file behind an O_PATH handle.
Result<UniqueFd> reopen(int path_fd, int flags);
// openat(2) of `name` in `dirfd` (a create, with O_CREAT; O_CLOEXEC is added).
Result<UniqueFd> open_at(int dirfd, const char* name, int flags, mode_t mode);
// open_by_handle_at(2) of `handle` (a struct file_handle, as
// name_to_handle_at filled it) on the filesystem of `mount_fd`: a network
// filesystem asks its server when the inode is no longer in memory.
Result<UniqueFd> open_by_handle(int mount_fd, const std::vector<char>& handle, int flags);

// lstat of the file behind `fd` (any kind of fd). 0 or errno.
int stat_fd(int fd, struct stat& st);
// lstat of `name` in `dirfd`.
int stat_at(int dirfd, const char* name, struct stat& st);
// Sets atime/mtime (UTIME_NOW/UTIME_OMIT allowed) without following symlinks.
int set_times(int path_fd, const struct timespec times[2]);
// The same on an open descriptor (futimens).
int set_times_fd(int fd, const struct timespec times[2]);
// chmod of the file behind an O_PATH handle (never a symlink: Linux has no lchmod).
int set_mode(int path_fd, mode_t mode);
int set_mode_fd(int fd, mode_t mode);
int set_owner(int path_fd, uid_t uid, gid_t gid);
int set_owner_fd(int fd, uid_t uid, gid_t gid);
int truncate_path(int path_fd, off_t size);

// Namespace changes, as their *at(2) calls.
int make_dir(int dirfd, const char* name, mode_t mode);
int make_symlink(const char* target, int dirfd, const char* name);
int make_node(int dirfd, const char* name, mode_t mode, dev_t rdev);
// A new name `name` in `dirfd` for the file behind the O_PATH handle.
int link_to(int path_fd, int dirfd, const char* name);
int unlink_at(int dirfd, const char* name, int flags);
int rename_at(int from_dir, const char* name, int to_dir, const char* new_name, unsigned flags);
// Extended attributes of the file behind an O_PATH handle.
int set_xattr(int path_fd, const char* name, const void* value, std::size_t size, int flags);
int remove_xattr(int path_fd, const char* name);
// The length of the file's list of extended attribute names.
int xattr_names_size(int path_fd, std::size_t& size);
// The target of the symlink behind an O_PATH handle.
int read_link(int path_fd, std::string& target);

// Raises RLIMIT_NOFILE as far as allowed: the inode table holds one O_PATH
// descriptor per file the kernel remembers. Returns the new soft limit.
unsigned long raise_fd_limit() noexcept;

} // namespace overcache::backing
