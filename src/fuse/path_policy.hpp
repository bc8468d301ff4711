// Per-path policy as the adapter sees it: resolving a file's settings along
// the inode table's parent chain, and the settable user.overcache.* names
// of files and directories (mode, sequential_cutoff, promote_after_hits,
// pin).
// The settings themselves are the DataPath's (stored in the cache's index).
#pragma once

#include "fuse/adapter.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace overcache::fuse {

// The policy an open of `self` (an fd on the file, and its fstat) runs
// under: its own settings, then those of `first_parent` and each directory
// above it. No backing I/O: the walk reads the inode table and the
// DataPath's map only. Bounded, so a parent cycle (a stale chain after
// renames) cannot loop.
cache::FilePolicy resolve_policy(Adapter& a, cache::FileRef self, Ino first_parent);

// The user.overcache.<key> names of a file or directory's own settings;
// each helper returns 0 once it replied, else the errno to reply. Names
// that are not settings: -1 (the caller goes on to the facts).
int policy_getxattr(fuse_req_t req, Adapter& a, const InodeRef& inode, std::string_view key,
                    std::size_t size);
int policy_setxattr(fuse_req_t req, Adapter& a, const InodeRef& inode, std::string_view key,
                    std::string_view value, int flags);
int policy_removexattr(fuse_req_t req, Adapter& a, const InodeRef& inode, std::string_view key);
// Appends the full names (with `prefix`, NUL-terminated) of the settings
// set on the inode itself (not inherited ones, not the facts).
void policy_listxattr(Adapter& a, const InodeRef& inode, std::string_view prefix,
                      std::vector<char>& out);

} // namespace overcache::fuse
