// A temporary directory for one test, removed with everything in it when the
// object dies. Removal never crosses into another filesystem (FTW_MOUNT), so a
// mount that could not be taken down is left alone instead of being emptied.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ftw.h>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace overcache::test {

class TmpDir {
public:
    // `prefix` names the directory under `base`, else $TMPDIR, else /tmp. The
    // directory is made 0755 so that tests running as another uid can walk
    // through it.
    explicit TmpDir(const std::string& prefix = "overcache-test", std::string base = {}) {
        if (base.empty()) {
            const char* env = std::getenv("TMPDIR");
            base = env && *env ? env : "/tmp";
        }
        std::string templ = base + "/" + prefix + ".XXXXXX";
        if (!::mkdtemp(templ.data()))
            throw std::runtime_error("mkdtemp(" + templ + "): " + std::strerror(errno));
        ::chmod(templ.c_str(), 0755);
        path_ = std::move(templ);
    }
    TmpDir(const TmpDir&) = delete;
    TmpDir& operator=(const TmpDir&) = delete;
    TmpDir(TmpDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}
    ~TmpDir() { remove_tree(path_); }

    const std::string& path() const noexcept { return path_; }
    std::string operator/(const std::string& name) const { return path_ + "/" + name; }

    // Removes `root` and everything below it on the same filesystem; errors
    // are ignored (a destructor has no one to report them to).
    static void remove_tree(const std::string& root) noexcept {
        if (root.empty())
            return;
        ::nftw(
            root.c_str(),
            [](const char* p, const struct stat* st, int type, struct FTW*) {
                if (type == FTW_DP || (st && S_ISDIR(st->st_mode)))
                    ::rmdir(p);
                else
                    ::unlink(p);
                return 0;
            },
            64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    }

private:
    std::string path_;
};

} // namespace overcache::test
