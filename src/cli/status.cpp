// DOC: `overcache status PATH...`: what the cache holds of files on a mount,
// as fincore(1) shows the page cache's: cached and dirty bytes beside the
// size, a line a PATH; a directory is one line for every regular file below
// it. The numbers come from each file's read-only xattrs
// (user.overcache.cached_bytes, user.overcache.dirty_bytes), so any tool can
// read the same. A PATH that is not on an overcache mount, or cannot be
// read, is reported and makes the exit status 1; the others are still
// shown.
#include "cli/progress.hpp"
#include "cli/subcommands.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ftw.h>
#include <string>
#include <sys/stat.h>
#include <sys/xattr.h>

namespace overcache::cli {
namespace {

struct Totals {
    std::uint64_t cached = 0;
    std::uint64_t dirty = 0;
    std::uint64_t size = 0;
    std::uint64_t files = 0;
    int error = 0;       // the first errno met
    std::string failed;  // where
};

// One xattr's number; false with errno set when it cannot be read.
bool fact(const char* path, const char* name, std::uint64_t& out) {
    char buf[32];
    const ssize_t n = ::getxattr(path, name, buf, sizeof buf - 1);
    if (n < 0)
        return false;
    buf[n] = '\0';
    char* end = nullptr;
    out = std::strtoull(buf, &end, 10);
    if (end == buf || *end != '\0') {
        errno = EINVAL;
        return false;
    }
    return true;
}

bool add_file(const char* path, const struct stat& st, Totals& t) {
    std::uint64_t cached = 0, dirty = 0;
    if (!fact(path, "user.overcache.cached_bytes", cached) ||
        !fact(path, "user.overcache.dirty_bytes", dirty)) {
        if (t.error == 0) {
            t.error = errno;
            t.failed = path;
        }
        return false;
    }
    t.cached += cached;
    t.dirty += dirty;
    t.size += static_cast<std::uint64_t>(st.st_size);
    ++t.files;
    return true;
}

Totals* walk_totals = nullptr; // nftw has no user pointer

int walk_one(const char* path, const struct stat* st, int flag, FTW* /*ftw*/) {
    if (flag == FTW_F && S_ISREG(st->st_mode))
        add_file(path, *st, *walk_totals);
    else if ((flag == FTW_DNR || flag == FTW_NS) && walk_totals->error == 0) {
        walk_totals->error = EACCES;
        walk_totals->failed = path;
    }
    return 0;
}

std::string why(int err) {
    // A file system without these names: not an overcache mount.
    if (err == ENOTSUP || err == ENODATA)
        return "not on an overcache mount";
    return std::strerror(err);
}

void print_row(const Totals& t, const std::string& path) {
    const double pct = t.size == 0 ? 0.0 : 100.0 * static_cast<double>(t.cached) /
                                               static_cast<double>(t.size);
    std::printf("%9s %9s %9s %5.1f%%  %s\n", human_bytes(t.cached).c_str(),
                human_bytes(t.dirty).c_str(), human_bytes(t.size).c_str(), pct > 100 ? 100 : pct,
                path.c_str());
}

} // namespace

int status_main(const Args& args) {
    int rc = 0;
    std::printf("%9s %9s %9s %6s  %s\n", "CACHED", "DIRTY", "SIZE", "", "PATH");
    for (const auto& path : args.positional) {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            std::fprintf(stderr, "overcache status: %s: %s\n", path.c_str(), std::strerror(errno));
            rc = 1;
            continue;
        }
        Totals t;
        if (S_ISDIR(st.st_mode)) {
            walk_totals = &t;
            if (::nftw(path.c_str(), walk_one, 32, FTW_PHYS | FTW_MOUNT) != 0 && t.error == 0) {
                t.error = errno;
                t.failed = path;
            }
            walk_totals = nullptr;
        } else if (S_ISREG(st.st_mode)) {
            add_file(path.c_str(), st, t);
        } else {
            std::fprintf(stderr, "overcache status: %s: not a regular file or directory\n",
                         path.c_str());
            rc = 1;
            continue;
        }
        if (t.error != 0) {
            std::fprintf(stderr, "overcache status: %s: %s\n", t.failed.c_str(),
                         why(t.error).c_str());
            rc = 1;
            if (t.files == 0)
                continue;
        }
        print_row(t, S_ISDIR(st.st_mode) ? path + " (" + std::to_string(t.files) + " files)"
                                         : path);
    }
    std::fflush(stdout);
    return rc;
}

} // namespace overcache::cli
