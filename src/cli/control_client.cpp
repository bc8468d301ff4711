// DOC: talks to a mount through MOUNTPOINT/.overcache. Before anything is
// written the file is checked to be an overcache control file: a regular
// file on a FUSE filesystem with the control file's st_ino, so a command
// never lands in an ordinary file of that name (a directory that is not a
// mount, or the backing itself). Later opens are checked to reach the same
// file (st_dev, st_ino). Opens use O_NONBLOCK and O_NOFOLLOW so that a FIFO
// or a symlink of that name cannot hang or redirect the client.
#include "cli/control_client.hpp"
#include "control/stats_export.hpp"

#include "control/control_file.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

namespace overcache::cli {
namespace {

Unexpected not_a_mount(const std::string& mountpoint, const std::string& why) {
    return fail(Errc::BadValue, mountpoint + " is not an overcache mount (" + why + ")");
}

Result<std::string> read_all(int fd) {
    std::string out;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            out.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0) {
            return out;
        } else if (errno != EINTR) {
            return fail_errno();
        }
    }
}

} // namespace

Result<ControlClient> ControlClient::open(const std::string& mountpoint) {
    struct stat st {};
    if (::stat(mountpoint.c_str(), &st) != 0)
        return fail_errno(mountpoint);
    if (!S_ISDIR(st.st_mode))
        return not_a_mount(mountpoint, "not a directory");
    std::string path = mountpoint;
    if (path.empty() || path.back() != '/')
        path += '/';
    path += control::kControlName;

    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT || errno == ELOOP)
            return not_a_mount(mountpoint, "no control file " + path);
        return fail_errno(path);
    }
    struct statfs sfs {};
    if (::fstat(fd.get(), &st) != 0 || ::fstatfs(fd.get(), &sfs) != 0)
        return fail_errno(path);
    if (!S_ISREG(st.st_mode) || st.st_ino != control::kControlStIno ||
        sfs.f_type != FUSE_SUPER_MAGIC)
        return not_a_mount(mountpoint, path + " is not an overcache control file");
    return ControlClient(std::move(path), std::move(fd), st.st_dev, st.st_ino, st.st_uid);
}

Result<UniqueFd> ControlClient::open_again(int flags) const {
    UniqueFd fd(::open(path_.c_str(), flags | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        if (errno == EACCES || errno == EPERM)
            return fail_errno("commands need root or the mount's owner, uid " +
                              std::to_string(owner_));
        return fail_errno(path_);
    }
    // O_NONBLOCK was only for the open (a FIFO of that name); a command's
    // write is meant to wait.
    if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK) != 0)
        return fail_errno(path_);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
        return fail_errno(path_);
    if (st.st_dev != dev_ || st.st_ino != ino_)
        return fail(Errc::BadValue, path_ + " changed: the mount went away or was replaced");
    return fd;
}

Result<std::string> ControlClient::read_text() const {
    auto fd = open_again(O_RDONLY);
    if (!fd)
        return fail(std::move(fd).error());
    auto text = read_all(fd->get());
    if (!text)
        return fail_errno(path_);
    return text;
}

Result<void> ControlClient::run(std::string_view line) const {
    auto fd = open_again(O_WRONLY);
    if (!fd)
        return fail(std::move(fd).error());
    const std::string bytes = std::string(line) + "\n";
    for (;;) {
        const ssize_t n = ::write(fd->get(), bytes.data(), bytes.size());
        if (n == static_cast<ssize_t>(bytes.size()))
            return {};
        if (n >= 0) // the control file takes a write whole or not at all
            return fail_sys(EIO, "short write to " + path_);
        // A stop signal (Ctrl-Z) interrupts the wait; the commands the CLI
        // sends are idempotent, so the line is simply written again.
        if (errno == EINTR)
            continue;
        const int err = errno;
        std::string reason;
        if (auto text = read_text(); text)
            reason = value_of(*text, "last_error").value_or("");
        if (reason == "-")
            reason.clear();
        return fail_sys(err, std::move(reason));
    }
}

std::optional<std::string> value_of(std::string_view text, std::string_view key) {
    for (auto& [k, v] : control::parse_stats(text))
        if (k == key)
            return std::move(v);
    return std::nullopt;
}

} // namespace overcache::cli
