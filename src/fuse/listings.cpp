// DOC: the adapter's side of the directory listings in the index (see
// listings.hpp): keys of directories from the inode table, recording at
// opendir, changes through the mount, and offline listings and lookups.
#include "fuse/listings.hpp"

#include "backing/backing_fs.hpp"
#include "fuse/coherency.hpp"
#include "fuse/dir_stream.hpp"
#include "fuse/reply.hpp"
#include "util/wall_clock.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <sys/xattr.h>
#include <unistd.h>
#include <vector>

namespace overcache::fuse {
namespace {

// The backing identity of the directory behind `dir` (online: may stat it).
std::optional<meta::FileKey> key_of_dir(cache::MetaCache& m, const InodeRef& dir) {
    if (auto k = m.known_key(dir.src().dev, dir.src().ino))
        return k;
    struct stat st {};
    if (dir.fd() < 0 || backing::stat_fd(dir.fd(), st) != 0)
        return std::nullopt;
    return m.key_of(dir.fd(), st);
}

// Offline: `ino`'s identity, without opening anything.
std::optional<meta::FileKey> key_offline(cache::MetaCache& m, const Adapter& a, Ino ino) {
    auto link = a.inodes.link_of(ino);
    if (!link)
        return std::nullopt;
    return m.known_key(link->src.dev, link->src.ino);
}

// Whether `rec` is as new as the directory's attributes the mount saw last:
// if the mount saw it change since (behind it), the names may have too.
bool current(const meta::DirRecord& rec, const std::optional<struct stat>& seen) {
    if (!seen)
        return true;
    return rec.mtime_ns >= ns_of(seen->st_mtim) && rec.ctime_ns >= ns_of(seen->st_ctim);
}

// Offline: the key of `ino`'s listing if the index holds it whole and as
// new as the mount's last view of the directory (and its record).
std::optional<meta::FileKey> vouched_listing(cache::MetaCache& m, const Adapter& a, Ino ino,
                                             meta::DirRecord* record = nullptr) {
    auto k = key_offline(m, a, ino);
    if (!k)
        return std::nullopt;
    auto rec = m.whole(*k);
    if (!rec || !current(*rec, a.inodes.attr_of(ino)))
        return std::nullopt;
    if (record != nullptr)
        *record = *rec;
    return k;
}

std::int64_t ctime_ns(const struct stat& st) noexcept {
    return ns_of(st.st_ctim);
}

} // namespace

namespace {

// Offline: the entry of `name` in `parent` the mount knows, else the one the
// index has.
std::optional<InodeTable::Known> known_or_adopted(Adapter& a, Ino parent, std::string_view name) {
    if (auto known = a.inodes.lookup_known(parent, name))
        return known;
    return adopt_from_index(a, parent, name);
}

} // namespace

std::unique_ptr<DirHandle> open_dir_handle(Adapter& a, UniqueFd fd, const struct stat& st,
                                           bool is_root) {
    cache::MetaCache* m = a.data.listings();
    const int raw = fd.get();
    auto stream = std::make_unique<DirStream>(std::move(fd));
    if (m == nullptr)
        return std::make_unique<DirHandle>(std::move(stream), is_root);
    if (auto k = m->current_listing(raw, st)) {
        if (auto hold = m->hold_listing(*k)) {
            auto dh = std::make_unique<DirHandle>(std::move(stream), is_root, k);
            dh->hold = std::move(hold);
            return dh;
        }
    }
    auto dh = std::make_unique<DirHandle>(std::move(stream), is_root);
    dh->recorder = m->record_listing(raw, st);
    return dh;
}

namespace {

// A name of `dir` changed through the mount: `change` writes it to the
// index as of the directory's times before and now; without them the
// listing cannot say as of when it is right, and is dropped.
template <class Change>
DirBefore note_change(Adapter& a, const InodeRef& dir, const DirBefore& before, Change change) {
    cache::MetaCache* m = a.data.listings();
    if (m == nullptr)
        return std::nullopt;
    auto k = key_of_dir(*m, dir);
    if (!k)
        return std::nullopt;
    struct stat now {};
    const std::int64_t asked = wall_ns();
    if (before && backing::stat_fd(dir.fd(), now) == 0) {
        change(*m, *k, *before, now);
        dir.note_attr(now, asked); // the listing stays fresh with it
        return DirSeen{now, asked};
    }
    m->forget_listing(*k);
    return std::nullopt;
}

} // namespace

DirBefore dir_before(Adapter& a, const InodeRef& dir) {
    struct stat st {};
    const std::int64_t asked = wall_ns();
    if (a.data.listings() == nullptr || backing::stat_fd(dir.fd(), st) != 0)
        return std::nullopt;
    return DirSeen{st, asked};
}

DirBefore note_name_added(Adapter& a, const InodeRef& dir, const DirBefore& before,
                          std::string_view name, const struct stat& child) {
    return note_change(
        a, dir, before,
        [&](cache::MetaCache& m, const meta::FileKey& k, const DirSeen& was,
            const struct stat& now) { m.name_added(k, was.st, now, name, child, was.asked_ns); });
}

DirBefore note_name_removed(Adapter& a, const InodeRef& dir, const DirBefore& before,
                            std::string_view name) {
    return note_change(a, dir, before,
                       [&](cache::MetaCache& m, const meta::FileKey& k, const DirSeen& was,
                           const struct stat& now) { m.name_removed(k, was.st, now, name); });
}

void note_dir_removed(Adapter& a, const struct stat& gone) {
    cache::MetaCache* m = a.data.listings();
    if (m == nullptr)
        return;
    if (auto k = m->known_key(gone.st_dev, gone.st_ino)) {
        m->forget_listing(*k);
        m->forget_attr(*k);
    }
}

void note_last_name_removed(Adapter& a, const struct stat& gone) {
    cache::MetaCache* m = a.data.listings();
    if (m == nullptr || gone.st_nlink > 1)
        return; // still named elsewhere: its attributes stay
    if (auto k = m->known_key(gone.st_dev, gone.st_ino))
        m->forget_attr(*k);
}

std::unique_ptr<DirHandle> open_listing(Adapter& a, Ino ino, int& err) {
    err = EIO;
    cache::MetaCache* m = a.data.listings();
    if (m == nullptr || !a.gate.offline_ok())
        return nullptr;
    auto k = vouched_listing(*m, a, ino);
    if (!k)
        return nullptr;
    auto hold = m->hold_listing(*k);
    if (!hold)
        return nullptr; // dropped to keep within metadata_max just now
    err = 0;
    auto dh = std::make_unique<DirHandle>(nullptr, ino == kRootIno, k);
    dh->hold = std::move(hold);
    return dh;
}

int read_listing(fuse_req_t req, Adapter& a, Ino ino, DirHandle& dh, std::size_t size, off_t off,
                 bool plus) {
    cache::MetaCache* m = a.data.listings();
    if (m == nullptr || !dh.listed)
        return EIO;
    // Online (a handle opened online, and the backing answering) names are
    // looked up on the backing as a listing read from it would be.
    InodeRef dir;
    if (dh.stream != nullptr && plus && a.gate.online() && !(dir = a.inodes.get(ino)))
        return ESTALE;
    // Listed from the index online (coherency=timeout|none): entries from
    // what the mount kept while fresh, else the name alone.
    const bool trusted = dh.stream == nullptr && a.gate.online();
    std::vector<char> buf(size);
    std::vector<Ino> counted; // lookups readdirplus counted, for undoing
    std::size_t used = 0;
    int lookup_err = 0;
    std::string name; // NUL-terminated copy for libfuse
    // Whole at opendir: listed on through a reading of it that began since.
    const int err = m->list(*dh.listed, off, [&](const cache::MetaCache::Entry& ent) {
        name.assign(ent.name);
        if (dh.is_root && name == kControlName)
            return true;
        std::size_t entsize = 0;
        if (plus) {
            fuse_entry_param e{};
            const bool dots = name == "." || name == "..";
            if (!dots && dir) {
                // Online: the backing's answer, as a listing read from it.
                const int lerr = lookup_entry(a, *dir, name.c_str(), e, {}, false);
                if (lerr == ENOENT)
                    return true; // removed since: leave it out
                if (lerr != 0) {
                    lookup_err = lerr;
                    return false;
                }
            } else if (!dots && trusted) {
                if (trusted_lookup(a, ino, name, e) != 0) {
                    std::memset(&e, 0, sizeof e); // the kernel looks it up when it needs more
                    e.attr.st_ino = static_cast<ino_t>(ent.value.child.ino);
                    e.attr.st_mode = static_cast<mode_t>(ent.value.type) << 12;
                }
            } else if (auto known = dots ? std::nullopt : known_or_adopted(a, ino, name)) {
                // Offline: what the mount saw last.
                e.ino = known->ino;
                e.attr = known->attr;
                if (S_ISREG(e.attr.st_mode))
                    a.data.show_attrs(cache::FileRef{-1, known->attr}, e.attr);
                e.attr_timeout = a.timeouts.attr;
                e.entry_timeout = a.timeouts.entry;
            } else {
                // Dots, or listed with nothing to answer a lookup from: the
                // name alone (the kernel looks it up when it needs more).
                e.attr.st_ino = static_cast<ino_t>(ent.value.child.ino);
                e.attr.st_mode = static_cast<mode_t>(ent.value.type) << 12;
            }
            entsize = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(),
                                             &e, ent.next);
            if (entsize > size - used) {
                if (e.ino != 0)
                    a.inodes.forget(e.ino, 1);
                return false;
            }
            if (e.ino != 0)
                counted.push_back(e.ino);
        } else {
            struct stat st {};
            st.st_ino = static_cast<ino_t>(ent.value.child.ino);
            st.st_mode = static_cast<mode_t>(ent.value.type) << 12;
            entsize = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                                        ent.next);
            if (entsize > size - used)
                return false;
        }
        used += entsize;
        return true;
    }, false);
    const int failed = err != 0 ? err : lookup_err;
    if (failed != 0 && used == 0) {
        for (Ino i : counted)
            a.inodes.forget(i, 1);
        return failed;
    }
    m->note_served();
    if (fuse_reply_buf(req, buf.data(), used) != 0)
        for (Ino i : counted)
            a.inodes.forget(i, 1);
    return 0;
}

bool known_absent(Adapter& a, Ino parent, std::string_view name) {
    cache::MetaCache* m = a.data.listings();
    if (m == nullptr)
        return false;
    auto k = vouched_listing(*m, a, parent);
    return k && m->find(*k, name).state == cache::MetaCache::Found::State::absent;
}

void remember_attr(Adapter& a, const InodeRef& inode, const struct stat& st, std::int64_t asked_ns,
                   bool always) {
    cache::MetaCache* m = a.data.listings();
    // Unchanged, but a change was seen to it: the record's time is what
    // the watch vouches from.
    always = always || a.watch.changed_at(st.st_ino) != 0;
    if (m == nullptr || !inode || inode.fd() < 0 || !inode.should_record(st, always))
        return;
    std::string target;
    if (S_ISLNK(st.st_mode)) {
        // Offline, readlink answers from here. A symlink's target never
        // changes in place (a new one is a new inode, with a new ctime).
        if (backing::read_link(inode.fd(), target) != 0)
            target.clear();
    }
    // What ls -l will ask of it (its ACL, its security label): under
    // coherency=timeout|none a file with none is answered from here.
    std::size_t names = 0;
    const int lerr = backing::xattr_names_size(inode.fd(), names);
    const std::uint8_t xattrs = lerr == 0 && names == 0 ? meta::kXattrsNone
                                : lerr == 0             ? meta::kXattrsSome
                                : lerr == ENOTSUP       ? meta::kXattrsUnsupported
                                                        : meta::kXattrsUnknown;
    m->note_attr(m->key_of(inode.fd(), st), st, target, asked_ns, xattrs);
}

std::optional<InodeTable::Known> adopt_from_index(Adapter& a, Ino parent, std::string_view name) {
    cache::MetaCache* m = a.data.listings();
    if (m == nullptr)
        return std::nullopt;
    auto dir_link = a.inodes.link_of(parent);
    meta::DirRecord rec;
    auto dir = vouched_listing(*m, a, parent, &rec);
    if (!dir_link || !dir)
        return std::nullopt;
    const cache::MetaCache::Found f = m->find(*dir, name);
    // A name on another filesystem (a mount point) has no number here.
    if (f.state != cache::MetaCache::Found::State::present || f.value.child.fsid != dir->fsid)
        return std::nullopt;
    auto seen = m->vouched_attr(rec, f.value.child);
    if (!seen || ((seen->st.st_mode & S_IFMT) >> 12) != f.value.type)
        return std::nullopt; // never seen since the listing, or not the listed file
    seen->st.st_dev = dir_link->src.dev;
    m->note_attr_served();
    return a.inodes.adopt(SrcId{dir_link->src.dev, seen->st.st_ino}, seen->st, parent, name);
}

std::optional<std::string> kept_target(Adapter& a, Ino ino) {
    cache::MetaCache* m = a.data.listings();
    auto last = a.inodes.attr_of(ino);
    if (m == nullptr || !last || !S_ISLNK(last->st_mode))
        return std::nullopt;
    auto k = key_offline(*m, a, ino);
    auto seen = k ? m->attr(*k) : std::nullopt;
    // The same symlink: a reused inode number comes with a new ctime.
    if (!seen || !S_ISLNK(seen->st.st_mode) || seen->target.empty() ||
        ctime_ns(seen->st) != ctime_ns(*last))
        return std::nullopt;
    m->note_attr_served();
    return seen->target;
}

int offline_access(fuse_req_t req, const Adapter& a, const struct stat& st, int mask) {
    if (a.cfg.default_permissions)
        return 0; // the kernel checked, against these same attributes
    const CallerId who = caller_id(req, true);
    if (!who.active)
        return 0; // root, or a daemon that answers as itself online too
    unsigned bits = st.st_mode & 07;
    if (who.uid == st.st_uid)
        bits = (st.st_mode >> 6) & 07;
    else if (who.gid == st.st_gid ||
             std::find(who.groups.begin(), who.groups.end(), st.st_gid) != who.groups.end())
        bits = (st.st_mode >> 3) & 07;
    return (bits & static_cast<unsigned>(mask)) == static_cast<unsigned>(mask) ? 0 : EACCES;
}

} // namespace overcache::fuse
