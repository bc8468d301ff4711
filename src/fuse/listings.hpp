// Private to the FUSE adapter: the directory listings the index keeps
// (cache/meta_cache.hpp), as the request handlers use them. Online, a
// listing read from its start is recorded as it goes, and changes made
// through the mount keep it right; offline, a whole listing answers
// opendir and readdir(plus), and says for sure which names are not there.
// All of it does nothing on a mount without a cache.
#pragma once

#include "fuse/adapter.hpp"

#include <optional>
#include <string_view>
#include <sys/stat.h>

namespace overcache::fuse {

// At opendir of the directory `fd` (open for reading; `st` its attributes
// as it was opened): a handle that lists it from the index when the index
// holds its listing as of now (unchanged since it was read), else one that
// reads the backing and records what it gives.
std::unique_ptr<DirHandle> open_dir_handle(Adapter& a, UniqueFd fd, const struct stat& st,
                                           bool is_root);
// `dir`'s lstat just before a change of its names through the mount
// (nothing on a mount without a cache, or if it cannot be had).
struct DirSeen {
    struct stat st;
    // Taken before the lstat: also before any stat of a name made in it
    // after, whose kept record takes this time (backing/change_watch.hpp).
    std::int64_t asked_ns;
};
using DirBefore = std::optional<DirSeen>;
DirBefore dir_before(Adapter& a, const InodeRef& dir);
// `name` was made in (or moved into) `dir` through the mount; `child` is
// its lstat. `name` was removed from `dir`. Both stat `dir` afterwards,
// and return that lstat (the `before` of a second change of one rename).
DirBefore note_name_added(Adapter& a, const InodeRef& dir, const DirBefore& before,
                          std::string_view name, const struct stat& child);
DirBefore note_name_removed(Adapter& a, const InodeRef& dir, const DirBefore& before,
                            std::string_view name);
// The directory `gone` (its lstat before the rmdir) is no more.
void note_dir_removed(Adapter& a, const struct stat& gone);
// unlink through the mount removed a name of the file `gone` (its lstat
// before): if it was its last, the file's kept attributes go too, so that
// the index does not grow with files long gone.
void note_last_name_removed(Adapter& a, const struct stat& gone);

// Offline: a handle on `ino`'s whole listing; nullptr (with `err`) when the
// index has none the mount can vouch for: none at all, or one older than
// the directory's attributes the mount saw last (changed behind it).
std::unique_ptr<DirHandle> open_listing(Adapter& a, Ino ino, int& err);
// readdir(plus) on a handle with a listing from the index; readdirplus
// looks each name up on the backing while it is online.
int read_listing(fuse_req_t req, Adapter& a, Ino ino, DirHandle& dh, std::size_t size, off_t off,
                 bool plus);
// Offline: `name` is not in `parent`'s whole listing.
bool known_absent(Adapter& a, Ino parent, std::string_view name);

// Online: `st` is what the backing gave now for `inode` (lookup, getattr,
// open), asked for at `asked_ns` (taken before the call: the change watch
// counts changes from then on against it): kept in the index if it changed
// since the mount kept it last, or a change was seen to it, or `always`;
// with a symlink's target.
void remember_attr(Adapter& a, const InodeRef& inode, const struct stat& st, std::int64_t asked_ns,
                   bool always = false);
// Offline: `name` in `parent`, found in the index: in its whole listing,
// with attributes recorded since that listing was read. Counts a kernel
// lookup of the entry it makes (or finds) in the inode table.
std::optional<InodeTable::Known> adopt_from_index(Adapter& a, Ino parent, std::string_view name);
// Offline: the target of the symlink `ino`, as kept in the index for the
// attributes the mount last saw; nullopt if it has none for them.
std::optional<std::string> kept_target(Adapter& a, Ino ino);

// Offline, the check the backing would make of `mask` (R_OK, W_OK, X_OK)
// for the caller of `req` on `st` (the file's last attributes): 0 or
// EACCES. Without default_permissions the kernel checks nothing and the
// backing is not there to; a cached answer must not reach a caller the
// backing would have refused.
int offline_access(fuse_req_t req, const Adapter& a, const struct stat& st, int mask);

} // namespace overcache::fuse
