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
// Lock order: mutex_ is a leaf; no system call is made with it held.
#include "fuse/inode_table.hpp"

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

UniqueFd open_dir(int path_fd) {
    return UniqueFd(::openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
}

} // namespace

InodeTable::InodeTable(UniqueFd root_fd, const struct stat& root_st, std::size_t max_pinned)
    : max_pinned_(max_pinned) {
    const SrcId src{root_st.st_dev, root_st.st_ino};
    root_ = std::make_shared<Inode>(kRootIno, src, root_st.st_mode & S_IFMT);
    root_->fd_ = std::move(root_fd);
    root_->nlookup_ = 1;
    by_ino_.emplace(kRootIno, root_);
    by_src_.emplace(src, kRootIno);
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
    std::shared_ptr<const Inode> inode;
    {
        std::lock_guard lock(mutex_);
        auto it = by_ino_.find(ino);
        if (it == by_ino_.end())
            return {};
        inode = it->second;
    }
    if (inode->pinned()) {
        const int pinned_fd = inode->fd_.get();
        return InodeRef(std::move(inode), pinned_fd);
    }
    auto* fh = reinterpret_cast<file_handle*>( // NOLINT: the kernel's layout
        const_cast<char*>(inode->handle_.data()));
    const int fd = ::open_by_handle_at(inode->mount_fd_, fh, O_PATH | O_CLOEXEC);
    if (fd < 0)
        return {};
    return InodeRef(std::move(inode), UniqueFd(fd));
}

InodeRef InodeTable::lookup(UniqueFd fd, const struct stat& st, Ino parent) {
    const SrcId src{st.st_dev, st.st_ino};
    std::unique_lock lock(mutex_);
    if (auto it = by_src_.find(src); it != by_src_.end()) {
        std::shared_ptr<Inode> inode = by_ino_.at(it->second);
        ++inode->nlookup_;
        if (parent != 0 && inode->ino_ != kRootIno)
            inode->parent_.store(parent, std::memory_order_relaxed);
        lock.unlock();
        if (inode->pinned()) {
            const int pinned_fd = inode->fd_.get();
            return InodeRef(std::move(inode), pinned_fd); // `fd` closes here
        }
        return InodeRef(std::move(inode), std::move(fd)); // good for this operation
    }
    const bool pin = pinned_ < max_pinned_;
    lock.unlock();

    std::vector<char> handle;
    if (!pin)
        handle = handle_of(fd.get());
    // open_by_handle_at needs a real (not O_PATH) descriptor on the same
    // filesystem: the first directory seen on each one provides it.
    UniqueFd new_mount_fd;
    if (S_ISDIR(st.st_mode)) {
        lock.lock();
        const bool known = mount_fds_.count(src.dev) != 0;
        lock.unlock();
        if (!known)
            new_mount_fd = open_dir(fd.get());
    }

    lock.lock();
    if (new_mount_fd)
        mount_fds_.emplace(src.dev, std::move(new_mount_fd));
    // Another thread may have added the same file meanwhile.
    if (auto it = by_src_.find(src); it != by_src_.end()) {
        std::shared_ptr<Inode> other = by_ino_.at(it->second);
        ++other->nlookup_;
        if (parent != 0 && other->ino_ != kRootIno)
            other->parent_.store(parent, std::memory_order_relaxed);
        lock.unlock();
        if (other->pinned()) {
            const int pinned_fd = other->fd_.get();
            return InodeRef(std::move(other), pinned_fd);
        }
        return InodeRef(std::move(other), std::move(fd));
    }
    int mount_fd = -1;
    if (!handle.empty()) {
        if (auto m = mount_fds_.find(src.dev); m != mount_fds_.end())
            mount_fd = m->second.get();
    }
    const Ino ino = next_ino_;
    auto fresh = std::make_shared<Inode>(ino, src, st.st_mode & S_IFMT);
    fresh->nlookup_ = 1;
    fresh->parent_.store(parent, std::memory_order_relaxed);
    const bool keeps_fd = mount_fd < 0; // over budget, but no handle: pin anyway
    if (!keeps_fd) {
        fresh->handle_ = std::move(handle);
        fresh->mount_fd_ = mount_fd;
    }
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
    if (keeps_fd) {
        fresh->fd_ = std::move(fd);
        ++pinned_;
        const int pinned_fd = fresh->fd_.get();
        return InodeRef(std::move(fresh), pinned_fd);
    }
    return InodeRef(std::move(fresh), std::move(fd));
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
    by_src_.erase(inode.src_);
    dropped = std::move(it->second);
    by_ino_.erase(it);
}

void InodeTable::reparent(SrcId src, Ino parent) noexcept {
    std::lock_guard lock(mutex_);
    auto it = by_src_.find(src);
    if (it == by_src_.end() || it->second == kRootIno)
        return;
    if (auto in = by_ino_.find(it->second); in != by_ino_.end())
        in->second->parent_.store(parent, std::memory_order_relaxed);
}

std::optional<InodeTable::Link> InodeTable::link_of(Ino ino) const {
    std::lock_guard lock(mutex_);
    auto it = by_ino_.find(ino);
    if (it == by_ino_.end())
        return std::nullopt;
    return Link{it->second->src_, it->second->parent()};
}

std::size_t InodeTable::size() const {
    std::lock_guard lock(mutex_);
    return by_ino_.size();
}

std::size_t InodeTable::pinned() const {
    std::lock_guard lock(mutex_);
    return pinned_;
}

} // namespace overcache::fuse
