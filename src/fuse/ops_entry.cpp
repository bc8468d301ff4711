// DOC: entry and attribute handlers: lookup, forget, getattr, setattr,
// readlink, statfs, access, and the control file's entry. Attributes are the
// backing's own, st_ino included (the kernel shows attr.st_ino to stat(2));
// the fuse_ino_t is only the kernel's handle on an InodeTable entry.
// Metadata changes go to the backing first, then the DataPath hears of them
// (invalidate for a size change, touched for the rest). Every handler is
// noexcept and replies once through guarded() (see reply.hpp).
#include "backing/backing_fs.hpp"
#include "fuse/adapter.hpp"
#include "fuse/backing_calls.hpp"
#include "fuse/coherency.hpp"
#include "fuse/listings.hpp"
#include "fuse/reply.hpp"
#include "util/heap_usage.hpp"
#include "util/wall_clock.hpp"

#include <cstring>
#include <fcntl.h>
#include <limits>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <vector>

namespace overcache::fuse {

CallerId caller_id(fuse_req_t req, bool active) {
    CallerId who;
    if (!active || !backing::can_switch_credentials())
        return who;
    const fuse_ctx* ctx = fuse_req_ctx(req);
    if (ctx->uid == 0 && ctx->gid == 0)
        return who;
    who.active = true;
    who.uid = ctx->uid;
    who.gid = ctx->gid;
    who.groups.resize(64);
    int n = fuse_req_getgroups(req, static_cast<int>(who.groups.size()), who.groups.data());
    if (n > static_cast<int>(who.groups.size())) {
        who.groups.resize(static_cast<std::size_t>(n));
        n = fuse_req_getgroups(req, n, who.groups.data());
    }
    // The process may be gone (n < 0): it then gets no supplementary groups.
    who.groups.resize(n > 0 ? std::min<std::size_t>(static_cast<std::size_t>(n), who.groups.size())
                            : 0);
    return who;
}

CallerScope::CallerScope(const CallerId& who) {
    if (who.active)
        as_.emplace(who.uid, who.gid, std::span<const gid_t>(who.groups.data(), who.groups.size()));
}

int lookup_entry(Adapter& a, const InodeRef& parent, const char* name, fuse_entry_param& e,
                 const CallerId& who, bool gated, bool record_always) {
    UniqueFd fd;
    struct stat st {};
    const std::int64_t asked = wall_ns();
    if (gated) {
        if (const int err = gated_open_path(a, parent.fd(), name, who, fd, st))
            return err;
    } else {
        CallerScope as(who);
        auto opened = backing::open_path(parent.fd(), name);
        if (!opened)
            return errno_of(opened.error());
        if (const int err = backing::stat_fd(opened->get(), st))
            return err;
        fd = std::move(*opened);
    }
    const struct stat seen = st;
    InodeRef inode = a.inodes.lookup(std::move(fd), seen, parent.ino(), name, asked);
    remember_attr(a, inode, seen, asked, record_always);
    if (S_ISREG(st.st_mode))
        a.data.show_attrs(cache::FileRef{inode->fd(), seen}, st);
    std::memset(&e, 0, sizeof e);
    e.ino = inode->ino();
    e.generation = 0; // numbers are never reused within a mount
    e.attr = st;
    e.attr_timeout = a.timeouts.attr;
    e.entry_timeout = a.timeouts.entry;
    return 0;
}

int lookup_offline(fuse_req_t req, Adapter& a, fuse_ino_t parent, const char* name,
                   fuse_entry_param& e) {
    if (!a.gate.offline_ok())
        return EIO;
    // Searching a directory needs its x bit, as on the backing.
    if (auto dir = a.inodes.attr_of(parent); !dir)
        return EIO;
    else if (const int denied = offline_access(req, a, *dir, X_OK))
        return denied;
    auto known = a.inodes.lookup_known(parent, name);
    if (!known) // the index may know it
        known = adopt_from_index(a, parent, name);
    if (!known) // a whole listing says for sure; else it is the backing's to say
        return known_absent(a, parent, name) ? ENOENT : EIO;
    struct stat st = known->attr;
    if (S_ISREG(st.st_mode))
        a.data.show_attrs(cache::FileRef{-1, known->attr}, st);
    std::memset(&e, 0, sizeof e);
    e.ino = known->ino;
    e.attr = st;
    e.attr_timeout = a.timeouts.attr;
    e.entry_timeout = a.timeouts.entry;
    return 0;
}

void reply_entry(fuse_req_t req, Adapter& a, const fuse_entry_param& e) {
    // An interrupted request is not seen by the kernel, which then never
    // forgets the lookup we counted.
    if (fuse_reply_entry(req, &e) != 0 && e.ino != 0)
        a.inodes.forget(e.ino, 1);
}

void control_attr(struct stat& st) noexcept {
    std::memset(&st, 0, sizeof st);
    st.st_ino = control::kControlStIno;
    // Everyone who can see the mount reads it; the mount's owner (and root)
    // write commands to it.
    st.st_mode = S_IFREG | 0644;
    st.st_nlink = 1;
    st.st_uid = ::geteuid();
    st.st_gid = ::getegid();
    st.st_size = 0; // opened with direct_io: reads are not bounded by the size
    st.st_blksize = 4096;
}

void control_entry(fuse_entry_param& e, const Adapter& a) noexcept {
    std::memset(&e, 0, sizeof e);
    e.ino = kControlIno;
    control_attr(e.attr);
    e.attr_timeout = a.timeouts.attr;
    e.entry_timeout = a.timeouts.entry;
}

void after_init(Adapter& a) noexcept {
    try {
        std::call_once(a.init_done, [&] {
            if (a.readahead_path.empty())
                return;
            const int fd = ::open(a.readahead_path.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd < 0)
                return;
            const char kValue[] = "1024\n"; // KiB: sequential reads come as 1 MiB requests
            if (::write(fd, kValue, sizeof kValue - 1) < 0)
                log::debug("cannot set ", a.readahead_path, ": ", std::strerror(errno));
            ::close(fd);
        });
    } catch (...) {
        // Only a performance setting.
    }
}

control::StatLines all_stats(Adapter& a) {
    // Settings first, then what the cache counts.
    control::StatSampler::Reading r = a.stat_sampler.read(); // a.data.stats(), its windows
    control::StatLines lines;
    a.settings.add_lines(lines);
    for (auto& l : r.lines)
        lines.push_back(std::move(l));
    lines.emplace_back("inodes", std::to_string(a.inodes.size()));
    lines.emplace_back("inodes_pinned", std::to_string(a.inodes.pinned()));
    lines.emplace_back("inodes_dropped", std::to_string(a.trimmer.dropped()));
    lines.emplace_back("open_files", std::to_string(a.open_files.load()));
    lines.emplace_back("heap_bytes", std::to_string(heap_in_use_bytes()));
    const backing::Gate::Stats g = a.gate.stats();
    // What backing_calls=auto chose: inline calls have no deadline.
    lines.emplace_back("backing_calls", a.gate.offline_ok() ? "gated" : "inline");
    lines.emplace_back("backing_state", g.online ? "online" : "offline");
    lines.emplace_back("backing_timeouts", std::to_string(g.timeouts));
    lines.emplace_back("backing_offline_total", std::to_string(g.offline_total));
    lines.emplace_back("backing_offline_seconds",
                       std::to_string(static_cast<std::uint64_t>(g.offline_seconds)));
    const backing::ChangeWatch::Counts w = a.watch.counts();
    lines.emplace_back("backing_watch", std::string(backing::ChangeWatch::name(a.watch.state())));
    lines.emplace_back("backing_watch_reports", std::to_string(w.reports));
    lines.emplace_back("backing_watch_overflows", std::to_string(w.overflows));
    a.commands.add_stats(lines);
    lines.insert(lines.end(), r.windows.begin(), r.windows.end());
    return lines;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
    guarded(req, "lookup", [&] {
        Adapter& a = adapter_of(req);
        after_init(a);
        fuse_entry_param e{};
        if (is_control_name(parent, name)) {
            control_entry(e, a);
            fuse_reply_entry(req, &e);
            return 0;
        }
        int err = kNoAnswer;
        if (a.gate.online() && trusting(a)) {
            // coherency=timeout|none: from what the mount kept, while fresh;
            // searching the directory needs its x bit, as on the backing.
            auto dir_attr = a.inodes.attr_of(parent);
            if (dir_attr && offline_access(req, a, *dir_attr, X_OK) == 0)
                err = trusted_lookup(a, parent, name, e);
        }
        if (err == kNoAnswer && a.gate.online()) {
            InodeRef dir = a.inodes.get(parent);
            if (!dir)
                return ESTALE;
            err = lookup_entry(a, *dir, name, e, caller_id(req, check_as_caller(a)));
        }
        if (err == kNoAnswer)
            err = lookup_offline(req, a, parent, name, e);
        if (err == ENOENT && a.timeouts.negative > 0) {
            std::memset(&e, 0, sizeof e);
            e.entry_timeout = a.timeouts.negative;
            fuse_reply_entry(req, &e);
            return 0;
        }
        if (err != 0)
            return err;
        reply_entry(req, a, e);
        return 0;
    });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, std::uint64_t nlookup) noexcept {
    guarded_no_reply(req, "forget", [&] { adapter_of(req).inodes.forget(ino, nlookup); });
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) noexcept {
    guarded_no_reply(req, "forget_multi", [&] {
        Adapter& a = adapter_of(req);
        for (size_t i = 0; i < count; ++i)
            a.inodes.forget(forgets[i].ino, forgets[i].nlookup);
    });
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
    guarded(req, "getattr", [&] {
        Adapter& a = adapter_of(req);
        after_init(a);
        struct stat st {};
        if (ino == kControlIno) {
            control_attr(st);
            fuse_reply_attr(req, &st, a.timeouts.attr);
            return 0;
        }
        // An open handle answers without the inode's path fd (an unlinked
        // file may have no way back to it but its open descriptor); one
        // opened while the backing was offline has neither.
        int any_fd = -1;
        InodeRef inode;
        int err = kNoAnswer;
        if (a.gate.online() && trusting(a)) {
            if (auto kept = trusted_attr(a, ino)) {
                fuse_reply_attr(req, &*kept, a.timeouts.attr);
                return 0;
            }
        }
        const std::int64_t asked = wall_ns();
        if (a.gate.online()) {
            if (fi != nullptr && !file_of(fi).control && backing_fd_of(file_of(fi)) >= 0) {
                any_fd = backing_fd_of(file_of(fi));
            } else {
                inode = a.inodes.get(ino);
                if (!inode)
                    return ESTALE;
                any_fd = inode->fd();
            }
            err = gated_stat(a, any_fd, st);
        }
        if (err == kNoAnswer) {
            // Offline: the attributes the backing gave last.
            auto known = a.gate.offline_ok() ? a.inodes.attr_of(ino) : std::nullopt;
            if (!known)
                return EIO;
            st = *known;
            if (S_ISREG(st.st_mode))
                a.data.show_attrs(cache::FileRef{-1, *known}, st);
            fuse_reply_attr(req, &st, a.timeouts.attr);
            return 0;
        }
        if (err != 0)
            return err;
        if (inode) {
            inode->note_attr(st, asked);
            remember_attr(a, inode, st, asked);
        }
        if (S_ISREG(st.st_mode)) {
            const struct stat seen = st;
            note_change(a, ino, a.data.getattr(cache::FileRef{any_fd, seen}, st));
        }
        fuse_reply_attr(req, &st, a.timeouts.attr);
        return 0;
    });
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                fuse_file_info* fi) noexcept {
    guarded(req, "setattr", [&] {
        Adapter& a = adapter_of(req);
        if (ino == kControlIno) {
            // Only the truncate of an open with O_TRUNC where the kernel
            // does not pass O_TRUNC to open (no atomic_o_trunc): a no-op.
            constexpr int kOwnerChanges =
                FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID;
            if ((to_set & FUSE_SET_ATTR_SIZE) == 0 || attr->st_size != 0 ||
                (to_set & kOwnerChanges) != 0)
                return EPERM;
            if (!may_command(req, a))
                return EACCES;
            struct stat st {};
            control_attr(st);
            fuse_reply_attr(req, &st, a.timeouts.attr);
            return 0;
        }
        if (const int refused = unless_online(a, EROFS))
            return refused;
        // An open handle is used when the kernel gives one (ftruncate,
        // futimens): it works even if the file's mode forbids a reopen, and
        // for an unlinked file.
        const int ofd = (fi != nullptr && !file_of(fi).control) ? backing_fd_of(file_of(fi)) : -1;
        InodeRef inode = a.inodes.get(ino);
        if (!inode && ofd < 0)
            return ESTALE;
        CallerScope as(req, check_as_caller(a));
        // The attributes from before our change, for the cache to tell a
        // change behind the mount from ours (weak cache consistency).
        const int any_fd = ofd >= 0 ? ofd : inode->fd();
        struct stat before {};
        if (const int err = backing::stat_fd(any_fd, before))
            return err;
        // The kernel's writeback cache sending the mtime (and ctime, which
        // no caller can set) of writes it held: a file ahead of the backing
        // keeps it in the cache, so a failing backing fails no fsync.
        constexpr int kFlushTimes = FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_CTIME;
        if ((to_set & ~kFlushTimes) == 0 && (to_set & kFlushTimes) == kFlushTimes &&
            S_ISREG(before.st_mode) &&
            a.data.keep_mtime(cache::FileRef{any_fd, before}, attr->st_mtim)) {
            struct stat st = before;
            a.data.show_attrs(cache::FileRef{any_fd, before}, st);
            fuse_reply_attr(req, &st, a.timeouts.attr);
            return 0;
        }
        cache::ChangeOut changed;
        // The size first: a truncate is a change of the bytes, which the
        // DataPath makes itself; the rest changes only the inode, bracketed.
        if ((to_set & FUSE_SET_ATTR_SIZE) != 0) {
            if (!S_ISREG(before.st_mode))
                return S_ISDIR(before.st_mode) ? EISDIR : EINVAL;
            auto r = a.data.truncate(any_fd, ofd >= 0, static_cast<std::uint64_t>(attr->st_size));
            if (!r)
                return errno_of(r.error());
            changed.backing_changed |= r->backing_changed;
            if (const int err = backing::stat_fd(any_fd, before))
                return err;
            // HANDLE_KILLPRIV_V2 (kernel_channel.hpp): a caller without
            // CAP_FSETID truncated; a local filesystem drops setuid (and
            // group-executable setgid) then, which the daemon's truncate as
            // root did not. Done as a mode change of this same setattr.
            const mode_t kept = mode_without_setid(before.st_mode);
            if ((to_set & FUSE_SET_ATTR_MODE) == 0 && request_flags().kill_suidgid &&
                kept != before.st_mode) {
                to_set |= FUSE_SET_ATTR_MODE;
                attr->st_mode = kept & 07777;
            }
        }
        std::unique_ptr<cache::AttrChange> change;
        if (to_set != FUSE_SET_ATTR_SIZE)
            if (const int err = begin_attr_change(a, any_fd, before, change))
                return err;

        if ((to_set & FUSE_SET_ATTR_MODE) != 0) {
            int err = 0;
            if (ofd >= 0)
                err = backing::set_mode_fd(ofd, attr->st_mode);
            else if (inode->is_symlink())
                err = EOPNOTSUPP; // Linux cannot change a symlink's mode
            else
                err = backing::set_mode(inode->fd(), attr->st_mode);
            if (err != 0)
                return err;
        }
        constexpr int kChanges = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
                                 FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                                 FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW;
        if ((to_set & kChanges) == 0) {
            // chown(f, -1, -1) reaches us as a setattr that changes nothing;
            // on the backing it still updates ctime (and drops set-id bits
            // as the kernel decided), so do the same no-op chown there.
            const auto none_uid = static_cast<uid_t>(-1);
            const auto none_gid = static_cast<gid_t>(-1);
            const int err = ofd >= 0 ? backing::set_owner_fd(ofd, none_uid, none_gid)
                                     : backing::set_owner(inode->fd(), none_uid, none_gid);
            if (err != 0)
                return err;
        }
        if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) != 0) {
            const uid_t uid =
                (to_set & FUSE_SET_ATTR_UID) != 0 ? attr->st_uid : static_cast<uid_t>(-1);
            const gid_t gid =
                (to_set & FUSE_SET_ATTR_GID) != 0 ? attr->st_gid : static_cast<gid_t>(-1);
            const int err = ofd >= 0 ? backing::set_owner_fd(ofd, uid, gid)
                                     : backing::set_owner(inode->fd(), uid, gid);
            if (err != 0)
                return err;
        }
        if ((to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) != 0) {
            struct timespec times[2];
            times[0].tv_sec = 0;
            times[1].tv_sec = 0;
            times[0].tv_nsec = UTIME_OMIT;
            times[1].tv_nsec = UTIME_OMIT;
            if ((to_set & FUSE_SET_ATTR_ATIME_NOW) != 0)
                times[0].tv_nsec = UTIME_NOW;
            else if ((to_set & FUSE_SET_ATTR_ATIME) != 0)
                times[0] = attr->st_atim;
            if ((to_set & FUSE_SET_ATTR_MTIME_NOW) != 0)
                times[1].tv_nsec = UTIME_NOW;
            else if ((to_set & FUSE_SET_ATTR_MTIME) != 0)
                times[1] = attr->st_mtim;
            int err = 0;
            if (ofd >= 0)
                err = backing::set_times_fd(ofd, times);
            else
                err = backing::set_times(inode->fd(), times);
            if (err != 0)
                return err;
        }

        if (change)
            changed.backing_changed |= change->finish().backing_changed;
        change.reset();
        struct stat st {};
        if (const int err = backing::stat_fd(any_fd, st))
            return err;
        if (S_ISREG(st.st_mode)) {
            const struct stat seen = st;
            a.data.show_attrs(cache::FileRef{any_fd, seen}, st);
        }
        note_change(a, ino, changed);
        a.inodes.mark_stale(ino); // kept attributes are from before the change
        fuse_reply_attr(req, &st, a.timeouts.attr);
        return 0;
    });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) noexcept {
    guarded(req, "readlink", [&] {
        Adapter& a = adapter_of(req);
        if (ino == kControlIno)
            return EINVAL;
        if (!a.gate.online()) {
            // Offline: the target kept with the link's last attributes.
            auto target = a.gate.offline_ok() ? kept_target(a, ino) : std::nullopt;
            if (!target)
                return EIO;
            fuse_reply_readlink(req, target->c_str());
            return 0;
        }
        InodeRef inode = a.inodes.get(ino);
        if (!inode)
            return ESTALE;
        std::string target;
        if (const int err = backing::read_link(inode->fd(), target)) {
            if (err != EIO || a.gate.online())
                return err;
            // It stopped answering just now: as offline, above.
            auto kept = a.gate.offline_ok() ? kept_target(a, ino) : std::nullopt;
            if (!kept)
                return EIO;
            target = std::move(*kept);
        }
        fuse_reply_readlink(req, target.c_str());
        return 0;
    });
}

void op_statfs(fuse_req_t req, fuse_ino_t ino) noexcept {
    guarded(req, "statfs", [&] {
        Adapter& a = adapter_of(req);
        struct statvfs sv {};
        int err = kNoAnswer;
        if (a.gate.online()) {
            InodeRef inode = ino == kControlIno ? a.inodes.root() : a.inodes.get(ino);
            if (!inode)
                inode = a.inodes.root();
            err = gated_statfs(a, inode->fd(), sv);
        }
        if (err != 0 && err != kNoAnswer)
            return err;
        {
            // df keeps working while the backing is offline: the numbers
            // it gave last.
            std::lock_guard lk(a.last_statfs_mu);
            if (err == 0)
                a.last_statfs = sv;
            else if (a.last_statfs && a.gate.offline_ok())
                sv = *a.last_statfs;
            else
                return EIO;
        }
        fuse_reply_statfs(req, &sv);
        return 0;
    });
}

void op_access(fuse_req_t req, fuse_ino_t ino, int mask) noexcept {
    guarded(req, "access", [&] {
        Adapter& a = adapter_of(req);
        if (const int refused = unless_online(a, EIO))
            return refused;
        if (ino == kControlIno) {
            const bool denied = (mask & X_OK) != 0 || ((mask & W_OK) != 0 && !may_command(req, a));
            fuse_reply_err(req, denied ? EACCES : 0);
            return 0;
        }
        InodeRef inode = a.inodes.get(ino);
        if (!inode)
            return ESTALE;
        // AT_EACCESS checks with the fs ids, which CallerScope sets.
        CallerScope as(req, true);
        const backing::ProcPath p(inode->fd());
        const int err = ::faccessat(AT_FDCWD, p.c_str(), mask, AT_EACCESS) == 0 ? 0 : errno;
        fuse_reply_err(req, err);
        return 0;
    });
}

} // namespace overcache::fuse
