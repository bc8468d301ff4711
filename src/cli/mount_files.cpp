// DOC: finding the files a PATH argument names and the mount they are on;
// see mount_files.hpp. Shared by invalidate and prefetch.
#include "cli/mount_files.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ftw.h>
#include <optional>
#include <sys/stat.h>

namespace overcache::cli {
namespace {

std::vector<std::string>* walk_files = nullptr; // nftw has no user pointer

int walk_one(const char* path, const struct stat* st, int flag, FTW* /*ftw*/) {
    if (flag == FTW_F && S_ISREG(st->st_mode))
        walk_files->emplace_back(path);
    return 0;
}

// The mount root above `dir` (an absolute, canonical directory path), with
// its control file open; nullopt when no directory up to "/" is one.
std::optional<std::pair<std::string, ControlClient>> find_mount(std::string dir) {
    for (;;) {
        if (auto c = ControlClient::open(dir); c)
            return std::make_pair(dir, std::move(*c));
        if (dir == "/")
            return std::nullopt;
        const auto slash = dir.rfind('/');
        dir = slash == 0 ? std::string("/") : dir.substr(0, slash);
    }
}

} // namespace

Result<MountFiles> files_on_mount(const std::string& path) {
    char real[PATH_MAX];
    struct stat st {};
    if (::realpath(path.c_str(), real) == nullptr || ::stat(real, &st) != 0)
        return fail(Errc::BadValue, std::strerror(errno));
    const std::string abs = real;
    std::vector<std::string> files;
    // The directory the mount is looked for from: the PATH, or a file's.
    const std::size_t slash = abs.rfind('/');
    const std::string dir = S_ISDIR(st.st_mode) ? abs
                            : slash == 0        ? std::string("/")
                                                : abs.substr(0, slash);
    if (S_ISDIR(st.st_mode)) {
        walk_files = &files;
        const int w = ::nftw(abs.c_str(), walk_one, 32, FTW_PHYS | FTW_MOUNT);
        walk_files = nullptr;
        if (w != 0)
            return fail(Errc::BadValue, std::strerror(errno));
    } else if (S_ISREG(st.st_mode)) {
        files.push_back(abs);
    } else {
        return fail(Errc::BadValue, "not a regular file or directory");
    }
    auto mount = find_mount(dir);
    if (!mount)
        return fail(Errc::BadValue, "not on an overcache mount");
    return MountFiles{std::move(mount->first), std::move(mount->second), std::move(files)};
}

std::string reason_of(const Error& e) {
    std::string reason = std::strerror(to_errno(e));
    if (!e.message.empty())
        reason += " (" + e.message + ")";
    return reason;
}

} // namespace overcache::cli
