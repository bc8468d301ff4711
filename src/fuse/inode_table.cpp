// DOC: the inode table. Two maps under one mutex: kernel number -> Inode and
// backing (st_dev, st_ino) -> kernel number. Numbers come from a counter and
// are never reused, so a stale number from the kernel can only miss, never
// hit another file; pointers are never used as numbers because a later
// issue persists them. The root is entry 1 and never forgotten; number 2 is
// reserved for the control file and never enters the table. An O_PATH fd
// keeps its backing inode allocated, so (st_dev, st_ino) cannot be reused by
// another file while its entry exists. Lock order: mutex_ is a leaf; nothing
// is called with it held except map operations.
#include "fuse/inode_table.hpp"

namespace overcache::fuse {

InodeTable::InodeTable(UniqueFd root_fd, const struct stat& root_st) {
    const SrcId src{root_st.st_dev, root_st.st_ino};
    root_ = std::make_shared<Inode>(kRootIno, std::move(root_fd), src, root_st.st_mode & S_IFMT);
    root_->nlookup_ = 1;
    by_ino_.emplace(kRootIno, root_);
    by_src_.emplace(src, kRootIno);
}

InodePtr InodeTable::get(Ino ino) const {
    if (ino == kRootIno)
        return root_;
    std::lock_guard lock(mutex_);
    auto it = by_ino_.find(ino);
    return it == by_ino_.end() ? nullptr : it->second;
}

InodePtr InodeTable::lookup(UniqueFd fd, const struct stat& st) {
    const SrcId src{st.st_dev, st.st_ino};
    std::unique_lock lock(mutex_);
    if (auto it = by_src_.find(src); it != by_src_.end()) {
        InodePtr& inode = by_ino_.at(it->second);
        ++inode->nlookup_;
        InodePtr found = inode;
        lock.unlock();
        // `fd` closes here, outside the lock.
        return found;
    }
    const Ino ino = next_ino_;
    auto inode = std::make_shared<Inode>(ino, std::move(fd), src, st.st_mode & S_IFMT);
    inode->nlookup_ = 1;
    // Insert both or neither: emplace may throw bad_alloc.
    auto [it, inserted] = by_ino_.emplace(ino, inode);
    try {
        by_src_.emplace(src, ino);
    } catch (...) {
        by_ino_.erase(it);
        throw;
    }
    (void)inserted;
    ++next_ino_;
    return inode;
}

void InodeTable::forget(Ino ino, std::uint64_t n) noexcept {
    if (ino == kRootIno || ino == kControlIno)
        return;
    InodePtr dropped; // released after the lock, so the fd closes outside it
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
    by_src_.erase(inode.src_);
    dropped = std::move(it->second);
    by_ino_.erase(it);
}

std::size_t InodeTable::size() const {
    std::lock_guard lock(mutex_);
    return by_ino_.size();
}

} // namespace overcache::fuse
