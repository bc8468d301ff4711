// Mount tests, xattrs, permissions and locks: xattr errno contract (size-0
// probes, ERANGE, ENODATA, CREATE/REPLACE, reserved user.overcache.*), access()
// and permission enforcement for another uid (default_permissions,
// allow_other), ownership of files other users create, flock and POSIX locks.
#include "fuse_mount.hpp"
#include "same.hpp"

#include <algorithm>
#include <cstdio>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <functional>
#include <string>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <utility>
#include <vector>

using namespace overcache::test;

namespace {

constexpr uid_t kOtherUid = 4242;
constexpr gid_t kOtherGid = 4343;

std::vector<std::string> xattr_names(const std::string& path) {
    std::vector<std::string> out;
    ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
    if (n <= 0)
        return out;
    std::string buf(static_cast<size_t>(n), '\0');
    n = ::llistxattr(path.c_str(), buf.data(), buf.size());
    if (n <= 0)
        return out;
    buf.resize(static_cast<size_t>(n));
    for (size_t i = 0; i < buf.size();) {
        std::string name(buf.c_str() + i);
        i += name.size() + 1;
        out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out;
}

// Writes, truncates (truncate, ftruncate, an open with O_TRUNC) files whose
// mode has setuid and setgid, as kOtherUid (their owner, without
// CAP_FSETID) and as root, in the mount and in the twin: the bits that
// survive must be the same (pjdfstest's write and truncate cases; Linux
// drops setuid, and setgid when group execute is on). Once the kernel gives
// the daemon HANDLE_KILLPRIV_V2 it leaves the truncates to it.
void check_setid_kills(Mount& m) {
    const std::vector<std::pair<std::string, std::function<int(const std::string&)>>> ops = {
        {"write",
         [](const std::string& p) {
             const int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
             if (fd < 0)
                 return errno;
             const int r = ::pwrite(fd, "y", 1, 0) == 1 ? 0 : errno;
             return ::close(fd) == 0 ? r : errno;
         }},
        {"truncate",
         [](const std::string& p) { return ::truncate(p.c_str(), 1) == 0 ? 0 : errno; }},
        {"ftruncate",
         [](const std::string& p) {
             const int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
             if (fd < 0)
                 return errno;
             const int r = ::ftruncate(fd, 1) == 0 ? 0 : errno;
             return ::close(fd) == 0 ? r : errno;
         }},
        {"O_TRUNC",
         [](const std::string& p) {
             const int fd = ::open(p.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
             if (fd < 0)
                 return errno;
             return ::close(fd) == 0 ? 0 : errno;
         }},
    };
    int n = 0;
    for (const mode_t mode : {mode_t{06775}, mode_t{06765}}) {
        for (const uid_t who : {kOtherUid, uid_t{0}}) {
            for (const auto& [what, op] : ops) {
                const std::string name = "f" + std::to_string(n++);
                char mode_text[16];
                std::snprintf(mode_text, sizeof mode_text, "0%o", static_cast<unsigned>(mode));
                INFO(what << " as uid " << who << " of mode " << mode_text);
                for (const auto& root : {m.mountpoint(), m.twin()}) {
                    write_all(root + "/" + name, "xx");
                    REQUIRE(::chown((root + "/" + name).c_str(), kOtherUid, kOtherGid) == 0);
                    REQUIRE(::chmod((root + "/" + name).c_str(), mode) == 0);
                }
                for (const auto& root : {m.mountpoint(), m.twin()})
                    CHECK(run_as(who, who == 0 ? 0 : kOtherGid,
                                 [&] { return op(root + "/" + name); }) == 0);
                struct stat on_twin = {};
                struct stat on_mnt = {};
                struct stat on_backing = {};
                REQUIRE(::stat(m.twin(name).c_str(), &on_twin) == 0);
                // The twin shows what Linux does: the test means something.
                CHECK(((on_twin.st_mode & S_ISUID) == 0) == (who != 0));
                // The mode, as the mount shows it and as the backing holds
                // it (only the mode: with the kernel's writeback cache the
                // mount shows the kernel's own mtime of a truncate).
                REQUIRE(::stat(m.mnt(name).c_str(), &on_mnt) == 0);
                CHECK(on_mnt.st_mode == on_twin.st_mode);
                REQUIRE(::stat(m.backing(name).c_str(), &on_backing) == 0);
                CHECK(on_backing.st_mode == on_twin.st_mode);
            }
        }
    }
    // Its own mode changes are not taken for changes behind the mount.
    if (m.has_daemon())
        CHECK(m.stat("writeback_conflicts") == 0);
}

} // namespace

TEST_SUITE("posix_attr") {

    TEST_CASE("xattrs: set, get, list, remove, size-0 probes, errno" * doctest::timeout(120)) {
        Mount m;
        write_all(m.mnt("f"), "x");
        write_all(m.twin("f"), "x");
        char buf[256] = {};
        SAME(::getxattr(P("f"), "user.a", buf, sizeof buf)); // ENODATA
        SAME(::setxattr(P("f"), "user.a", "value-a", 7, 0));
        SAME(::setxattr(P("f"), "user.empty", "", 0, 0));
        SAME(::getxattr(P("f"), "user.a", nullptr, 0)); // size probe: 7
        SAME(::getxattr(P("f"), "user.a", buf, 3));     // ERANGE
        SAME(::getxattr(P("f"), "user.a", buf, sizeof buf));
        CHECK(std::string(buf, 7) == "value-a");
        SAME(::getxattr(P("f"), "user.empty", buf, sizeof buf));
        SAME(::setxattr(P("f"), "user.a", "x", 1, XATTR_CREATE));  // EEXIST
        SAME(::setxattr(P("f"), "user.b", "x", 1, XATTR_REPLACE)); // ENODATA
        SAME(::setxattr(P("f"), "user.a", "new", 3, XATTR_REPLACE));
        SAME(::getxattr(P("f"), "user.a", buf, sizeof buf));
        CHECK(std::string(buf, 3) == "new");
        SAME(::listxattr(P("f"), nullptr, 0));
        SAME(::listxattr(P("f"), buf, 1)); // ERANGE
        CHECK(xattr_names(m.mnt("f")) == xattr_names(m.twin("f")));
        SAME(::removexattr(P("f"), "user.a"));
        SAME(::removexattr(P("f"), "user.a")); // ENODATA
        CHECK(xattr_names(m.mnt("f")) == xattr_names(m.twin("f")));
        // A large value (64 KiB is the VFS maximum; ext4 takes less: same errno).
        std::string big = pattern(60000, 1);
        SAME(::setxattr(P("f"), "user.big", big.data(), big.size(), 0));
        std::string back(big.size(), '\0');
        SAME(::getxattr(P("f"), "user.big", back.data(), back.size()));
        // Bad namespaces and missing files.
        SAME(::setxattr(P("f"), "bogus.a", "x", 1, 0));
        SAME(::getxattr(P("nope"), "user.a", buf, sizeof buf));
        // trusted.* as root.
        SAME(::setxattr(P("f"), "trusted.t", "tv", 2, 0));
        SAME(::getxattr(P("f"), "trusted.t", buf, sizeof buf));
        // On a directory and, through fds, on an open file.
        SAME(::mkdir(P("d"), 0755));
        SAME(::setxattr(P("d"), "user.d", "dv", 2, 0));
        SAME(::getxattr(P("d"), "user.d", buf, sizeof buf));
        {
            FdPair f(m, "f", O_RDONLY);
            REQUIRE(f.ok());
            SAME_FD(f, ::fsetxattr(fd, "user.fd", "1", 1, 0));
            SAME_FD(f, ::fgetxattr(fd, "user.fd", buf, sizeof buf));
            SAME_FD(f, ::flistxattr(fd, nullptr, 0));
            SAME_FD(f, ::fremovexattr(fd, "user.fd"));
        }
        // user.* xattrs on symlinks are refused by the VFS (EPERM).
        SAME(::symlink("f", P("l")));
        SAME(::lsetxattr(P("l"), "user.x", "1", 1, 0));
        // Whatever the mount stores lands on the backing file.
        CHECK(xattr_names(m.mnt("f")) == xattr_names(m.backing("f")));
        // POSIX ACLs are xattrs too.
        SAME(::getxattr(P("f"), "system.posix_acl_access", buf, sizeof buf));
    }

    TEST_CASE("xattrs: user.overcache.* is reserved" * doctest::timeout(120)) {
        Mount m;
        if (!m.has_daemon()) {
            MESSAGE("stand-in mount: nothing is reserved");
            return;
        }
        write_all(m.mnt("f"), "x");
        const std::string f = m.mnt("f");
        char buf[64];
        errno = 0;
        CHECK(::setxattr(f.c_str(), "user.overcache.x", "1", 1, 0) == -1);
        CHECK(errno == EINVAL); // not a per-path setting (path_policy_test has those)
        errno = 0;
        CHECK(::getxattr(f.c_str(), "user.overcache.x", buf, sizeof buf) == -1);
        CHECK((errno == ENOTSUP || errno == ENODATA));
        errno = 0;
        CHECK(::removexattr(f.c_str(), "user.overcache.x") == -1);
        CHECK((errno == ENOTSUP || errno == ENODATA));
        for (auto& n : xattr_names(f))
            CHECK(n.rfind("user.overcache.", 0) != 0);
        // A backing file that already has such a name does not expose it.
        write_all(m.backing("g"), "y");
        REQUIRE(::setxattr(m.backing("g").c_str(), "user.overcache.planted", "1", 1, 0) == 0);
        for (auto& n : xattr_names(m.mnt("g")))
            CHECK(n.rfind("user.overcache.", 0) != 0);
    }

    TEST_CASE("access() as root and as another user" * doctest::timeout(120)) {
        Mount m;
        for (const auto& root : {m.mountpoint(), m.twin()}) {
            write_all(root + "/r", "x");
            ::chmod((root + "/r").c_str(), 0644);
            write_all(root + "/none", "x");
            ::chmod((root + "/none").c_str(), 0);
            write_all(root + "/x", "x");
            ::chmod((root + "/x").c_str(), 0755);
            write_all(root + "/mine", "x");
            ::chown((root + "/mine").c_str(), kOtherUid, kOtherGid);
            ::chmod((root + "/mine").c_str(), 0600);
        }
        for (const char* n : {"r", "none", "x", "mine", "missing"}) {
            for (int mode : {F_OK, R_OK, W_OK, X_OK, R_OK | W_OK}) {
                INFO(std::string(n) << " mode " << mode);
                SAME(::access(P(n), mode));
                // As the other user (access() checks the real uid).
                int a = run_as(kOtherUid, kOtherGid,
                               [&] { return ::access(m.mnt(n).c_str(), mode) == 0 ? 0 : errno; });
                int b = run_as(kOtherUid, kOtherGid,
                               [&] { return ::access(m.twin(n).c_str(), mode) == 0 ? 0 : errno; });
                CHECK(a == b);
            }
        }
    }

    TEST_CASE("permissions are enforced for another user; their files are theirs" *
              doctest::timeout(120)) {
        Mount m;
        for (const auto& root : {m.mountpoint(), m.twin()}) {
            REQUIRE(::mkdir((root + "/pub").c_str(), 0777) == 0);
            REQUIRE(::chmod((root + "/pub").c_str(), 0777) == 0);
            REQUIRE(::mkdir((root + "/priv").c_str(), 0700) == 0);
            write_all(root + "/pub/rootfile", "secret");
            ::chmod((root + "/pub/rootfile").c_str(), 0600);
            write_all(root + "/pub/readable", "open");
            ::chmod((root + "/pub/readable").c_str(), 0644);
            REQUIRE(::mkdir((root + "/sticky").c_str(), 0777) == 0);
            REQUIRE(::chmod((root + "/sticky").c_str(), 01777) == 0);
            write_all(root + "/sticky/rootfile", "x");
        }
        // Each step returns 0 or the errno it met, compared between the trees.
        auto as_other = [&](const std::function<int(const std::string&)>& step) {
            int a = run_as(kOtherUid, kOtherGid, [&] { return step(m.mountpoint()); });
            int b = run_as(kOtherUid, kOtherGid, [&] { return step(m.twin()); });
            CHECK(a == b);
            return a;
        };
        auto err = [](long r) { return r < 0 ? errno : 0; };
        CHECK(as_other([&](const std::string& r) {
                  return err(::open((r + "/pub/rootfile").c_str(), O_RDONLY));
              }) == EACCES);
        CHECK(as_other([&](const std::string& r) {
                  int fd = ::open((r + "/pub/readable").c_str(), O_RDONLY);
                  return fd < 0 ? errno : (::close(fd), 0);
              }) == 0);
        CHECK(as_other([&](const std::string& r) {
                  return err(::open((r + "/pub/readable").c_str(), O_WRONLY));
              }) == EACCES);
        CHECK(as_other([&](const std::string& r) {
                  return err(::open((r + "/priv/x").c_str(), O_CREAT | O_WRONLY, 0644));
              }) == EACCES);
        CHECK(as_other([&](const std::string& r) {
                  return err(::chmod((r + "/pub/readable").c_str(), 0777));
              }) == EPERM);
        CHECK(as_other([&](const std::string& r) {
                  return err(::chown((r + "/pub/readable").c_str(), kOtherUid, kOtherGid));
              }) == EPERM);
        CHECK(as_other([&](const std::string& r) {
                  return err(::unlink((r + "/sticky/rootfile").c_str()));
              }) == EPERM);
        CHECK(as_other([&](const std::string& r) {
                  return err(::truncate((r + "/pub/readable").c_str(), 0));
              }) == EACCES);
        const timespec t[2] = {{1, 0}, {2, 0}};
        CHECK(as_other([&](const std::string& r) {
                  return err(::utimensat(AT_FDCWD, (r + "/pub/readable").c_str(), t, 0));
              }) == EPERM);
        // What the other user creates is owned by them, on the backing too.
        CHECK(as_other([&](const std::string& r) {
                  int fd = ::open((r + "/pub/theirs").c_str(), O_CREAT | O_WRONLY, 0640);
                  if (fd < 0)
                      return errno;
                  ::close(fd);
                  if (::mkdir((r + "/pub/theirdir").c_str(), 0750) != 0)
                      return errno;
                  if (::symlink("theirs", (r + "/pub/theirlink").c_str()) != 0)
                      return errno;
                  if (::mkfifo((r + "/pub/theirfifo").c_str(), 0600) != 0)
                      return errno;
                  // They may chmod their own file and set its times to now.
                  if (::chmod((r + "/pub/theirs").c_str(), 0600) != 0)
                      return errno;
                  if (::utimensat(AT_FDCWD, (r + "/pub/theirs").c_str(), nullptr, 0) != 0)
                      return errno;
                  return 0;
              }) == 0);
        for (const char* n : {"pub/theirs", "pub/theirdir", "pub/theirlink", "pub/theirfifo"}) {
            INFO(std::string(n));
            same_stat(m, n);
            struct stat st {};
            REQUIRE(::lstat(m.backing(n).c_str(), &st) == 0);
            CHECK(st.st_uid == kOtherUid);
            CHECK(st.st_gid == kOtherGid);
        }
        // setgid directories hand their group down.
        for (const auto& root : {m.mountpoint(), m.twin()}) {
            REQUIRE(::mkdir((root + "/sgid").c_str(), 0777) == 0);
            REQUIRE(::chown((root + "/sgid").c_str(), 0, 777) == 0);
            REQUIRE(::chmod((root + "/sgid").c_str(), 02777) == 0);
        }
        as_other([&](const std::string& r) {
            int fd = ::open((r + "/sgid/f").c_str(), O_CREAT | O_WRONLY, 0644);
            if (fd < 0)
                return errno;
            ::close(fd);
            return ::mkdir((r + "/sgid/d").c_str(), 0755) == 0 ? 0 : errno;
        });
        same_stat(m, "sgid/f");
        same_stat(m, "sgid/d");
        CHECK(tree_diff(m.mountpoint(), m.twin()) == "");
    }

    TEST_CASE("chown by a non-root owner: setuid/setgid kept on dirs, cleared on files" *
              doctest::timeout(120)) {
        // pjdfstest chown/00.t: Linux keeps S_ISUID/S_ISGID of a directory when
        // its owner changes its group, and clears them on an executable file.
        Mount m;
        for (const auto& root : {m.mountpoint(), m.twin()}) {
            REQUIRE(::mkdir((root + "/d").c_str(), 0755) == 0);
            write_all(root + "/f", "x");
            for (const char* n : {"/d", "/f"}) {
                REQUIRE(::chown((root + n).c_str(), kOtherUid, kOtherGid) == 0);
                REQUIRE(::chmod((root + n).c_str(), 06555) == 0);
            }
        }
        for (const char* n : {"d", "f"}) {
            INFO(std::string(n));
            same_stat(m, n);
            for (gid_t g : {kOtherGid + 1, kOtherGid}) {
                auto chgrp = [&](const std::string& root) {
                    return run_as(kOtherUid, kOtherGid, [&] {
                        // Member of both groups: setgroups() dropped them, so add
                        // kOtherGid + 1 as the effective gid when needed.
                        if (g != kOtherGid && ::setresgid(g, g, g) != 0)
                            return errno;
                        return ::chown((root + "/" + n).c_str(), static_cast<uid_t>(-1), g) == 0
                                   ? 0
                                   : errno;
                    });
                };
                CHECK(chgrp(m.mountpoint()) == chgrp(m.twin()));
                same_stat(m, n);
                for (const auto& root : {m.mountpoint(), m.twin()})
                    ::chmod((root + "/" + n).c_str(), 06555);
            }
        }
    }

    TEST_CASE("set-id bits: a write or truncate by their owner drops them as Linux does; root's "
              "keep them" *
              doctest::timeout(120)) {
        Mount m;
        check_setid_kills(m);
    }

    TEST_CASE("set-id bits, with the kernel's writeback cache: the same" * doctest::timeout(120)) {
        require_daemon();
        Mount m("cache_mode=writeback,kernel_writeback_cache=1");
        check_setid_kills(m);
    }

    TEST_CASE("flock and POSIX locks conflict between processes" * doctest::timeout(120)) {
        Mount m;
        write_all(m.mnt("f"), "0123456789");
        write_all(m.twin("f"), "0123456789");
        FdPair a(m, "f", O_RDWR), b(m, "f", O_RDWR);
        REQUIRE(a.ok());
        REQUIRE(b.ok());
        // flock belongs to the open file description: the second one conflicts.
        SAME_FD(a, ::flock(fd, LOCK_EX | LOCK_NB));
        SAME_FD(b, ::flock(fd, LOCK_SH | LOCK_NB)); // EWOULDBLOCK
        SAME_FD(a, ::flock(fd, LOCK_UN));
        SAME_FD(b, ::flock(fd, LOCK_SH | LOCK_NB));
        SAME_FD(a, ::flock(fd, LOCK_SH | LOCK_NB));
        SAME_FD(b, ::flock(fd, LOCK_UN));
        SAME_FD(a, ::flock(fd, LOCK_UN));

        // fcntl record locks: taken here, tested from another process.
        struct flock wl {};
        wl.l_type = F_WRLCK;
        wl.l_whence = SEEK_SET;
        wl.l_start = 2;
        wl.l_len = 4;
        SAME_FD(a, ::fcntl(fd, F_SETLK, &wl));
        auto probe = [&](int fd, short type, off_t start, off_t len) {
            return run_as(0, 0, [&] {
                struct flock l {};
                l.l_type = type;
                l.l_whence = SEEK_SET;
                l.l_start = start;
                l.l_len = len;
                return ::fcntl(fd, F_SETLK, &l) != 0 ? errno : 0;
            });
        };
        for (auto [start, len] : {std::pair<off_t, off_t>{0, 1}, {0, 3}, {5, 10}, {6, 10}}) {
            INFO("range " << start << "+" << len);
            CHECK(probe(a.mnt, F_RDLCK, start, len) == probe(a.twin, F_RDLCK, start, len));
            CHECK(probe(b.mnt, F_WRLCK, start, len) == probe(b.twin, F_WRLCK, start, len));
        }
        CHECK(probe(b.mnt, F_RDLCK, 3, 1) == EAGAIN);
        // F_GETLK from another process names us.
        int who = run_as(0, 0, [&] {
            struct flock q {};
            q.l_type = F_WRLCK;
            q.l_whence = SEEK_SET;
            q.l_start = 0;
            q.l_len = 0;
            if (::fcntl(b.mnt, F_GETLK, &q) != 0)
                return 1;
            return q.l_type == F_WRLCK && q.l_pid == ::getppid() && q.l_start == 2 && q.l_len == 4
                       ? 0
                       : 2;
        });
        CHECK(who == 0);
        wl.l_type = F_UNLCK;
        SAME_FD(a, ::fcntl(fd, F_SETLK, &wl));
        CHECK(probe(b.mnt, F_WRLCK, 0, 0) == 0);
        // Open file description locks conflict within one process.
        struct flock ol {};
        ol.l_type = F_WRLCK;
        ol.l_whence = SEEK_SET;
        ol.l_len = 0;
        SAME_FD(a, ::fcntl(fd, F_OFD_SETLK, &ol));
        SAME_FD(b, ::fcntl(fd, F_OFD_SETLK, &ol));
    }

} // TEST_SUITE
