// A small real filesystem for tests about running out of space: a tmpfs of
// `size_bytes` mounted on a directory of its own, taken down (lazily, so a
// file still open cannot keep it) when the object dies. Mounting needs root:
// without it (or where mount(2) is refused), ok() is false and the test
// skips with a message.
#pragma once

#include "tmp_dir.hpp"

#include <cstdint>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace overcache::test {

class SmallFs {
public:
    explicit SmallFs(std::uint64_t size_bytes) {
        dir_ = tmp_ / "fs";
        if (::geteuid() != 0 || ::mkdir(dir_.c_str(), 0755) != 0)
            return;
        const std::string opts = "size=" + std::to_string(size_bytes) + ",mode=0755";
        mounted_ = ::mount("overcache-test", dir_.c_str(), "tmpfs", 0, opts.c_str()) == 0;
    }
    SmallFs(const SmallFs&) = delete;
    SmallFs& operator=(const SmallFs&) = delete;
    ~SmallFs() {
        if (mounted_)
            ::umount2(dir_.c_str(), MNT_DETACH);
    }

    bool ok() const { return mounted_; }
    static std::string why_not() { // (a std::string: doctest prints a char* as a pointer)
        return ::geteuid() != 0 ? "not root: cannot mount a small tmpfs, skipped"
                                : "mounting a small tmpfs failed, skipped";
    }
    const std::string& path() const { return dir_; }
    std::string operator/(const std::string& name) const { return dir_ + "/" + name; }
    // Bytes free for unprivileged users, as the cache counts them.
    std::uint64_t free_bytes() const {
        struct statvfs v {};
        if (::statvfs(dir_.c_str(), &v) != 0)
            return 0;
        return static_cast<std::uint64_t>(v.f_bavail) * v.f_frsize;
    }

private:
    TmpDir tmp_{"overcache-smallfs"};
    std::string dir_;
    bool mounted_ = false;
};

// Bytes allocated to a file (st_blocks), 0 when it cannot be stat'ed.
inline std::uint64_t allocated_bytes(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        return 0;
    return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

} // namespace overcache::test
