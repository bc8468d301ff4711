// Changes to a local backing filesystem, made by anyone, as they happen.
//
// On a backing on a local disk every change to it, through the mount or
// behind it, is made by this kernel, and fanotify reports it from the
// changing call itself, before that call returns. So attributes read from
// the backing at some time still hold if no change to that inode has been
// reported since: the watch answers the question an open under
// coherency=cto would otherwise ask the disk (whose inode tables, once out
// of memory, cost an HDD seek each).
//
// The rule this rests on: a change whose call returned before a question is
// asked has been read by the time it is answered (every question first reads
// all there is to read). A question's time is the one its attributes were
// asked for at, taken before the call that read them, so a change that
// raced with that call is counted against it.
//
// Not seen: stores through a shared writable mapping (mmap) of a backing
// file, which no filesystem reports until the writer's file is closed; and
// changes made by another machine (which is why only local filesystems are
// watched). Lost (the reports overflowed, a report could not be read, the
// wall clock stepped back): everything seen before is asked again.
#pragma once

#include "util/unique_fd.hpp"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <thread>
#include <unordered_map>

namespace overcache::backing {

class ChangeWatch {
public:
    enum class State {
        off,         // not asked for (watch_backing=off)
        unavailable, // not a local filesystem, or fanotify refused (see why())
        watching,
        lost, // stopped after an error; nothing is vouched for
    };

    // Watches the filesystem that `root_fd` is on, when `wanted` and `local`
    // (the caller knows the filesystem types that only this kernel changes;
    // `fs_name` names it in the log).
    ChangeWatch(int root_fd, bool wanted, const char* fs_name);
    ~ChangeWatch();
    ChangeWatch(const ChangeWatch&) = delete;
    ChangeWatch& operator=(const ChangeWatch&) = delete;

    bool watching() const noexcept { return state_.load() == State::watching; }
    State state() const noexcept { return state_.load(); }
    // Why the watch is unavailable or lost; empty otherwise.
    std::string why() const;
    static std::string_view name(State s) noexcept;

    // Whether the backing inode (`dev`, `ino`), whose attributes were asked
    // for at `asked_ns` (the wall clock, taken before the call), has not
    // changed since. Reads the reports waiting first. Only the watched
    // filesystem's inodes are vouched for: not those of another filesystem
    // mounted below the backing's root (or of another btrfs subvolume).
    bool unchanged_since(dev_t dev, std::uint64_t ino, std::int64_t asked_ns);
    // When a change to `ino` was last read (0: none is known), after
    // reading the reports waiting.
    std::int64_t changed_at(std::uint64_t ino);
    // Reads the reports waiting: changes made before this call are not
    // counted against attributes asked for after it.
    void read_reports();

    struct Counts {
        std::uint64_t reports = 0;   // change reports read
        std::uint64_t overflows = 0; // times the kernel's queue overflowed
    };
    Counts counts() const noexcept {
        return {reports_.load(std::memory_order_relaxed),
                overflows_.load(std::memory_order_relaxed)};
    }

private:
    void run(); // the reader thread: keeps the kernel's queue short
    void read_reports_locked();
    void note_locked(const unsigned char* info, std::size_t len, std::uint64_t mask,
                     std::int64_t now);
    void lose_locked(const std::string& why);
    void forget_all_locked(std::int64_t now);

    UniqueFd root_;          // for open_by_handle_at
    UniqueFd notify_;        // the fanotify group
    UniqueFd wake_;          // eventfd: stops run()
    bool ino_first_ = false; // handles of type 1/2 begin with the inode number (ext4)
    dev_t dev_ = 0;          // the watched filesystem's st_dev
    std::atomic<State> state_{State::off};

    mutable std::mutex mu_;
    std::unordered_map<std::uint64_t, std::int64_t> changed_; // ino -> read at; guarded by mu_
    std::int64_t floor_ns_ = 0;     // nothing asked before it is vouched for; guarded by mu_
    std::int64_t last_read_ns_ = 0; // guarded by mu_
    std::string why_;               // guarded by mu_

    std::atomic<std::uint64_t> reports_{0};
    std::atomic<std::uint64_t> overflows_{0};
    std::thread reader_;
};

} // namespace overcache::backing
