// Private to the FUSE adapter: the answers the mount gives from what it
// kept (names in the index's whole listings, attributes in the inode table
// and the index) without asking the backing. Under coherency=cto only what
// the backing's change watch vouches for is (backing/change_watch.hpp: no
// change to it since it was asked for, on a local disk); without the watch
// every lookup and getattr that reaches the daemon asks the backing (the
// kernel's attr_timeout/entry_timeout aside).
//
// Kept attributes the watch vouches for are fresh under cto and timeout
// alike. Otherwise they are used while they are fresh: under `none` until the
// file changes through the mount or `invalidate` distrusts them; under
// `timeout` for a tenth of the time the file had gone unchanged when they
// were seen, within acregmin..acregmax (acdirmin..acdirmax for a
// directory), as NFS's attribute cache. A directory's names are used while
// its attributes are fresh and show the times its whole listing was kept
// at. A file open for writing through the mount is never answered from
// here: its writes change what was seen.
#pragma once

#include "fuse/adapter.hpp"

#include <optional>
#include <string_view>
#include <sys/stat.h>

namespace overcache::fuse {

// Whether this mount answers from what it kept while the backing is online
// (coherency=timeout|none, or a watched backing).
bool trusting(const Adapter& a) noexcept;

// getattr: `ino`'s attributes, if fresh.
std::optional<struct stat> trusted_attr(Adapter& a, Ino ino);

// open: `ino`'s attributes as the backing gave them (no dirty overlay), if
// fresh; counts no answer.
std::optional<struct stat> trusted_file(Adapter& a, Ino ino);

// lookup of `name` in `parent`: 0 with `e` filled (one kernel lookup
// counted), ENOENT (the fresh listing lacks it), or kNoAnswer (ask the
// backing).
int trusted_lookup(Adapter& a, Ino parent, std::string_view name, fuse_entry_param& e);

// opendir: the key of `ino`'s whole listing, if its names are fresh.
std::optional<meta::FileKey> trusted_listing(Adapter& a, Ino ino);

} // namespace overcache::fuse
