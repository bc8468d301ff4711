// Test support: faultfs (test/support/faultfs) as overcache's backing.
//
// `FaultBacking` mounts faultfs at a given empty directory over a fresh
// lower directory of its own, as a child process reaped like overcache's
// daemon in fuse_mount.cpp (a reaper helper takes the mount down if the test
// dies; signals are reset in the child). Faults are set by rewriting
// faultfs's control file and renaming it into place: every backing call that
// starts after a setter returned runs under the new settings.
//
// `FaultMount` is a `Mount` whose backing is a `FaultBacking`, with the
// overcache daemon's stderr (its log) kept in a file the test can read.
// Mount always puts the backing at <tmp>/backing, so FaultMount mounts
// overcache once as usual, takes it down, wipes the cache it formatted for
// the plain directory, mounts faultfs on <tmp>/backing and mounts overcache
// again (remount) over it. Teardown runs in the reverse order: overcache,
// then faultfs, then the directories.
#pragma once

#include "fuse_mount.hpp"
#include "tmp_dir.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <sys/types.h>

namespace overcache::test {

// Exits 77 (SKIP) when faultfs cannot run here (see require_fuse()), or
// FAULTFS_BIN is not set.
void require_faultfs();

class FaultBacking {
public:
    // Mounts faultfs at `mountpoint`, an existing empty directory.
    explicit FaultBacking(const std::string& mountpoint,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(15000));
    FaultBacking(const FaultBacking&) = delete;
    FaultBacking& operator=(const FaultBacking&) = delete;
    ~FaultBacking();

    // The directory faultfs passes through to: what the backing really
    // holds, read without going through faultfs (or overcache).
    const std::string& lower() const noexcept { return lower_; }
    std::string lower(const std::string& rel) const { return lower_ + "/" + rel; }
    const std::string& mountpoint() const noexcept { return mnt_; }
    pid_t pid() const noexcept { return pid_; }

    // Calls of `classes` (comma separated: read, write, fsync, open,
    // truncate, meta, lookup, all) fail with `err` from now on; 0 lets them
    // through again. Other classes keep what they were set to.
    void fail(const std::string& classes, int err);
    // Each call of `classes` first sleeps `ms` milliseconds.
    void delay(const std::string& classes, unsigned ms);
    // At most this many bytes per second (0: unlimited).
    void throttle_writes(std::uint64_t bytes_per_s);
    void throttle_reads(std::uint64_t bytes_per_s);
    // No faults, delays or throttles.
    void clear();

    // How many of faultfs's threads sleep right now (a call held by
    // delay(), or by a throttle): a test stops faultfs once the call it
    // means to catch is in there, not after a guessed pause.
    int sleeping_calls() const;

    // SIGSTOP / SIGCONT of faultfs: calls into the backing block (an NFS
    // server that stopped answering) until resume().
    void pause();
    void resume();

    // Unmounts faultfs and waits for it to exit (lazily detached, its
    // connection aborted and the process killed if it will not go).
    // Idempotent; the destructor calls it.
    void stop() noexcept;

private:
    void write_control();
    bool wait_exit(std::chrono::milliseconds timeout) noexcept;

    TmpDir dir_; // lower/ and the control file
    std::string lower_, mnt_, control_;
    std::chrono::milliseconds timeout_;
    pid_t pid_ = -1;
    unsigned minor_ = 0;
    int reaper_fd_ = -1;
    bool paused_ = false;
    // What the control file says, one line a setting kind.
    std::string fail_[7], delay_[7];
    std::uint64_t write_rate_ = 0, read_rate_ = 0;
};

class FaultMount {
public:
    // `opts` as for Mount; must not name cache= or cache_dev= (the cache is
    // wiped between the two mounts).
    explicit FaultMount(MountOptions opts);
    explicit FaultMount(const std::string& options)
        : FaultMount(MountOptions{.options = options}) {}
    FaultMount(const FaultMount&) = delete;
    FaultMount& operator=(const FaultMount&) = delete;
    // Takes overcache down, then faultfs; prints the tail of the daemon's
    // log to stderr (meson shows it with the test's output).
    ~FaultMount();

    Mount& mount() noexcept { return *mount_; }
    FaultBacking& backing() noexcept { return *backing_; }
    // What the overcache daemon wrote to stderr since it mounted over faultfs.
    std::string log() const;
    const std::string& log_path() const noexcept { return log_path_; }
    // Mounts overcache again (after unmount() or kill9()), its log still
    // going to the same file.
    void remount();

private:
    std::unique_ptr<Mount> mount_;
    std::unique_ptr<FaultBacking> backing_;
    std::string log_path_;
};

} // namespace overcache::test
