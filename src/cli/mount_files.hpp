// The regular files a PATH argument names on an overcache mount, for the
// subcommands that act on files (invalidate, prefetch): PATH is resolved
// by realpath(3) (a symlink names its target) and may be anywhere below a
// mount; its mount's root is the nearest directory above it (itself
// included) whose `.overcache` is an overcache mount's control file. A
// directory is walked here (not into other mounts, not following
// symlinks), so the mount never walks a tree on a FUSE thread.
#pragma once

#include "cli/control_client.hpp"
#include "overcache/util/result.hpp"

#include <string>
#include <vector>

namespace overcache::cli {

struct MountFiles {
    std::string root;               // the mount's root, absolute
    ControlClient control;          // its control file
    std::vector<std::string> files; // absolute paths of the regular files
    // A file's path below the mount's root, as a command argument takes it
    // (before escaping).
    std::string rel(const std::string& file) const {
        return file.substr(root == "/" ? 1 : root.size() + 1);
    }
};

// The files of `path` and their mount; the error's message is the whole
// reason for the user (without the path): "No such file or directory",
// "not on an overcache mount".
Result<MountFiles> files_on_mount(const std::string& path);

// An error as "<errno text> (<message>)" for a line of stderr.
std::string reason_of(const Error& e);

} // namespace overcache::cli
