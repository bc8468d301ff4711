// DOC: namespace handlers (mknod, mkdir, symlink, link, unlink, rmdir,
// rename) and directory reading. New files are made with the caller's
// credentials (CallerScope), so their owner, group (setgid directories
// included) and permission checks are what the caller would get on the
// backing; the kernel has already applied the caller's umask to `mode`.
// Dropping a file's last name tells the DataPath (removed); other changes to
// a regular file's names tell it touched (nlink and ctime moved).
// readdir hides the control file's name in the root; readdirplus counts a
// lookup for every entry it returns and undoes the ones that did not fit.
#include "backing/backing_fs.hpp"
#include "backing/file_ops.hpp"
#include "fuse/adapter.hpp"
#include "fuse/backing_calls.hpp"
#include "fuse/dir_stream.hpp"
#include "fuse/coherency.hpp"
#include "fuse/listings.hpp"
#include "fuse/reply.hpp"
#include "util/log.hpp"

#include <cstring>
#include <fcntl.h>
#include <limits>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

namespace overcache::fuse {
namespace {

enum class NodeKind { mknod, mkdir, symlink };

int make_node(fuse_req_t req, fuse_ino_t parent, const char* name, NodeKind kind, mode_t mode,
              dev_t rdev, const char* link) {
    Adapter& a = adapter_of(req);
    if (const int refused = unless_online(a, EROFS))
        return refused;
    if (is_control_name(parent, name))
        return EEXIST;
    InodeRef dir = a.inodes.get(parent);
    if (!dir)
        return ESTALE;
    const DirBefore before = dir_before(a, dir);
    {
        CallerScope as(req, true);
        int err = 0;
        switch (kind) {
        case NodeKind::mkdir:
            err = backing::make_dir(dir->fd(), name, mode);
            break;
        case NodeKind::symlink:
            err = backing::make_symlink(link, dir->fd(), name);
            break;
        case NodeKind::mknod:
            err = backing::make_node(dir->fd(), name, mode, rdev);
            break;
        }
        if (err != 0)
            return err;
    }
    fuse_entry_param e{};
    if (const int err = lookup_entry(a, *dir, name, e))
        return or_eio(err);
    note_name_added(a, dir, before, name, e.attr);
    reply_entry(req, a, e);
    return 0;
}

// Before `fd`'s file (fstat `st`) may lose a name: its last one is reported
// after the change (removed()); one of several is a change of its inode,
// bracketed by the guard put in `out`. 0, or the errno the request fails
// with (nothing changed).
int losing_name(Adapter& a, int fd, const struct stat& st,
                std::unique_ptr<cache::AttrChange>& out) {
    out.reset();
    if (!S_ISREG(st.st_mode) || st.st_nlink <= 1)
        return 0;
    return begin_attr_change(a, fd, st, out);
}

// After `fd`'s file (fstat `before`) lost a name.
void lost_name(Adapter& a, int fd, const struct stat& before,
               std::unique_ptr<cache::AttrChange> change) {
    if (change)
        (void)change->finish();
    else if (S_ISREG(before.st_mode) && before.st_nlink <= 1)
        a.data.removed(cache::FileRef{fd, before});
}

void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                bool plus) {
    guarded(req, plus ? "readdirplus" : "readdir", [&] {
        Adapter& a = adapter_of(req);
        DirHandle& dh = dir_of(fi);
        if (dh.listed) // unchanged since it was read, or opened offline
            return read_listing(req, a, ino, dh, size, off, plus);
        // An open DIR would wait for an offline backing.
        if (const int refused = unless_online(a, EIO))
            return refused;
        InodeRef dir = a.inodes.get(ino);
        if (!dir)
            return ESTALE;
        std::vector<char> buf(size);
        std::vector<Ino> counted; // lookups readdirplus counted, for undoing
        std::size_t used = 0;
        int err = 0;

        // The reply goes out after the lock is dropped: once it is sent the
        // kernel may release the handle (and free `dh`) from another thread.
        std::unique_lock lock(dh.mutex);
        if (off != dh.offset) {
            dh.stream->seek(off);
            dh.has_entry = false;
            dh.offset = off;
            dh.recorder.reset(); // not read in order: not a whole listing
        }
        for (;;) {
            if (!dh.has_entry) {
                DirStream::Entry got;
                const int rerr = dh.stream->next(a, got);
                if (rerr != 0) {
                    err = rerr == ENOENT ? 0 : or_eio(rerr);
                    if (dh.recorder) {
                        struct stat now {};
                        if (rerr == ENOENT && gated_stat(a, dh.stream->fd(), now) == 0)
                            dh.recorder->finish(now);
                        dh.recorder.reset();
                    }
                    break;
                }
                dh.has_entry = true;
                dh.entry_name = got.name;
                dh.entry_ino = got.ino;
                dh.entry_type = got.type;
                dh.entry_next = got.next;
                if (dh.recorder && !(dh.is_root && got.name == kControlName))
                    dh.recorder->add(got.name.data(), got.ino, got.type);
            }
            const char* name = dh.entry_name.data(); // NUL-terminated
            const off_t next = dh.entry_next;
            if (dh.is_root && std::strcmp(name, kControlName) == 0) {
                // Shadowed by the control file; never listed.
                dh.has_entry = false;
                dh.offset = next;
                continue;
            }
            const bool dots = std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0;
            std::size_t entsize = 0;
            if (plus) {
                fuse_entry_param e{};
                if (dots) {
                    e.attr.st_ino = dh.entry_ino;
                    e.attr.st_mode = static_cast<mode_t>(dh.entry_type) << 12;
                } else {
                    // While the listing is recorded, the attributes too:
                    // it vouches offline only for those seen since.
                    const int lerr =
                        lookup_entry(a, *dir, name, e, {}, false, dh.recorder != nullptr);
                    if (lerr == ENOENT) {
                        // Removed since readdir saw it: leave it out.
                        dh.has_entry = false;
                        dh.offset = next;
                        continue;
                    }
                    if (lerr != 0) {
                        err = or_eio(lerr);
                        break;
                    }
                }
                entsize =
                    fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
                if (entsize > size - used) {
                    if (e.ino != 0)
                        a.inodes.forget(e.ino, 1);
                    break;
                }
                if (e.ino != 0)
                    counted.push_back(e.ino);
            } else {
                struct stat st {};
                st.st_ino = dh.entry_ino;
                st.st_mode = static_cast<mode_t>(dh.entry_type) << 12;
                entsize = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
                if (entsize > size - used)
                    break;
            }
            used += entsize;
            dh.has_entry = false;
            dh.offset = next;
        }
        lock.unlock();
        // An error after some entries: return those; the next call hits it again.
        if (err != 0 && used == 0) {
            for (Ino i : counted)
                a.inodes.forget(i, 1);
            return err;
        }
        if (fuse_reply_buf(req, buf.data(), used) != 0) {
            for (Ino i : counted)
                a.inodes.forget(i, 1);
        }
        return 0;
    });
}

// opendir while the backing is offline: the listing the index holds whole,
// if any.
int opendir_offline(fuse_req_t req, Adapter& a, fuse_ino_t ino, fuse_file_info* fi) {
    int err = EIO;
    auto listed = open_listing(a, ino, err);
    if (!listed)
        return err;
    if (const int denied = offline_access(req, a, *a.inodes.attr_of(ino), R_OK))
        return denied;
    DirHandle* dh = a.dirs.adopt(std::move(listed));
    fi->fh = reinterpret_cast<std::uint64_t>(dh); // NOLINT
    if (fuse_reply_open(req, fi) != 0)
        a.dirs.take(dh);
    return 0;
}

} // namespace

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              dev_t rdev) noexcept {
    guarded(req, "mknod",
            [&] { return make_node(req, parent, name, NodeKind::mknod, mode, rdev, nullptr); });
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept {
    guarded(req, "mkdir",
            [&] { return make_node(req, parent, name, NodeKind::mkdir, mode, 0, nullptr); });
}

void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) noexcept {
    guarded(req, "symlink",
            [&] { return make_node(req, parent, name, NodeKind::symlink, 0, 0, link); });
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) noexcept {
    guarded(req, "link", [&] {
        Adapter& a = adapter_of(req);
        if (const int refused = unless_online(a, EROFS))
            return refused;
        if (ino == kControlIno)
            return EPERM;
        if (is_control_name(newparent, newname))
            return EEXIST;
        InodeRef inode = a.inodes.get(ino);
        InodeRef dir = a.inodes.get(newparent);
        if (!inode || !dir)
            return ESTALE;
        struct stat before {};
        if (const int err = backing::stat_fd(inode->fd(), before))
            return err;
        std::unique_ptr<cache::AttrChange> change; // the link moves its ctime
        if (const int err = begin_attr_change(a, inode->fd(), before, change))
            return err;
        const DirBefore dir_was = dir_before(a, dir);
        {
            CallerScope as(req, true);
            if (const int err = backing::link_to(inode->fd(), dir->fd(), newname))
                return err;
        }
        if (change)
            note_change(a, ino, change->finish());
        change.reset(); // before the lookup, whose reply shows the record
        fuse_entry_param e{};
        if (const int err = lookup_entry(a, *dir, newname, e))
            return or_eio(err);
        note_name_added(a, dir, dir_was, newname, e.attr);
        reply_entry(req, a, e);
        return 0;
    });
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
    guarded(req, "unlink", [&] {
        Adapter& a = adapter_of(req);
        if (const int refused = unless_online(a, EROFS))
            return refused;
        if (is_control_name(parent, name))
            return EPERM;
        InodeRef dir = a.inodes.get(parent);
        if (!dir)
            return ESTALE;
        CallerScope as(req, check_as_caller(a));
        auto fd = backing::open_path(dir->fd(), name);
        if (!fd)
            return errno_of(fd.error());
        struct stat before {};
        if (const int err = backing::stat_fd(fd->get(), before))
            return err;
        std::unique_ptr<cache::AttrChange> change;
        if (const int err = losing_name(a, fd->get(), before, change))
            return err;
        const DirBefore dir_was = dir_before(a, dir);
        if (const int err = backing::unlink_at(dir->fd(), name, 0))
            return err;
        a.inodes.mark_stale(parent, name); // its link count and ctime moved
        a.inodes.unname(parent, name);
        note_name_removed(a, dir, dir_was, name);
        note_last_name_removed(a, before);
        lost_name(a, fd->get(), before, std::move(change));
        fuse_reply_err(req, 0);
        return 0;
    });
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
    guarded(req, "rmdir", [&] {
        Adapter& a = adapter_of(req);
        if (const int refused = unless_online(a, EROFS))
            return refused;
        if (is_control_name(parent, name))
            return EPERM;
        InodeRef dir = a.inodes.get(parent);
        if (!dir)
            return ESTALE;
        CallerScope as(req, check_as_caller(a));
        // Its per-path settings go with it (a later directory that gets the
        // same inode number must not inherit them): found before, dropped
        // after the rmdir succeeded.
        UniqueFd gone;
        struct stat gone_st {};
        if (a.data.has_path_settings())
            if (auto g = backing::open_path(dir->fd(), name);
                g && backing::stat_fd(g->get(), gone_st) == 0 &&
                a.data.path_settings(cache::FileRef{g->get(), gone_st}))
                gone = std::move(*g);
        struct stat removed {};
        const bool known = backing::stat_at(dir->fd(), name, removed) == 0;
        const DirBefore dir_was = dir_before(a, dir);
        if (const int err = backing::unlink_at(dir->fd(), name, AT_REMOVEDIR))
            return err;
        a.inodes.mark_stale(parent, name); // its link count and ctime moved
        a.inodes.unname(parent, name);
        note_name_removed(a, dir, dir_was, name);
        if (known)
            note_dir_removed(a, removed);
        if (gone)
            if (auto r = a.data.set_path_settings(cache::FileRef{gone.get(), gone_st}, {}); !r)
                log::warn("rmdir: cannot drop the settings of ", name, ": ", to_string(r.error()));
        fuse_reply_err(req, 0);
        return 0;
    });
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) noexcept {
    guarded(req, "rename", [&] {
        Adapter& a = adapter_of(req);
        if (const int refused = unless_online(a, EROFS))
            return refused;
        if (is_control_name(parent, name) || is_control_name(newparent, newname))
            return EPERM;
        if ((flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0)
            return EINVAL; // RENAME_WHITEOUT is for overlayfs on real filesystems
        InodeRef from = a.inodes.get(parent);
        InodeRef to = a.inodes.get(newparent);
        if (!from || !to)
            return ESTALE;
        CallerScope as(req, check_as_caller(a));
        // A plain rename over a regular file may drop the victim's last name.
        UniqueFd victim;
        struct stat victim_st {};
        if (flags == 0) {
            if (auto v = backing::open_path(to->fd(), newname);
                v && backing::stat_fd(v->get(), victim_st) == 0 && S_ISREG(victim_st.st_mode)) {
                struct stat src_st {};
                // Renaming a name onto another name of the same file does nothing.
                if (backing::stat_at(from->fd(), name, src_st) == 0 &&
                    !(src_st.st_dev == victim_st.st_dev && src_st.st_ino == victim_st.st_ino))
                    victim = std::move(*v);
            }
        }
        // The files that move (and a victim that keeps other names) change
        // their ctime: bracketed, one guard a file, taken in one order.
        struct Moving {
            UniqueFd fd;
            struct stat st {};
        };
        auto moving = [](int dirfd, const char* n) {
            Moving m;
            if (auto f = backing::open_path(dirfd, n);
                f && backing::stat_fd(f->get(), m.st) == 0 && S_ISREG(m.st.st_mode))
                m.fd = std::move(*f);
            return m;
        };
        const auto same = [](const struct stat& x, const struct stat& y) {
            return x.st_dev == y.st_dev && x.st_ino == y.st_ino;
        };
        Moving src = moving(from->fd(), name);
        Moving other = (flags & RENAME_EXCHANGE) != 0 ? moving(to->fd(), newname) : Moving{};
        if (other.fd && src.fd && same(src.st, other.st))
            other = Moving{}; // two names of one file: one guard
        struct Guarded {
            const struct stat* st;
            int fd;
            bool moves; // it gets a new name
        };
        std::vector<Guarded> files;
        if (src.fd)
            files.push_back({&src.st, src.fd.get(), true});
        if (other.fd)
            files.push_back({&other.st, other.fd.get(), true});
        if (victim && victim_st.st_nlink > 1)
            files.push_back({&victim_st, victim.get(), false});
        std::sort(files.begin(), files.end(), [](const Guarded& x, const Guarded& y) {
            return std::pair(x.st->st_dev, x.st->st_ino) < std::pair(y.st->st_dev, y.st->st_ino);
        });
        std::vector<std::pair<bool, std::unique_ptr<cache::AttrChange>>> changes;
        for (const Guarded& g : files) {
            std::unique_ptr<cache::AttrChange> change;
            if (const int err = begin_attr_change(a, g.fd, *g.st, change))
                return err; // the guards taken so far end unchanged
            changes.emplace_back(g.moves, std::move(change));
        }
        const bool one_dir = from->ino() == to->ino();
        DirBefore from_was = dir_before(a, from);
        DirBefore to_was = one_dir ? from_was : dir_before(a, to);
        if (const int err = backing::rename_at(from->fd(), name, to->fd(), newname, flags))
            return err;
        // Per-path policy is inherited along the parent the inode table
        // keeps: the moved files now inherit from their new directory.
        // The names, for lookups while the backing is offline: the target's
        // old file lost its name, the source's name is free unless swapped.
        a.inodes.mark_stale(newparent, newname); // replaced: its link count moved
        a.inodes.mark_stale(parent, name);       // moved: its ctime
        a.inodes.unname(newparent, newname);
        a.inodes.unname(parent, name);
        // One rename, up to three notes: each directory's next note starts
        // from the times its last one left (one directory: the same times).
        if ((flags & RENAME_EXCHANGE) == 0) {
            from_was = note_name_removed(a, from, from_was, name);
            if (one_dir)
                to_was = from_was;
        }
        struct stat moved {};
        if (backing::stat_at(to->fd(), newname, moved) == 0) {
            a.inodes.reparent(SrcId{moved.st_dev, moved.st_ino}, newparent, newname);
            to_was = note_name_added(a, to, to_was, newname, moved);
            if (one_dir)
                from_was = to_was;
        }
        if ((flags & RENAME_EXCHANGE) != 0 &&
            backing::stat_at(from->fd(), name, moved) == 0) {
            a.inodes.reparent(SrcId{moved.st_dev, moved.st_ino}, parent, name);
            a.inodes.mark_stale(parent, name);
            note_name_added(a, from, from_was, name, moved);
        }
        for (auto& [moves, change] : changes)
            if (change)
                (void)change->finish(moves);
        changes.clear();
        if (victim && victim_st.st_nlink <= 1)
            a.data.removed(cache::FileRef{victim.get(), victim_st});
        if (victim)
            note_last_name_removed(a, victim_st);
        fuse_reply_err(req, 0);
        return 0;
    });
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
    guarded(req, "opendir", [&] {
        Adapter& a = adapter_of(req);
        if (ino == kControlIno)
            return ENOTDIR;
        if (!a.gate.online())
            return opendir_offline(req, a, ino, fi);
        cache::MetaCache* m = a.data.listings();
        auto listed = trusted_listing(a, ino);
        auto hold = listed && m != nullptr ? m->hold_listing(*listed) : nullptr;
        if (hold) {
            // coherency=timeout|none: names still fresh, listed from the index.
            if (const int denied = offline_access(req, a, *a.inodes.attr_of(ino), R_OK))
                return denied;
            auto handle = std::make_unique<DirHandle>(nullptr, ino == kRootIno, listed);
            handle->hold = std::move(hold);
            DirHandle* dh = a.dirs.adopt(std::move(handle));
            fi->fh = reinterpret_cast<std::uint64_t>(dh); // NOLINT
            if (fuse_reply_open(req, fi) != 0)
                a.dirs.take(dh);
            return 0;
        }
        InodeRef inode = a.inodes.get(ino);
        if (!inode)
            return ESTALE;
        UniqueFd fd;
        struct stat st {};
        if (const int err = gated_reopen(a, inode->fd(), O_RDONLY | O_DIRECTORY,
                                         caller_id(req, check_as_caller(a)), fd, &st)) {
            // kNoAnswer: it stopped answering just now.
            return err == kNoAnswer ? opendir_offline(req, a, ino, fi) : err;
        }
        // The adapter owns it until releasedir (or the mount's end).
        DirHandle* dh = a.dirs.adopt(open_dir_handle(a, std::move(fd), st, ino == kRootIno));
        fi->fh = reinterpret_cast<std::uint64_t>(dh); // NOLINT
        if (fuse_reply_open(req, fi) != 0)
            a.dirs.take(dh);
        return 0;
    });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                fuse_file_info* fi) noexcept {
    do_readdir(req, ino, size, off, fi, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    fuse_file_info* fi) noexcept {
    do_readdir(req, ino, size, off, fi, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) noexcept {
    guarded(req, "releasedir", [&] {
        adapter_of(req).dirs.take(&dir_of(fi)); // freed here
        fuse_reply_err(req, 0);
        return 0;
    });
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) noexcept {
    guarded(req, "fsyncdir", [&] {
        Adapter& a = adapter_of(req);
        DirHandle& dh = dir_of(fi);
        UniqueFd opened;
        int fd = dh.stream != nullptr ? dh.stream->fd() : -1;
        if (fd < 0) {
            // Listed from the index: the directory is opened now, if the
            // backing is there to sync it.
            InodeRef inode = a.gate.online() ? a.inodes.get(ino) : InodeRef{};
            if (!inode)
                return EIO;
            auto dirfd = backing::reopen(inode->fd(), O_RDONLY | O_DIRECTORY);
            if (!dirfd)
                return errno_of(dirfd.error());
            opened = std::move(*dirfd);
            fd = opened.get();
        }
        const auto synced = backing::sync_file(fd, datasync != 0);
        fuse_reply_err(req, synced ? 0 : errno_of(synced.error()));
        return 0;
    });
}

} // namespace overcache::fuse
