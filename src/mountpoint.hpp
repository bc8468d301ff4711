// What is at a mountpoint before overcache mounts there: a plain directory,
// a live mount (an overcache one is refused by name, not by a RocksDB lock
// error or a second mount stacked on the first), or a dead FUSE mount left
// by a daemon that exited without unmounting ("Transport endpoint is not
// connected"), which the service removes on its next start.
#pragma once

#include <string>

namespace overcache {

struct MountpointInfo {
    enum class Kind {
        directory, // an ordinary directory (perhaps a mount of another kind)
        overcache, // a live overcache mount
        dead_fuse, // a FUSE mount whose daemon is gone
        missing,   // nothing there
        other,     // a file, or unreadable: `error` says what
    };
    Kind kind = Kind::other;
    std::string path;   // absolute and without symlinks (but for its last part when dead)
    std::string fstype; // of the mount on top of it, when it is a mountpoint
    std::string source; // what that mount says it mounts (the backing, for overcache)
    std::string error;  // Kind::other: why
};

MountpointInfo inspect_mountpoint(const std::string& path);

// Whether inspect_mountpoint() gave up on a FUSE mount that did not answer,
// leaving a thread waiting in the kernel. Such a thread ends only with the
// process (exit_group kills it); anything that waits for every thread to
// stop first (a leak checker at exit) would wait with it, so the process
// then leaves with _exit.
bool probe_left_waiting() noexcept;

// Detaches the dead FUSE mount at `path` (umount2 MNT_DETACH as root,
// `fusermount3 -u -z` otherwise). false with `error` set when it could not.
bool remove_dead_mount(const std::string& path, std::string& error);

} // namespace overcache
