// The kernel's inode numbers (fuse_ino_t) and the backing files they stand
// for. A number is handed out from a counter the first time a backing file
// (st_dev, st_ino) is looked up, and is never reused within a mount; the
// entry holds an O_PATH descriptor on the file (or, past a budget, a file
// handle to reopen one), so operations follow the file across renames. Each entry counts the
// kernel's lookups exactly; when the kernel forgets them all the entry and its descriptor go away,
// so the table is as big as the kernel's inode cache, no bigger.
#pragma once

#include "util/unique_fd.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <sys/types.h>
#include <unordered_map>
#include <vector>

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
    Inode(Ino ino, SrcId src, mode_t type) noexcept : ino_(ino), src_(src), type_(type) {}

    Ino ino() const noexcept { return ino_; }
    SrcId src() const noexcept { return src_; }
    mode_t type() const noexcept { return type_; } // S_IFMT bits
    // The directory this inode was last looked up (or created, linked,
    // renamed) through; 0 for the root and for none yet. A hard link has
    // the parent of its name used last. Per-path policy is inherited along
    // it (fuse/path_policy.cpp) without asking the backing.
    Ino parent() const noexcept { return parent_.load(std::memory_order_relaxed); }

    // The attributes the backing last gave for this file (lookup, getattr),
    // kept to answer while the backing is offline (and under
    // coherency=timeout|none); empty before any. `seen_ns`: the wall clock
    // when the backing gave them (0: now).
    void note_attr(const struct stat& st, std::int64_t seen_ns = 0) const;
    std::optional<struct stat> last_attr() const;
    struct Seen {
        struct stat attr {};
        std::int64_t seen_ns = 0; // kSeenStale: changed through the mount since
        int writers = 0;          // open handles that may write
    };
    static constexpr std::int64_t kSeenStale = std::numeric_limits<std::int64_t>::min();
    std::optional<Seen> last_seen() const;
    // The file changed through the mount in a way its last attributes do
    // not show (written, linked, unlinked): they are not used again until
    // the backing gives new ones.
    void mark_stale() const;
    // An open that may write began (+1) or ended (-1); at its end the
    // attributes are stale (its writes changed size and times).
    void add_writer(int delta) const;
    // Whether `st` should be written to the index: it differs from what was
    // written last for this entry (atime aside), or nothing was yet, or
    // `always`. Counts it as written.
    bool should_record(const struct stat& st, bool always = false) const;

private:
    friend class InodeTable;
    void touch() const noexcept {
        if (!used_.load(std::memory_order_relaxed))
            used_.store(true, std::memory_order_relaxed);
    }
    // Under InodeTable::mutex_.
    bool pinned() const noexcept { return fd_.valid(); }
    bool detached() const noexcept { return !fd_.valid() && handle_.empty(); }

    const Ino ino_;
    const SrcId src_;
    const mode_t type_;
    // Either a pinned O_PATH fd, or a file handle (name_to_handle_at) to
    // reopen one from, with a descriptor on the same filesystem to do it
    // through; or neither: an entry made from the index while the backing
    // was offline (detached), until its file is found again by its name.
    // Guarded by InodeTable::mutex_; once set they never change, so a
    // descriptor read under the mutex stays valid while the Inode lives.
    UniqueFd fd_;
    std::vector<char> handle_;  // struct file_handle + its bytes
    int mount_fd_ = -1;         // borrowed from InodeTable::mount_fds_
    std::uint64_t nlookup_ = 0; // guarded by InodeTable::mutex_
    std::atomic<Ino> parent_{0};
    std::string name_; // guarded by InodeTable::mutex_: its name in parent_, if known
    mutable std::mutex attr_mu_;
    mutable struct stat attr_ {}; // guarded by attr_mu_
    mutable bool has_attr_ = false; // guarded by attr_mu_
    mutable std::int64_t seen_ns_ = 0; // guarded by attr_mu_
    // When the last change through the mount that its attributes may not
    // show ended (mark_stale, a writer's release).
    mutable std::int64_t stale_since_ns_ = std::numeric_limits<std::int64_t>::min(); // attr_mu_
    mutable int writers_ = 0;          // guarded by attr_mu_
    // A digest of the attributes last written to the index (0: none yet);
    // a digest, not a copy, because every entry carries it.
    mutable std::uint64_t recorded_ = 0; // guarded by attr_mu_
    // Used since the trimmer last passed it (InodeTable::pick_unused).
    mutable std::atomic<bool> used_{true};
};

// An inode as an operation uses it: the entry, kept alive, and an O_PATH fd
// on the file that stays valid until the InodeRef goes (the pinned fd, or one
// opened from the file handle just for this operation). So a concurrent
// forget never closes a descriptor under an operation.
class InodeRef {
public:
    InodeRef() = default;
    InodeRef(std::shared_ptr<const Inode> inode, int borrowed_fd) noexcept
        : inode_(std::move(inode)), fd_(borrowed_fd) {}
    InodeRef(std::shared_ptr<const Inode> inode, UniqueFd owned) noexcept
        : inode_(std::move(inode)), owned_(std::move(owned)), fd_(owned_.get()) {}

    explicit operator bool() const noexcept { return inode_ != nullptr; }
    // `ref->fd()` and `*ref` read like a pointer to an inode.
    const InodeRef* operator->() const noexcept { return this; }
    const InodeRef& operator*() const noexcept { return *this; }

    Ino ino() const noexcept { return inode_->ino(); }
    int fd() const noexcept { return fd_; } // O_PATH
    SrcId src() const noexcept { return inode_->src(); }
    mode_t type() const noexcept { return inode_->type(); }
    Ino parent() const noexcept { return inode_->parent(); }
    bool is_dir() const noexcept { return S_ISDIR(type()); }
    bool is_symlink() const noexcept { return S_ISLNK(type()); }
    void note_attr(const struct stat& st, std::int64_t seen_ns = 0) const {
        inode_->note_attr(st, seen_ns);
    }
    std::optional<Inode::Seen> last_seen() const { return inode_->last_seen(); }
    std::optional<struct stat> last_attr() const { return inode_->last_attr(); }
    bool should_record(const struct stat& st, bool always = false) const {
        return inode_->should_record(st, always);
    }

private:
    std::shared_ptr<const Inode> inode_;
    UniqueFd owned_;
    int fd_ = -1;
};

class InodeTable {
public:
    // `root_fd` is an O_PATH fd on the backing root, `root_st` its lstat.
    // At most `max_pinned` entries hold an O_PATH fd of their own; the others
    // hold a file handle and reopen it per operation, so a tree bigger than
    // the descriptor limit still works. Filesystems without file handles
    // always pin.
    InodeTable(UniqueFd root_fd, const struct stat& root_st, std::size_t max_pinned);

    // The inode the kernel knows as `ino`, or empty (unknown, forgotten, or
    // its file is gone: ESTALE). A detached entry is found again through
    // its parent and name first (a system call on the backing: callers ask
    // only while it is online), and must be the same file.
    InodeRef get(Ino ino) const;
    InodeRef root() const;

    // Counts one kernel lookup of the file `fd` refers to (`st` is its
    // lstat): the existing entry for (st_dev, st_ino), or a new one.
    // `parent`: the directory it was found in (0: unknown, left as it was),
    // `name` its name there (remembered for lookups while the backing is
    // offline). `st` becomes the entry's last attributes.
    // `asked_ns`: the wall clock before the backing was asked for `st`
    // (0: now).
    InodeRef lookup(UniqueFd fd, const struct stat& st, Ino parent = 0,
                    std::string_view name = {}, std::int64_t asked_ns = 0);

    // While the backing is offline: the entry last looked up as `name` in
    // `parent`, with its last attributes, counting one kernel lookup of it,
    // without opening anything; empty if none is known.
    struct Known {
        Ino ino = 0;
        struct stat attr {};
    };
    std::optional<Known> lookup_known(Ino parent, std::string_view name);
    // While the backing is offline: the entry for the file `src`, found in
    // the index as `name` in `parent` with attributes `st`, counting one
    // kernel lookup. An entry the table has already keeps its attributes;
    // a new one is detached (no descriptor) until the backing answers.
    Known adopt(SrcId src, const struct stat& st, Ino parent, std::string_view name,
                std::int64_t seen_ns = 0);
    // The last attributes of `ino`, without opening anything.
    std::optional<struct stat> attr_of(Ino ino) const;
    // The same, with when they were seen and the open writers.
    std::optional<Inode::Seen> seen_of(Ino ino) const;
    // The entry for the file `src`, if the table has one: its number and
    // what it saw last (counts nothing).
    struct Found {
        Ino ino = 0;
        Inode::Seen seen;
    };
    std::optional<Found> find_src(SrcId src) const;
    // `ino`'s (or the entry named `name` in `parent`'s) attributes are
    // stale: see Inode::mark_stale. Unknown entries are ignored.
    void mark_stale(Ino ino) const noexcept;
    void mark_stale(Ino parent, std::string_view name) const noexcept;
    void add_writer(Ino ino, int delta) const noexcept;
    // Attributes seen before now (kept here or in the index) are not used
    // without the backing any more (the invalidate command).
    void distrust_all() const noexcept;
    // Attributes seen at or before this wall-clock time are not to be used.
    std::int64_t distrusted_until() const noexcept {
        return distrusted_until_.load(std::memory_order_acquire);
    }

    // The file (st_dev, st_ino) now has its name `name` in `parent` (a rename
    // through the mount); nothing if the kernel does not know the file.
    void reparent(SrcId src, Ino parent, std::string_view name = {}) noexcept;
    // `name` in `parent` is gone (unlink, rmdir, the target of a rename
    // through the mount): an offline lookup must not find it.
    void unname(Ino parent, std::string_view name) noexcept;
    // Without opening anything: `ino`'s backing identity and parent.
    struct Link {
        SrcId src;
        Ino parent = 0;
    };
    std::optional<Link> link_of(Ino ino) const;

    // The kernel dropped `n` lookups of `ino`; the entry goes when none are
    // left. Unknown numbers, the root and the control file are ignored.
    void forget(Ino ino, std::uint64_t n) noexcept;

    // Up to `n` regular files and symlinks not used (get, lookup) since the
    // last pass reached them, by the name the kernel knows each under, for
    // the trimmer to ask the kernel to forget them; a pass marks what it
    // skips unused (the clock algorithm). Visits at most `visit` entries
    // (adds how many it did to `*visited`).
    struct Unused {
        Ino parent = 0;
        std::string name;
    };
    std::vector<Unused> pick_unused(std::size_t n, std::size_t visit,
                                    std::size_t* visited = nullptr);
    // Called with the new number of entries each time one is added (under
    // the table's mutex: it must not call back into the table). Set once,
    // before any request.
    void on_grow(std::function<void(std::size_t entries)> f) { on_grow_ = std::move(f); }

    // Entries, the root included; and those of them pinning an fd.
    std::size_t size() const;
    std::size_t pinned() const;

private:
    // Under mutex_: `inode` was found as `name` (if not empty) in `parent`
    // (if not 0).
    void place_locked(Inode& inode, Ino parent, std::string_view name);
    // The entry numbered `ino`, or nullptr.
    std::shared_ptr<const Inode> entry(Ino ino) const;
    // A detached entry's file, found again through its parent and name
    // (recursively: the parent may be detached too).
    InodeRef reattach(std::shared_ptr<Inode> inode) const;
    // `fd` (lstat `st`) is the file of `inode`: a detached entry keeps it
    // (pinned within the budget, else as a file handle). Takes mutex_.
    InodeRef attach(std::shared_ptr<Inode> inode, UniqueFd fd, const struct stat& st) const;
    // Under mutex_: the attached `inode` for one operation: its pinned fd
    // (`fd` is closed), else `fd`.
    InodeRef ref_locked(std::shared_ptr<Inode> inode, UniqueFd fd) const;
    // Under mutex_: a new, detached entry for `src`, counting one lookup.
    std::shared_ptr<Inode> insert_locked(SrcId src, const struct stat& st, Ino parent,
                                         std::string_view name, std::int64_t seen_ns = 0);

    mutable std::mutex mutex_;
    // mutable: get() may reattach an entry.
    mutable std::unordered_map<Ino, std::shared_ptr<Inode>> by_ino_; // guarded by mutex_
    std::unordered_map<SrcId, Ino, SrcIdHash> by_src_;       // guarded by mutex_
    // (parent, name) -> the entry last seen under it; one name per entry.
    std::unordered_map<std::string, Ino> by_name_;          // guarded by mutex_
    mutable std::unordered_map<dev_t, UniqueFd> mount_fds_;  // guarded by mutex_; never shrinks
    Ino next_ino_ = kFirstIno;                               // guarded by mutex_
    mutable std::size_t pinned_ = 0;                         // guarded by mutex_
    std::size_t clock_hand_ = 0; // guarded by mutex_: pick_unused's next bucket of by_ino_
    std::atomic<std::size_t> count_{0}; // by_ino_.size(), written under mutex_
    std::function<void(std::size_t)> on_grow_;
    const std::size_t max_pinned_;
    std::shared_ptr<Inode> root_;
    mutable std::atomic<std::int64_t> distrusted_until_{0};
};

} // namespace overcache::fuse
