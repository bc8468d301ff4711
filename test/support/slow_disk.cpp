// DOC: see slow_disk.hpp. The loop device reads its image with direct I/O
// (losetup --direct-io=on), so the image's pages are not cached a second
// time under the filesystem's own.
#include "slow_disk.hpp"

#include "run_command.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace overcache::test {
namespace {

constexpr auto kToolTime = std::chrono::seconds(60);

std::string run_or_throw(const std::vector<std::string>& args) {
    CommandResult r = run_command(args, kToolTime);
    if (r.status != 0)
        throw std::runtime_error("slow disk: `" + args[0] + "` failed (status " +
                                 std::to_string(r.status) + "): " + r.out);
    return r.out;
}

void write_file_or_throw(const std::string& path, const std::string& text) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        throw std::runtime_error("slow disk: open(" + path + "): " + std::strerror(errno));
    const ssize_t n = ::write(fd, text.data(), text.size());
    const int err = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(text.size()))
        throw std::runtime_error("slow disk: writing '" + text + "' to " + path + ": " +
                                 (n < 0 ? std::strerror(err) : "short write"));
}

// Best effort, for teardown.
void write_file_quietly(const std::string& path, const std::string& text) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    (void)!::write(fd, text.data(), text.size());
    ::close(fd);
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

constexpr const char* kV1Root = "/sys/fs/cgroup/blkio";
constexpr const char* kV2Root = "/sys/fs/cgroup";

} // namespace

SlowDisk::SlowDisk(const std::string& image, const std::string& mountpoint, unsigned mib)
    : image_(image), mnt_(mountpoint) {
    if (::geteuid() != 0)
        throw std::runtime_error("slow disk: needs root (a loop device and a mount)");
    {
        const int fd = ::open(image_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            throw std::runtime_error("slow disk: creating " + image_ + ": " + std::strerror(errno));
        const int rc = ::ftruncate(fd, static_cast<off_t>(mib) << 20);
        const int err = errno;
        ::close(fd);
        if (rc != 0)
            throw std::runtime_error("slow disk: sizing " + image_ + ": " + std::strerror(err));
    }
    std::string out = run_or_throw({"losetup", "--find", "--show", "--direct-io=on", image_});
    while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
        out.pop_back();
    dev_ = out;
    struct stat st {};
    if (::stat(dev_.c_str(), &st) != 0 || !S_ISBLK(st.st_mode))
        throw std::runtime_error("slow disk: losetup gave '" + dev_ + "', not a block device");
    majmin_ = std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
    // No lazy initialisation: nothing writes the disk behind the test.
    run_or_throw({"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev_});
    if (::mount(dev_.c_str(), mnt_.c_str(), "ext4", 0, nullptr) != 0)
        throw std::runtime_error("slow disk: mount " + dev_ + " on " + mnt_ + ": " +
                                 std::strerror(errno));
    mounted_ = true;
}

SlowDisk::~SlowDisk() {
    if (!group_.empty()) {
        set_limit_quietly();
        // Whatever is left in the group goes back to the root, so that the
        // group can go.
        const std::string root = v2_ ? kV2Root : kV1Root;
        std::ifstream procs(group_ + "/cgroup.procs");
        std::string pid;
        while (procs >> pid)
            write_file_quietly(root + "/cgroup.procs", pid);
        ::rmdir(group_.c_str());
    }
    if (mounted_ && ::umount2(mnt_.c_str(), 0) != 0)
        ::umount2(mnt_.c_str(), MNT_DETACH);
    if (!dev_.empty())
        (void)run_command({"losetup", "-d", dev_}, kToolTime);
    ::unlink(image_.c_str());
}

void SlowDisk::throttle_writes(pid_t pid, std::uint64_t bytes_per_s) {
    if (group_.empty()) {
        static std::atomic<int> made{0};
        const std::string name =
            "overcache-test-" + std::to_string(::getpid()) + "-" + std::to_string(made++);
        v2_ = exists(std::string(kV2Root) + "/cgroup.controllers");
        if (!v2_ && !exists(std::string(kV1Root) + "/blkio.throttle.write_bps_device"))
            throw std::runtime_error("slow disk: no block I/O throttle here (neither cgroup v2 "
                                     "io.max nor v1 blkio under /sys/fs/cgroup)");
        if (v2_) {
            std::ifstream in(std::string(kV2Root) + "/cgroup.subtree_control");
            std::stringstream have;
            have << in.rdbuf();
            if (have.str().find("io") == std::string::npos)
                write_file_or_throw(std::string(kV2Root) + "/cgroup.subtree_control", "+io");
        }
        const std::string dir = std::string(v2_ ? kV2Root : kV1Root) + "/" + name;
        if (::mkdir(dir.c_str(), 0755) != 0)
            throw std::runtime_error("slow disk: mkdir " + dir + ": " + std::strerror(errno));
        group_ = dir;
    }
    set_limit(bytes_per_s);
    write_file_or_throw(group_ + "/cgroup.procs", std::to_string(pid));
}

void SlowDisk::unthrottle() {
    if (!group_.empty())
        set_limit(0);
}

void SlowDisk::set_limit(std::uint64_t bytes_per_s) {
    if (v2_) {
        write_file_or_throw(
            group_ + "/io.max",
            majmin_ +
                " wbps=" + (bytes_per_s == 0 ? std::string("max") : std::to_string(bytes_per_s)));
        return;
    }
    // v1 limits are flat: the group's own I/O, and the root group's (the
    // flusher, the journal) to this device, which nothing else uses.
    const std::string line = majmin_ + " " + std::to_string(bytes_per_s);
    write_file_or_throw(group_ + "/blkio.throttle.write_bps_device", line);
    write_file_or_throw(std::string(kV1Root) + "/blkio.throttle.write_bps_device", line);
}

void SlowDisk::set_limit_quietly() noexcept {
    try {
        set_limit(0);
    } catch (const std::exception&) {
    }
}

} // namespace overcache::test
