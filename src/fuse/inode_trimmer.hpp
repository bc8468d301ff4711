// InodeTrimmer: keeps the inode table near `max_inodes` entries. The
// kernel forgets an inode only when it evicts it, which it does under
// memory pressure alone: a walk of a million files would otherwise leave a
// million entries here (about a kilobyte each, with their index and kernel
// state) on a machine with memory to spare. Past the limit a thread of its
// own asks the kernel to drop the names of regular files and symlinks not
// used lately (the clock algorithm over the table); the kernel then evicts
// them and sends FORGET, which shrinks the table. An entry in use (an open
// file, a name the kernel needs) stays; its next lookup makes it again.
// Directories are never dropped: the kernel detaches whatever is mounted
// below a directory whose name it is told to drop, and for the same reason
// nothing is dropped while anything is mounted below the mountpoint.
#pragma once

#include "fuse/inode_table.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <fuse_lowlevel.h>
#include <mutex>
#include <string>
#include <thread>

namespace overcache::fuse {

class InodeTrimmer {
public:
    // `max_inodes` 0: never trims.
    InodeTrimmer(InodeTable& table, std::size_t max_inodes) : table_(table), max_(max_inodes) {}
    ~InodeTrimmer() { stop(); }
    InodeTrimmer(const InodeTrimmer&) = delete;
    InodeTrimmer& operator=(const InodeTrimmer&) = delete;

    // `mountpoint`: where the session is mounted (to see what is mounted below).
    void start(fuse_session* se, std::string mountpoint);
    // Idempotent; before the session is destroyed.
    void stop();
    // A lookup made the table bigger: trims now if it is past the limit.
    // Never waits.
    void note_size(std::size_t entries);
    std::uint64_t dropped() const; // names the kernel was asked to drop

private:
    void run();
    void trim(); // one round, outside mu_
    bool mounts_below() const;

    InodeTable& table_;
    const std::size_t max_;
    fuse_session* se_ = nullptr;
    std::string mountpoint_;
    std::thread thread_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;    // guarded by mu_
    bool kicked_ = false;      // guarded by mu_
    std::uint64_t dropped_ = 0; // guarded by mu_
    bool said_mounts_ = false; // the thread's own
    std::chrono::steady_clock::time_point last_release_{}; // the thread's own
    std::uint64_t released_at_ = 0; // the thread's own: dropped() at the last malloc_trim
};

} // namespace overcache::fuse
