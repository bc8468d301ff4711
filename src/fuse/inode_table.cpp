// DOC: the inode table. Two maps under one mutex: kernel number -> Inode and
// backing (st_dev, st_ino) -> kernel number. Numbers come from a counter and
// are never reused, so a stale number from the kernel can only miss, never
// hit another file; pointers are never used as numbers because a later
// issue persists them. The root is entry 1 and never forgotten; number 2 is
// reserved for the control file and never enters the table.
// Descriptors: the first `max_pinned` entries keep their O_PATH fd (the
// kernel's hot set, after a drop_caches too). Past that an entry keeps a
// file handle instead and get() reopens it with open_by_handle_at, since the
// kernel may hold more inodes than the process may hold descriptors (a find
// over 100 000 files). A pinned fd keeps its backing inode allocated, so
// (st_dev, st_ino) cannot be reused while its entry exists; a file handle
// carries a generation, so a reused inode number fails to open (ESTALE).
// Each entry also keeps the attributes and the name the backing last gave
// it, so that a lookup or getattr can be answered while the backing is
// offline (see backing/gate.hpp). They are never used while it answers.
// Offline, a lookup the index answers (fuse/listings.cpp) makes a detached
// entry: no descriptor, no handle. Online again, get() finds its file
// through the parent's descriptor and the name, and keeps it only if it
// is the same (st_dev, st_ino): else ESTALE, as for a file gone.
// Lock order: mutex_, then an Inode's attr_mu_; no system call is made with
// either held.
#include "fuse/inode_table.hpp"

#include "backing/backing_fs.hpp"

#include "util/wall_clock.hpp"

#include <cstring>
#include <fcntl.h>

namespace overcache::fuse {
namespace {

// name_to_handle_at on an O_PATH fd; empty when the filesystem has none.
std::vector<char> handle_of(int fd) {
    std::vector<char> buf(sizeof(file_handle) + MAX_HANDLE_SZ);
    auto* fh = reinterpret_cast<file_handle*>(buf.data()); // NOLINT: the kernel's layout
    fh->handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    if (::name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) != 0)
        return {};
    buf.resize(sizeof(file_handle) + fh->handle_bytes);
    return buf;
}

std::string name_key(Ino parent, std::string_view name) {
    std::string k(sizeof parent, '\0');
    std::memcpy(k.data(), &parent, sizeof parent);
    k.append(name);
    return k;
}

// A real open of the directory behind an O_PATH fd (through the request's
// gate: an NFS open asks the server).
UniqueFd open_dir(int path_fd) {
    auto fd = backing::open_at(path_fd, ".", O_RDONLY | O_DIRECTORY, 0);
    return fd ? std::move(*fd) : UniqueFd();
}

// The attributes an index record keeps, atime aside, folded into 64 bits
// (never 0): equal digests stand for equal attributes.
std::uint64_t digest_of(const struct stat& st) noexcept {
    const std::uint64_t fields[] = {
        static_cast<std::uint64_t>(st.st_ino),         static_cast<std::uint64_t>(st.st_mode),
        static_cast<std::uint64_t>(st.st_uid),         static_cast<std::uint64_t>(st.st_gid),
        static_cast<std::uint64_t>(st.st_nlink),       static_cast<std::uint64_t>(st.st_size),
        static_cast<std::uint64_t>(st.st_blocks),      static_cast<std::uint64_t>(st.st_rdev),
        static_cast<std::uint64_t>(st.st_mtim.tv_sec), static_cast<std::uint64_t>(st.st_mtim.tv_nsec),
        static_cast<std::uint64_t>(st.st_ctim.tv_sec), static_cast<std::uint64_t>(st.st_ctim.tv_nsec)};
    std::uint64_t h = 0xcbf29ce484222325ull; // FNV-1a over the words, then a final mix
    for (std::uint64_t f : fields) {
        h ^= f;
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h == 0 ? 1 : h;
}

} // namespace

bool Inode::should_record(const struct stat& st, bool always) const {
    const std::uint64_t d = digest_of(st);
    std::lock_guard lk(attr_mu_);
    if (!always && recorded_ == d)
        return false;
    recorded_ = d;
    return true;
}

void Inode::note_attr(const struct stat& st, std::int64_t seen_ns) const {
    const std::int64_t seen = seen_ns != 0 ? seen_ns : wall_ns();
    std::lock_guard lk(attr_mu_);
    if (has_attr_ && seen < seen_ns_ && seen_ns_ != kSeenStale)
        return; // older than what is kept (an index record)
    attr_ = st;
    has_attr_ = true;
    // Asked for before the last change through the mount ended: they may
    // not show it, so they are kept (offline) but not used online.
    seen_ns_ = seen <= stale_since_ns_ ? kSeenStale : seen;
}

std::optional<Inode::Seen> Inode::last_seen() const {
    std::lock_guard lk(attr_mu_);
    if (!has_attr_)
        return std::nullopt;
    return Seen{attr_, seen_ns_, writers_};
}

void Inode::mark_stale() const {
    add_writer(0);
}

void Inode::add_writer(int delta) const {
    const std::int64_t now = wall_ns();
    std::lock_guard lk(attr_mu_);
    writers_ += delta;
    if (delta <= 0) { // a writer's end, or mark_stale()
        seen_ns_ = kSeenStale;
        stale_since_ns_ = now;
    }
}

std::optional<struct stat> Inode::last_attr() const {
    std::lock_guard lk(attr_mu_);
    if (!has_attr_)
        return std::nullopt;
    return attr_;
}

void InodeTable::place_locked(Inode& inode, Ino parent, std::string_view name) {
    if (inode.ino_ == kRootIno || parent == 0)
        return;
    if (!name.empty()) {
        const Ino old_parent = inode.parent_.load(std::memory_order_relaxed);
        if (!inode.name_.empty()) {
            auto old = by_name_.find(name_key(old_parent, inode.name_));
            if (old != by_name_.end() && old->second == inode.ino_)
                by_name_.erase(old);
        }
        inode.name_.assign(name);
        by_name_[name_key(parent, name)] = inode.ino_;
    }
    inode.parent_.store(parent, std::memory_order_relaxed);
}

InodeTable::InodeTable(UniqueFd root_fd, const struct stat& root_st, std::size_t max_pinned)
    : max_pinned_(max_pinned) {
    const SrcId src{root_st.st_dev, root_st.st_ino};
    root_ = std::make_shared<Inode>(kRootIno, src, root_st.st_mode & S_IFMT);
    root_->fd_ = std::move(root_fd);
    root_->nlookup_ = 1;
    root_->note_attr(root_st);
    by_ino_.emplace(kRootIno, root_);
    by_src_.emplace(src, kRootIno);
    count_.store(1, std::memory_order_relaxed);
    pinned_ = 1;
    if (UniqueFd m = open_dir(root_->fd_.get()))
        mount_fds_.emplace(src.dev, std::move(m));
}

InodeRef InodeTable::root() const {
    return InodeRef(root_, root_->fd_.get());
}

InodeRef InodeTable::get(Ino ino) const {
    if (ino == kRootIno)
        return root();
    std::shared_ptr<Inode> inode;
    int pinned_fd = -1;
    bool detached = false;
    {
        std::lock_guard lock(mutex_);
        auto it = by_ino_.find(ino);
        if (it == by_ino_.end())
            return {};
        inode = it->second;
        inode->touch();
        detached = inode->detached();
        pinned_fd = inode->fd_.get();
    }
    if (detached)
        return reattach(std::move(inode));
    if (pinned_fd >= 0)
        return InodeRef(std::move(inode), pinned_fd);
    // handle_ and mount_fd_ never change once set (attach).
    auto fd = backing::open_by_handle(inode->mount_fd_, inode->handle_, O_PATH);
    if (!fd)
        return {};
    return InodeRef(std::move(inode), std::move(*fd));
}

InodeRef InodeTable::reattach(std::shared_ptr<Inode> inode) const {
    Ino parent_ino = 0;
    std::string name;
    {
        std::lock_guard lock(mutex_);
        parent_ino = inode->parent();
        name = inode->name_;
    }
    if (parent_ino == 0 || name.empty())
        return {};
    InodeRef parent = get(parent_ino);
    if (!parent)
        return {};
    auto fd = backing::open_path(parent.fd(), name.c_str());
    struct stat st {};
    if (!fd || backing::stat_fd(fd->get(), st) != 0 || SrcId{st.st_dev, st.st_ino} != inode->src_)
        return {}; // gone, or another file has the name now (or no answer)
    return attach(std::move(inode), std::move(*fd), st);
}

InodeRef InodeTable::attach(std::shared_ptr<Inode> inode, UniqueFd fd,
                            const struct stat& st) const {
    bool pin = false;
    bool needs_mount_fd = false;
    {
        std::lock_guard lock(mutex_);
        if (!inode->detached()) // another thread attached it first
            return ref_locked(std::move(inode), std::move(fd));
        pin = pinned_ < max_pinned_;
        needs_mount_fd = S_ISDIR(st.st_mode) && mount_fds_.count(st.st_dev) == 0;
    }
    std::vector<char> handle;
    if (!pin)
        handle = handle_of(fd.get());
    // open_by_handle_at needs a real (not O_PATH) descriptor on the same
    // filesystem: the first directory seen on each one provides it.
    UniqueFd new_mount_fd;
    if (needs_mount_fd)
        new_mount_fd = open_dir(fd.get());
    std::lock_guard lock(mutex_);
    if (new_mount_fd && mount_fds_.count(st.st_dev) == 0)
        mount_fds_.emplace(st.st_dev, std::move(new_mount_fd));
    if (!inode->detached())
        return ref_locked(std::move(inode), std::move(fd));
    auto m = handle.empty() ? mount_fds_.end() : mount_fds_.find(st.st_dev);
    if (m == mount_fds_.end()) { // within the budget, or no handle: pin
        inode->fd_ = std::move(fd);
        ++pinned_;
    } else {
        inode->handle_ = std::move(handle);
        inode->mount_fd_ = m->second.get();
    }
    return ref_locked(std::move(inode), std::move(fd));
}

InodeRef InodeTable::ref_locked(std::shared_ptr<Inode> inode, UniqueFd fd) const {
    inode->touch();
    if (inode->pinned()) {
        const int pinned_fd = inode->fd_.get();
        return InodeRef(std::move(inode), pinned_fd); // `fd` closes here
    }
    return InodeRef(std::move(inode), std::move(fd)); // good for this operation
}

std::shared_ptr<Inode> InodeTable::insert_locked(SrcId src, const struct stat& st, Ino parent,
                                                 std::string_view name, std::int64_t seen_ns) {
    const Ino ino = next_ino_;
    auto fresh = std::make_shared<Inode>(ino, src, st.st_mode & S_IFMT);
    fresh->nlookup_ = 1;
    fresh->note_attr(st, seen_ns);
    // Insert both or neither: emplace may throw bad_alloc.
    auto [it, inserted] = by_ino_.emplace(ino, fresh);
    (void)inserted;
    try {
        by_src_.emplace(src, ino);
    } catch (...) {
        by_ino_.erase(it);
        throw;
    }
    ++next_ino_;
    count_.store(by_ino_.size(), std::memory_order_relaxed);
    if (on_grow_)
        on_grow_(by_ino_.size());
    place_locked(*fresh, parent, name); // after the inserts: it may throw too, harmlessly
    return fresh;
}

InodeRef InodeTable::lookup(UniqueFd fd, const struct stat& st, Ino parent,
                            std::string_view name, std::int64_t asked_ns) {
    const SrcId src{st.st_dev, st.st_ino};
    std::shared_ptr<Inode> inode;
    {
        std::lock_guard lock(mutex_);
        if (auto it = by_src_.find(src); it != by_src_.end()) {
            inode = by_ino_.at(it->second);
            ++inode->nlookup_;
            place_locked(*inode, parent, name);
            inode->note_attr(st, asked_ns);
            if (!inode->detached())
                return ref_locked(std::move(inode), std::move(fd));
        } else {
            // New: detached until attach() gives it `fd` (the kernel does
            // not know its number before the reply).
            inode = insert_locked(src, st, parent, name, asked_ns);
        }
    }
    return attach(std::move(inode), std::move(fd), st);
}

void InodeTable::forget(Ino ino, std::uint64_t n) noexcept {
    if (ino == kRootIno || ino == kControlIno)
        return;
    std::shared_ptr<Inode> dropped; // released after the lock, so the fd closes outside it
    std::lock_guard lock(mutex_);
    auto it = by_ino_.find(ino);
    if (it == by_ino_.end())
        return;
    Inode& inode = *it->second;
    if (inode.nlookup_ > n) {
        inode.nlookup_ -= n;
        return;
    }
    inode.nlookup_ = 0;
    if (inode.pinned())
        --pinned_;
    if (!inode.name_.empty()) {
        auto named = by_name_.find(name_key(inode.parent(), inode.name_));
        if (named != by_name_.end() && named->second == ino)
            by_name_.erase(named);
    }
    by_src_.erase(inode.src_);
    dropped = std::move(it->second);
    by_ino_.erase(it);
    count_.store(by_ino_.size(), std::memory_order_relaxed);
}

void InodeTable::reparent(SrcId src, Ino parent, std::string_view name) noexcept {
    std::lock_guard lock(mutex_);
    auto it = by_src_.find(src);
    if (it == by_src_.end() || it->second == kRootIno)
        return;
    if (auto in = by_ino_.find(it->second); in != by_ino_.end()) {
        try {
            place_locked(*in->second, parent, name);
        } catch (...) {
            // Out of memory for the name: the parent still follows.
            in->second->parent_.store(parent, std::memory_order_relaxed);
        }
    }
}

void InodeTable::unname(Ino parent, std::string_view name) noexcept {
    try {
        std::lock_guard lock(mutex_);
        auto it = by_name_.find(name_key(parent, name));
        if (it == by_name_.end())
            return;
        if (auto in = by_ino_.find(it->second); in != by_ino_.end())
            in->second->name_.clear();
        by_name_.erase(it);
    } catch (...) {
        // name_key's allocation: nothing was changed.
    }
}

std::optional<InodeTable::Known> InodeTable::lookup_known(Ino parent, std::string_view name) {
    std::lock_guard lock(mutex_);
    auto it = by_name_.find(name_key(parent, name));
    if (it == by_name_.end())
        return std::nullopt;
    auto in = by_ino_.find(it->second);
    if (in == by_ino_.end())
        return std::nullopt;
    Inode& inode = *in->second;
    auto attr = inode.last_attr();
    if (!attr)
        return std::nullopt;
    ++inode.nlookup_;
    inode.touch();
    return Known{inode.ino_, *attr};
}

InodeTable::Known InodeTable::adopt(SrcId src, const struct stat& st, Ino parent,
                                    std::string_view name, std::int64_t seen_ns) {
    std::lock_guard lock(mutex_);
    if (auto it = by_src_.find(src); it != by_src_.end()) {
        Inode& inode = *by_ino_.at(it->second);
        ++inode.nlookup_;
        inode.touch();
        place_locked(inode, parent, name);
        return Known{inode.ino_, inode.last_attr().value_or(st)};
    }
    return Known{insert_locked(src, st, parent, name, seen_ns)->ino_, st};
}

std::shared_ptr<const Inode> InodeTable::entry(Ino ino) const {
    std::lock_guard lock(mutex_);
    auto it = by_ino_.find(ino);
    return it == by_ino_.end() ? nullptr : it->second;
}

std::optional<Inode::Seen> InodeTable::seen_of(Ino ino) const {
    auto inode = entry(ino);
    return inode ? inode->last_seen() : std::nullopt;
}

std::optional<InodeTable::Found> InodeTable::find_src(SrcId src) const {
    std::lock_guard lock(mutex_);
    auto it = by_src_.find(src);
    if (it == by_src_.end())
        return std::nullopt;
    auto seen = by_ino_.at(it->second)->last_seen();
    if (!seen)
        return std::nullopt;
    return Found{it->second, *seen};
}

void InodeTable::mark_stale(Ino ino) const noexcept {
    if (auto inode = entry(ino))
        inode->mark_stale();
}

void InodeTable::mark_stale(Ino parent, std::string_view name) const noexcept {
    try {
        std::lock_guard lock(mutex_);
        auto named = by_name_.find(name_key(parent, name));
        if (named == by_name_.end())
            return;
        if (auto it = by_ino_.find(named->second); it != by_ino_.end())
            it->second->mark_stale();
    } catch (...) {
        // name_key's allocation: then nothing is known by that name.
    }
}

void InodeTable::distrust_all() const noexcept {
    distrusted_until_.store(wall_ns(), std::memory_order_release);
}

void InodeTable::add_writer(Ino ino, int delta) const noexcept {
    if (auto inode = entry(ino))
        inode->add_writer(delta);
}

std::optional<struct stat> InodeTable::attr_of(Ino ino) const {
    auto inode = entry(ino);
    return inode ? inode->last_attr() : std::nullopt;
}

std::optional<InodeTable::Link> InodeTable::link_of(Ino ino) const {
    std::lock_guard lock(mutex_);
    auto it = by_ino_.find(ino);
    if (it == by_ino_.end())
        return std::nullopt;
    return Link{it->second->src_, it->second->parent()};
}

std::vector<InodeTable::Unused> InodeTable::pick_unused(std::size_t n, std::size_t visit,
                                                        std::size_t* visited_out) {
    std::vector<Unused> out;
    std::lock_guard lock(mutex_);
    const std::size_t buckets = by_ino_.bucket_count();
    std::size_t visited = 0;
    for (std::size_t b = 0; b < buckets && out.size() < n && visited < visit; ++b) {
        const std::size_t at = clock_hand_++ % buckets;
        for (auto it = by_ino_.begin(at); it != by_ino_.end(at); ++it) {
            ++visited;
            const Inode& in = *it->second;
            // Directories stay: the kernel's invalidation of one detaches
            // whatever is mounted below it.
            if ((in.type_ != S_IFREG && in.type_ != S_IFLNK) || in.name_.empty() ||
                in.parent() == 0)
                continue;
            if (in.used_.exchange(false, std::memory_order_relaxed))
                continue; // a second chance
            out.push_back(Unused{in.parent(), in.name_});
        }
    }
    if (visited_out != nullptr)
        *visited_out += visited;
    return out;
}

std::size_t InodeTable::size() const {
    return count_.load(std::memory_order_relaxed);
}

std::size_t InodeTable::pinned() const {
    std::lock_guard lock(mutex_);
    return pinned_;
}

} // namespace overcache::fuse
