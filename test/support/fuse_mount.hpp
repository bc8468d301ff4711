// Test support: a real overcache mount over a temporary directory.
//
// `Mount` makes <tmp>/backing, <tmp>/mnt and (for comparisons) <tmp>/twin, a
// plain directory on the same filesystem as the backing; starts
// `$OVERCACHE_BIN backing mnt -f -o OPTS` as a child process; waits (with a
// timeout) until mnt shows up in /proc/self/mountinfo as a FUSE mount; and
// takes everything down in its destructor, also when the test failed: umount,
// lazy umount if busy, abort the FUSE connection and SIGKILL the daemon if it
// does not exit in time. Nothing here waits without a deadline.
//
// The same tree can be mounted again (`remount()`, after an unmount or a
// `kill9()`), so a test can check what the cache keeps across daemons. Stats
// come from MOUNT/.overcache (`stats()`, `stat()`); `wait_fills()` waits on
// the exact `fills_pending` count, never on counters standing still.
//
// Stand-in: with OVERCACHE_TEST_STANDIN=bind the "mount" is a bind mount of
// the backing, so the tests can be run (and checked themselves) without the
// daemon; tests that need the daemon call `require_daemon()`.
#pragma once

#include "tmp_dir.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <sys/types.h>

namespace overcache::test {

// Exits the test binary with 77 (meson: SKIP) when FUSE mounts cannot work
// here: not root, or /dev/fuse cannot be opened, or OVERCACHE_BIN unset.
void require_fuse();

// Like require_fuse(), and also skips (77) under the bind stand-in: for tests
// about the daemon itself (its cache, its stats).
void require_daemon();

// For a child between fork() and exec(): every signal back to its default
// action and none blocked, so a daemon started by a test behaves the same
// whatever the runner ignores or blocks (nohup, `trap "" HUP`). Only
// async-signal-safe calls.
void reset_signals_in_child() noexcept;

// Whether the comma-separated `options` set `name` (as name=value or a bare
// name): kernel_writeback_cache=1 does not name cache=.
bool names_option(const std::string& options, const std::string& name);

struct MountOptions {
    // Appended to the -o list after the test defaults (comma separated). The
    // defaults put the cache in the temporary directory (cache=<tmp>/cache,
    // cache_size=256M) unless `options` names cache= or cache_dev= itself.
    std::string options;
    // Create <tmp>/twin as well.
    bool twin = true;
    // Keep the congestion bypass at its defaults; otherwise the thresholds
    // `options` does not name are 0 (off: a loaded machine's device must not
    // send a test's I/O around the cache).
    bool congestion = false;
    // How long to wait for the mount to appear and for the daemon to exit.
    std::chrono::milliseconds timeout{15000};
    // Pass -d to the daemon (FUSE debug output on stderr).
    bool debug = false;
    // Where the temporary directory goes (default $TMPDIR or /tmp); e.g.
    // /dev/shm for a test that makes a huge tree and is not about the disk.
    std::string tmp_base;
};

class Mount {
public:
    explicit Mount(MountOptions opts = {});
    explicit Mount(const std::string& options) : Mount(MountOptions{.options = options}) {}
    Mount(const Mount&) = delete;
    Mount& operator=(const Mount&) = delete;
    ~Mount();

    const std::string& root() const noexcept { return tmp_.path(); }
    // The backing directory. In writeback mode the backing lags the mount,
    // so asking for it first flushes the mount (`settle`): a test that
    // looks at the backing sees what writeback guarantees it will hold.
    const std::string& backing() const {
        settle();
        return backing_;
    }
    const std::string& mountpoint() const noexcept { return mnt_; }
    const std::string& twin() const noexcept { return twin_; }
    std::string backing(const std::string& rel) const {
        settle();
        return backing_ + "/" + rel;
    }
    // Writeback mode: writes `flush` to the control file and waits for it
    // (a failure fails the test). Nothing in the other modes.
    void settle() const;
    bool writeback_mode() const noexcept { return writeback_; }
    std::string mnt(const std::string& rel) const { return mnt_ + "/" + rel; }
    std::string twin(const std::string& rel) const { return twin_ + "/" + rel; }

    // The daemon's pid, or -1 for the bind stand-in.
    pid_t daemon_pid() const noexcept { return pid_; }
    bool is_standin() const noexcept { return standin_; }
    // False on the stand-in: no control file, no daemon memory to watch.
    bool has_daemon() const noexcept { return !standin_; }

    // The cache directory the test defaults put in the temporary directory
    // (empty when the options named cache= or cache_dev=).
    const std::string& cache_dir() const noexcept { return cache_; }

    // Unmounts now and waits for the daemon to exit; returns its wait status
    // (or 0 for the stand-in). Idempotent; the destructor calls it.
    int unmount() noexcept;
    // umount(2) of the mountpoint now (lazily if it is busy), without
    // waiting for the daemon: unmount() then waits for it.
    void begin_unmount() noexcept;
    bool mounted() const noexcept { return mounted_; }
    // Unmounts if mounted, then starts a new daemon over the same backing,
    // mountpoint and cache, with the same options. A daemon that crashed
    // fails the test (as in the destructor).
    void remount();
    // The same with other -o options (used by later remount()s too).
    void remount(const std::string& options);
    // kill -9 of the daemon, then takes the dead mount down (abort the
    // connection, lazy unmount). remount() may follow.
    void kill9();

    // The options this mount was started with (remount() uses them again).
    const MountOptions& options() const noexcept { return opts_; }

    // MOUNT/.overcache as key -> value (empty on the stand-in).
    std::map<std::string, std::string> stats() const;
    // Writes `line` (a command, e.g. "flush\n") to MOUNT/.overcache in one
    // write(2) and closes it; returns 0, or the errno of the open, the write
    // or the close (EACCES while the control file is read-only). ENOTSUP on
    // the stand-in.
    int control(const std::string& line) const;
    // One value of it; fails the test when the key is missing.
    std::uint64_t stat(const std::string& key) const;
    // Waits until `fills_pending` is 0: every fill queued by the reads that
    // have returned so far has been written (or refused) and counted. Fails
    // the test past the mount's timeout.
    void wait_fills() const;

private:
    void start(const MountOptions& opts); // the daemon, or the stand-in's bind mount
    void start_daemon(const MountOptions& opts);
    bool wait_child(std::chrono::milliseconds timeout, int& status) noexcept;
    void abort_connection() noexcept;
    void end_reaper() noexcept;
    void check_exit() const;

    MountOptions opts_;
    std::string cache_;
    TmpDir tmp_;
    std::string backing_, mnt_, twin_;
    pid_t pid_ = -1;
    bool standin_ = false;
    bool writeback_ = false; // mounted with cache_mode=writeback
    bool mounted_ = false;
    unsigned fuse_minor_ = 0; // connection id under /sys/fs/fuse/connections
    int exit_status_ = 0;     // the daemon's wait status once reaped
    int reaper_fd_ = -1;      // write end of the pipe the reaper helper watches
    std::chrono::milliseconds timeout_{15000};
};

// True when `path` is currently a mountpoint in /proc/self/mountinfo; fills
// `fstype` and the device minor when given.
bool is_mountpoint(const std::string& path, std::string* fstype = nullptr,
                   unsigned* minor = nullptr);

// Resident set size of `pid` in KiB from /proc/<pid>/status (VmRSS), or -1.
long rss_kib(pid_t pid);

} // namespace overcache::test
