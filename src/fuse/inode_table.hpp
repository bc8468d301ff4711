// The kernel's inode numbers (fuse_ino_t) and the backing files they stand
// for. A number is handed out from a counter the first time a backing file
// (st_dev, st_ino) is looked up, and is never reused within a mount; the
// entry holds an O_PATH descriptor on the file, so operations follow the file
// across renames. Each entry counts the kernel's lookups exactly; when the
// kernel forgets them all the entry and its descriptor go away, so the table
// is as big as the kernel's inode cache, no bigger.
#pragma once

#include "util/unique_fd.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <sys/stat.h>
#include <sys/types.h>
#include <unordered_map>

namespace overcache::fuse {

using Ino = std::uint64_t; // fuse_ino_t

inline constexpr Ino kRootIno = 1;    // FUSE_ROOT_ID: the backing root
inline constexpr Ino kControlIno = 2; // the synthetic .overcache file
inline constexpr Ino kFirstIno = 3;

// A backing file's identity on the running system.
struct SrcId {
    dev_t dev = 0;
    ino_t ino = 0;
    bool operator==(const SrcId&) const = default;
};

struct SrcIdHash {
    std::size_t operator()(const SrcId& s) const noexcept {
        return std::hash<std::uint64_t>()(static_cast<std::uint64_t>(s.ino) *
                                              0x9E3779B97F4A7C15ull ^
                                          static_cast<std::uint64_t>(s.dev));
    }
};

class Inode {
public:
    Inode(Ino ino, UniqueFd fd, SrcId src, mode_t type) noexcept
        : ino_(ino), fd_(std::move(fd)), src_(src), type_(type) {}

    Ino ino() const noexcept { return ino_; }
    int fd() const noexcept { return fd_.get(); } // O_PATH, valid while the Inode lives
    SrcId src() const noexcept { return src_; }
    mode_t type() const noexcept { return type_; } // S_IFMT bits
    bool is_dir() const noexcept { return S_ISDIR(type_); }
    bool is_symlink() const noexcept { return S_ISLNK(type_); }

private:
    friend class InodeTable;
    const Ino ino_;
    const UniqueFd fd_;
    const SrcId src_;
    const mode_t type_;
    std::uint64_t nlookup_ = 0; // guarded by InodeTable::mutex_
};

// Operations hold an InodePtr while they use the fd, so a concurrent forget
// cannot close it under them.
using InodePtr = std::shared_ptr<Inode>;

class InodeTable {
public:
    // `root_fd` is an O_PATH fd on the backing root, `root_st` its lstat.
    InodeTable(UniqueFd root_fd, const struct stat& root_st);

    // The inode the kernel knows as `ino`, or null (unknown or forgotten).
    InodePtr get(Ino ino) const;
    const InodePtr& root() const noexcept { return root_; }

    // Counts one kernel lookup of the file `fd` refers to (`st` is its
    // lstat): returns the existing entry for (st_dev, st_ino), in which case
    // `fd` is closed, or a new entry that keeps `fd`.
    InodePtr lookup(UniqueFd fd, const struct stat& st);

    // The kernel dropped `n` lookups of `ino`; the entry goes when none are
    // left. Unknown numbers, the root and the control file are ignored.
    void forget(Ino ino, std::uint64_t n) noexcept;

    // Entries, the root included.
    std::size_t size() const;

private:
    mutable std::mutex mutex_;
    std::unordered_map<Ino, InodePtr> by_ino_;         // guarded by mutex_
    std::unordered_map<SrcId, Ino, SrcIdHash> by_src_; // guarded by mutex_
    Ino next_ino_ = kFirstIno;                         // guarded by mutex_
    InodePtr root_;
};

} // namespace overcache::fuse
