// Private to the FUSE adapter: the backing calls of the request handlers
// that may stall, made through the adapter's gate (backing/gate.hpp) so
// that a backing that stopped answering costs a request one deadline and
// then nothing. Each returns 0, an errno, or kNoAnswer: the backing is
// offline, or did not answer in time (it is offline now); the handler then
// answers from what the mount remembers, or fails.
// The calls work on duplicates of the caller's descriptors and on copies
// of names: an abandoned call may finish after its request is gone.
#pragma once

#include "fuse/adapter.hpp"
#include "util/unique_fd.hpp"

#include <cerrno>
#include <string>
#include <vector>
#include <sys/stat.h>
#include <sys/statvfs.h>

namespace overcache::fuse {

inline constexpr int kNoAnswer = -1;
// What a request that cannot be answered without the backing replies.
inline int or_eio(int err) noexcept {
    return err == kNoAnswer ? EIO : err;
}

// 0 while the backing answers; else what a request that needs it replies
// at once: `err` (EROFS for a change, EIO for the rest).
inline int unless_online(const Adapter& a, int err) noexcept {
    return a.gate.online() ? 0 : err;
}

// lstat of the file behind `fd` (O_PATH or open).
int gated_stat(Adapter& a, int fd, struct stat& st);
// `name` in directory `dir_fd`: an O_PATH descriptor on it and its lstat,
// looked up as `who`.
int gated_open_path(Adapter& a, int dir_fd, const char* name, const CallerId& who, UniqueFd& out,
                    struct stat& st);
// A real open of the file behind an O_PATH handle, as `who`; with `st`,
// the opened file's lstat too (one trip through the gate, not two).
int gated_reopen(Adapter& a, int path_fd, int flags, const CallerId& who, UniqueFd& out,
                 struct stat* st = nullptr);
int gated_statfs(Adapter& a, int fd, struct statvfs& out);
// getxattr of `name` of the file behind `fd` (O_PATH), as `who`: with
// `size` 0 the value's length into `len`, else the value into `value`.
int gated_getxattr(Adapter& a, int fd, const char* name, std::size_t size, const CallerId& who,
                   std::vector<char>& value, std::size_t& len);
// The whole name list of the file behind `fd` (O_PATH), as `who`.
int gated_listxattr(Adapter& a, int fd, const CallerId& who, std::vector<char>& list);
// pread of `len` bytes of `fd` at `off` into `out`, fewer only at the end
// of the file: the count, or -errno (-EIO when the backing did not answer
// in time). The call reads into a buffer of its own, copied out once it
// answered. A DataPath::BackingRead when the adapter's calls are gated.
ssize_t gated_pread(Adapter& a, int fd, char* out, std::size_t len, std::uint64_t off);
// How the adapter's reads reach the backing: gated_pread when calls are
// gated, a plain pread when they run inline.
cache::DataPath::BackingRead backing_reader(Adapter& a);
// close(2) of a duplicate of `fd`: the backing's close-time work (NFS
// writes back and reports errors there), without closing `fd`.
int gated_flush(Adapter& a, int fd);
// Closes `fd` on a gate thread, not waiting for it: the backing may take
// its time with a close (a FUSE or NFS backing answers a flush first).
void close_later(Adapter& a, UniqueFd fd);

} // namespace overcache::fuse
