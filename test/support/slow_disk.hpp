// Test support: a real disk that is slow to write, for the cases faultfs
// cannot show. faultfs answers through FUSE with direct I/O, so a write to
// it is slow when it is made; an NFS mount or an HDD takes writes into the
// page cache at once and is slow only when they are written out (at
// sync_file_range, fsync or by the kernel's flusher).
//
// `SlowDisk` makes an ext4 filesystem on a loop device over an image file
// and mounts it at a given directory; `throttle_writes` then limits how
// fast that device takes writes, through the kernel's block I/O throttle
// (cgroup v1 blkio, as BENCH-NOTES describes, or cgroup v2 io.max): the
// given process is put in a group of its own with the limit. Under v1 the
// root group gets the same limit for this device alone, since the
// kernel's flusher and ext4's journal write from there. Needs root, a loop
// device and one of the two throttles; a test without them fails (it is
// not skipped).
#pragma once

#include <cstdint>
#include <string>
#include <sys/types.h>

namespace overcache::test {

class SlowDisk {
public:
    // A `mib` MiB image at `image`, mounted at `mountpoint` (an existing,
    // empty directory).
    SlowDisk(const std::string& image, const std::string& mountpoint, unsigned mib);
    SlowDisk(const SlowDisk&) = delete;
    SlowDisk& operator=(const SlowDisk&) = delete;
    // Lifts the limits, unmounts (lazily if busy), detaches the loop device
    // and removes the group and the image.
    ~SlowDisk();

    // From now on the writes `pid` issues to the device go at most
    // `bytes_per_s`.
    void throttle_writes(pid_t pid, std::uint64_t bytes_per_s);
    // No limit any more (the processes stay in the group).
    void unthrottle();

    const std::string& device() const noexcept { return dev_; }

private:
    void set_limit(std::uint64_t bytes_per_s); // 0: none
    void set_limit_quietly() noexcept;

    std::string image_;
    std::string mnt_;
    std::string dev_;    // /dev/loopN
    std::string majmin_; // "7:N"
    std::string group_;  // the cgroup directory, once made
    bool v2_ = false;
    bool mounted_ = false;
};

} // namespace overcache::test
