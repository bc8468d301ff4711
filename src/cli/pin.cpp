// DOC: `overcache pin PATH...` and `overcache unpin PATH...`. pin sets
// user.overcache.pin=1 on each PATH (a file or a directory: a directory's
// pin covers everything below it, files created later too), then fetches
// the files below as `prefetch` does (same progress line), so that exit 0
// means every file is pinned and all in the cache. unpin removes the PATH's
// own pin, or sets it to 0 where a directory above still pins it, then
// opens each file below once through the mount: an open is where a file's
// cached extents follow the pin it now runs under, so they are evictable
// again when unpin returns (nothing is dropped). Exit 0 done, 1 when any
// PATH or file failed (each reported, the others still done), 2 usage.
#include "cli/fetch.hpp"
#include "cli/mount_files.hpp"
#include "cli/subcommands.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/xattr.h>
#include <unistd.h>
#include <vector>

namespace overcache::cli {
namespace {

constexpr const char* kPin = "user.overcache.pin";
constexpr const char* kEffectivePin = "user.overcache.effective_pin";

// Why an xattr call on a mount failed, for a user: ENOTSUP there means the
// mount has no cache.
std::string xattr_error(int err) {
    if (err == ENOTSUP)
        return "the mount has no cache (or PATH is not on an overcache mount)";
    if (err == EPERM)
        return std::string(std::strerror(err)) + " (only the file's owner or root may pin it)";
    return std::strerror(err);
}

bool effectively_pinned(const std::string& path) {
    char v[4] = {};
    const ssize_t n = ::getxattr(path.c_str(), kEffectivePin, v, sizeof v - 1);
    return n > 0 && v[0] == '1';
}

} // namespace

int pin_main(const Args& args) {
    int rc = 0;
    std::vector<std::string> set;
    for (const auto& path : args.positional) {
        if (::setxattr(path.c_str(), kPin, "1", 1, 0) != 0) {
            std::fprintf(stderr, "overcache pin: %s: %s\n", path.c_str(),
                         xattr_error(errno).c_str());
            rc = 1;
            continue;
        }
        set.push_back(path);
    }
    return fetch_files("pin", "pinning", set, rc);
}

int unpin_main(const Args& args) {
    int rc = 0;
    for (const auto& path : args.positional) {
        // Its own pin goes; a pin inherited from above is overridden.
        if (::removexattr(path.c_str(), kPin) != 0 && errno != ENODATA) {
            std::fprintf(stderr, "overcache unpin: %s: %s\n", path.c_str(),
                         xattr_error(errno).c_str());
            rc = 1;
            continue;
        }
        if (effectively_pinned(path) && ::setxattr(path.c_str(), kPin, "0", 1, 0) != 0) {
            std::fprintf(stderr, "overcache unpin: %s: %s\n", path.c_str(),
                         xattr_error(errno).c_str());
            rc = 1;
            continue;
        }
        auto mount = files_on_mount(path);
        if (!mount) {
            std::fprintf(stderr, "overcache unpin: %s: %s\n", path.c_str(),
                         mount.error().message.c_str());
            rc = 1;
            continue;
        }
        for (const auto& file : mount->files) {
            const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) {
                std::fprintf(stderr, "overcache unpin: %s: %s\n", file.c_str(),
                             std::strerror(errno));
                rc = 1;
                continue;
            }
            ::close(fd);
        }
    }
    return rc;
}

} // namespace overcache::cli
