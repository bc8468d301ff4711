// DOC: extended attributes, passed through to the backing by way of
// /proc/self/fd (the O_PATH handle has no f*xattr form; on a symlink's
// handle the magic link lands on the symlink itself, so symlinks are handled
// right too). Names under `user.overcache.` belong to the cache's own
// settings (DESIGN.md, control surface), never the backing's: per-path
// settings (mode, sequential_cutoff, promote_after_hits, pin and their
// effective_* values) are path_policy.cpp's; a file's read-only facts
// (cached_bytes, dirty_bytes, extents, state) are answered from the cache;
// other names are EINVAL to set, ENOTSUP to read and ENODATA to remove. Only the settings
// set on the file itself are listed, never the backing's own
// user.overcache.* names. On the control file they are the mount's
// settings and stats (ops_control.cpp); it has no others.
#include "backing/backing_fs.hpp"
#include "fuse/adapter.hpp"
#include "fuse/backing_calls.hpp"
#include "fuse/coherency.hpp"
#include "fuse/path_policy.hpp"
#include "fuse/reply.hpp"
#include "util/log.hpp"
#include "util/wall_clock.hpp"

#include <cstring>
#include <string_view>
#include <sys/xattr.h>
#include <vector>

namespace overcache::fuse {
namespace {

constexpr std::string_view kReservedPrefix = "user.overcache.";

bool is_reserved(const char* name) noexcept {
    return std::string_view(name).substr(0, kReservedPrefix.size()) == kReservedPrefix;
}

// Brackets an xattr change of a regular file (it moves the ctime) in
// `out`: 0, or the errno the request fails with.
int xattr_change(Adapter& a, const InodeRef& inode, std::unique_ptr<cache::AttrChange>& out) {
    struct stat st {};
    if (!S_ISREG(inode.type()) || backing::stat_fd(inode.fd(), st) != 0)
        return 0;
    return begin_attr_change(a, inode.fd(), st, out);
}

void xattr_changed(Adapter& a, fuse_ino_t ino, std::unique_ptr<cache::AttrChange> change) {
    if (change)
        note_change(a, ino, change->finish());
    // What the index kept of its extended attributes is out of date until
    // the backing is asked again.
    a.inodes.mark_stale(ino);
}

// listxattr's answer for a file without names: a length (size 0) or an
// empty list.
int reply_no_names(fuse_req_t req, std::size_t size) {
    if (size == 0)
        fuse_reply_xattr(req, 0);
    else
        fuse_reply_buf(req, nullptr, 0);
    return 0;
}

// getxattr while the backing cannot answer. The kernel's own names
// (capabilities at exec, SELinux labels) and ACLs, which ls asks for: none,
// so that cached files still execute and list. Others fail.
int offline_getxattr(std::string_view name) {
    const bool kernels = name.rfind("security.", 0) == 0 || name.rfind("system.", 0) == 0;
    return kernels ? ENODATA : EIO;
}

// coherency=timeout|none: whether `ino` had no extended attributes (or its
// filesystem none at all) when its trusted attributes were seen:
// meta::kXattrsNone or kXattrsUnsupported answer a getxattr or listxattr
// without the backing. ls -l asks every file for its ACL and its security
// label; on a cold tree each question would read the file's inode from the
// backing again.
std::uint8_t kept_xattrs(Adapter& a, fuse_ino_t ino) {
    cache::MetaCache* m = a.data.listings();
    if (m == nullptr || !trusting(a))
        return meta::kXattrsUnknown;
    const auto st = trusted_file(a, ino);
    const auto link = a.inodes.link_of(ino);
    if (!st || !link)
        return meta::kXattrsUnknown;
    const auto key = m->known_key(link->src.dev, link->src.ino);
    const auto rec = key ? m->attr(*key) : std::nullopt;
    // Only what was seen with these very attributes: an extended attribute
    // changes the ctime.
    if (!rec || ns_of(rec->st.st_ctim) != ns_of(st->st_ctim) ||
        ns_of(rec->st.st_mtim) != ns_of(st->st_mtim))
        return meta::kXattrsUnknown;
    return rec->xattrs;
}

// The read-only facts under user.overcache. of a file: what the cache
// holds of it. `state`: conflict (the file was found changed behind the
// mount while the cache held dirty data for it, which was saved as a
// conflict copy; until the next write through the mount or invalidate),
// dirty (the backing lacks some of the cache's bytes), else clean. Other
// names: ENOTSUP.
int cache_fact(fuse_req_t req, Adapter& a, const InodeRef& inode, std::string_view key,
               std::size_t size) {
    if (key != "cached_bytes" && key != "dirty_bytes" && key != "extents" && key != "state")
        return ENOTSUP;
    if (!S_ISREG(inode.type()))
        return ENODATA; // directories and others hold no data
    struct stat st {};
    if (const int err = backing::stat_fd(inode.fd(), st); err != 0)
        return err;
    auto info = a.data.file_info({inode.fd(), st});
    if (!info)
        return errno_of(info.error());
    std::string v;
    if (key == "cached_bytes")
        v = std::to_string(info->cached_bytes);
    else if (key == "dirty_bytes")
        v = std::to_string(info->dirty_bytes);
    else if (key == "extents")
        v = std::to_string(info->extents);
    else
        v = info->conflict ? "conflict" : info->dirty_bytes > 0 ? "dirty" : "clean";
    return reply_xattr_value(req, v, size);
}

// setxattr (or with `remove`, removexattr) of a user.overcache. name on a
// file or directory: the per-path settings, else refused.
int set_reserved(fuse_req_t req, Adapter& a, const InodeRef& inode, std::string_view key,
                 std::string_view value, int flags, bool remove = false) {
    const int r = remove ? policy_removexattr(req, a, inode, key)
                         : policy_setxattr(req, a, inode, key, value, flags);
    if (r >= 0)
        return r;
    if (remove)
        return ENODATA; // no such name is ever set
    log::warn("xattr: user.overcache.", key, " of ino ", inode.ino(),
              " is not a setting (mode, sequential_cutoff, promote_after_hits, pin)");
    return EINVAL;
}

} // namespace

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
    guarded(req, "getxattr", [&] {
        Adapter& a = adapter_of(req);
        if (ino == kControlIno)
            return is_reserved(name) ? control_getxattr(req, name + kReservedPrefix.size(), size)
                                     : ENODATA;
        if (!a.gate.online())
            return offline_getxattr(name);
        if (!is_reserved(name)) {
            const std::uint8_t kept = kept_xattrs(a, ino);
            if (kept == meta::kXattrsNone || kept == meta::kXattrsUnsupported) {
                a.data.listings()->note_kept_answer();
                return kept == meta::kXattrsNone ? ENODATA : EOPNOTSUPP;
            }
        }
        InodeRef inode = a.inodes.get(ino);
        if (!inode)
            return ESTALE;
        if (is_reserved(name)) {
            const std::string_view key = name + kReservedPrefix.size();
            if (const int r = policy_getxattr(req, a, inode, key, size); r >= 0)
                return r;
            return cache_fact(req, a, inode, key, size);
        }
        std::vector<char> value;
        std::size_t len = 0;
        if (const int err = gated_getxattr(a, inode->fd(), name, size,
                                           caller_id(req, check_as_caller(a)), value, len))
            return err == kNoAnswer ? offline_getxattr(name) : err;
        if (size == 0)
            fuse_reply_xattr(req, len);
        else
            fuse_reply_buf(req, value.data(), len);
        return 0;
    });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept {
    guarded(req, "listxattr", [&] {
        Adapter& a = adapter_of(req);
        if (ino == kControlIno)
            return control_listxattr(req, kReservedPrefix, size);
        if (!a.gate.online())
            return reply_no_names(req, size); // as getxattr: none while the backing cannot say
        if (!a.data.has_path_settings()) { // else the settings' names are listed too
            const std::uint8_t kept = kept_xattrs(a, ino);
            if (kept == meta::kXattrsNone || kept == meta::kXattrsUnsupported) {
                a.data.listings()->note_kept_answer();
                return reply_no_names(req, size);
            }
        }
        InodeRef inode = a.inodes.get(ino);
        if (!inode)
            return ESTALE;
        // The whole list is needed to filter it, whatever `size` asks.
        std::vector<char> list;
        if (const int err =
                gated_listxattr(a, inode->fd(), caller_id(req, check_as_caller(a)), list)) {
            if (err != kNoAnswer)
                return err;
            return reply_no_names(req, size); // as offline
        }
        std::vector<char> shown;
        shown.reserve(list.size());
        for (std::size_t i = 0; i < list.size();) {
            const char* name = list.data() + i;
            const std::size_t len = ::strnlen(name, list.size() - i);
            if (!is_reserved(name))
                shown.insert(shown.end(), name, name + len + 1);
            i += len + 1;
        }
        policy_listxattr(a, *inode, kReservedPrefix, shown);
        if (size == 0) {
            fuse_reply_xattr(req, shown.size());
            return 0;
        }
        if (shown.size() > size)
            return ERANGE;
        fuse_reply_buf(req, shown.data(), shown.size());
        return 0;
    });
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags) noexcept {
    guarded(req, "setxattr", [&] {
        Adapter& a = adapter_of(req);
        if (const int refused = unless_online(a, EROFS))
            return refused;
        if (ino == kControlIno) {
            if (!is_reserved(name))
                return EPERM;
            if ((flags & XATTR_CREATE) != 0)
                return EEXIST; // every setting exists
            return control_setxattr(req, name + kReservedPrefix.size(),
                                    std::string_view(value, size));
        }
        InodeRef inode = a.inodes.get(ino);
        if (!inode)
            return ESTALE;
        if (is_reserved(name))
            return set_reserved(req, a, *inode, name + kReservedPrefix.size(),
                                std::string_view(value, size), flags);
        CallerScope as(req, check_as_caller(a));
        std::unique_ptr<cache::AttrChange> change;
        if (const int err = xattr_change(a, *inode, change))
            return err;
        if (const int err = backing::set_xattr(inode->fd(), name, value, size, flags))
            return err;
        xattr_changed(a, ino, std::move(change));
        fuse_reply_err(req, 0);
        return 0;
    });
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept {
    guarded(req, "removexattr", [&] {
        Adapter& a = adapter_of(req);
        if (const int refused = unless_online(a, EROFS))
            return refused;
        if (ino == kControlIno)
            return is_reserved(name) ? EPERM : ENODATA; // a setting is set, never removed
        InodeRef inode = a.inodes.get(ino);
        if (!inode)
            return ESTALE;
        if (is_reserved(name))
            return set_reserved(req, a, *inode, name + kReservedPrefix.size(), {}, 0, true);
        CallerScope as(req, check_as_caller(a));
        std::unique_ptr<cache::AttrChange> change;
        if (const int err = xattr_change(a, *inode, change))
            return err;
        if (const int err = backing::remove_xattr(inode->fd(), name))
            return err;
        xattr_changed(a, ino, std::move(change));
        fuse_reply_err(req, 0);
        return 0;
    });
}

} // namespace overcache::fuse
