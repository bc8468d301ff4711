// DOC: `overcache invalidate PATH...`: drops what the cache holds of files
// on a mount, so their next reads come from the backing (rclone's
// vfs/forget). PATH (resolved by realpath(3): a symlink names its target)
// may be anywhere below a mount; its mount's root is the nearest directory
// above it (itself included) whose `.overcache` is the control file of an
// overcache mount (ControlClient::open checks that). A
// directory PATH is walked here, one `invalidate REL` line a regular file
// below it (not into other mounts, not following symlinks), so the mount
// never walks a tree on a FUSE thread. REL is the file's path below the
// mount's root, %XX-escaped (control::encode_path_arg) so that a name with
// blanks stays one word. A PATH that is not on a mount, or a file the mount
// refuses, is reported and makes the exit status 1; the rest goes on.
#include "cli/control_client.hpp"
#include "cli/subcommands.hpp"
#include "control/command.hpp"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ftw.h>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <vector>

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

std::string reason_of(const Error& e) {
    std::string reason = std::strerror(to_errno(e));
    if (!e.message.empty())
        reason += " (" + e.message + ")";
    return reason;
}

} // namespace

int invalidate_main(const Args& args) {
    int rc = 0;
    for (const auto& path : args.positional) {
        char real[PATH_MAX];
        struct stat st {};
        if (::realpath(path.c_str(), real) == nullptr || ::stat(real, &st) != 0) {
            std::fprintf(stderr, "overcache invalidate: %s: %s\n", path.c_str(),
                         std::strerror(errno));
            rc = 1;
            continue;
        }
        const std::string abs = real;
        std::vector<std::string> files;
        std::string dir = abs;
        if (S_ISDIR(st.st_mode)) {
            walk_files = &files;
            const int w = ::nftw(abs.c_str(), walk_one, 32, FTW_PHYS | FTW_MOUNT);
            walk_files = nullptr;
            if (w != 0) {
                std::fprintf(stderr, "overcache invalidate: %s: %s\n", path.c_str(),
                             std::strerror(errno));
                rc = 1;
                continue;
            }
        } else if (S_ISREG(st.st_mode)) {
            files.push_back(abs);
            dir = abs.substr(0, abs.rfind('/'));
            if (dir.empty())
                dir = "/";
        } else {
            std::fprintf(stderr, "overcache invalidate: %s: not a regular file or directory\n",
                         path.c_str());
            rc = 1;
            continue;
        }
        auto mount = find_mount(dir);
        if (!mount) {
            std::fprintf(stderr, "overcache invalidate: %s: not on an overcache mount\n",
                         path.c_str());
            rc = 1;
            continue;
        }
        const std::string& root = mount->first;
        const std::size_t skip = root == "/" ? 1 : root.size() + 1;
        for (const auto& file : files) {
            const std::string rel = file.substr(skip);
            auto r = mount->second.run("invalidate " + control::encode_path_arg(rel));
            if (!r) {
                std::fprintf(stderr, "overcache invalidate: %s: %s\n", file.c_str(),
                             reason_of(r.error()).c_str());
                rc = 1;
            }
        }
    }
    return rc;
}

} // namespace overcache::cli
