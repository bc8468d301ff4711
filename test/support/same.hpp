// doctest helpers for the POSIX mount tests: run one expression on the mount
// and on the twin directory and check that both calls did the same thing.
//
//   SAME(::mkdir(P("d"), 0755));        // `root` is the tree being tested
//   SAME_FD(fds, ::pwrite(fd, buf, n, off));  // `fd` is the tree's own fd
//   same_stat(m, "d");                  // lstat fields + st_ino == backing's
//
// P("x") is root + "/x" as a C string valid until the end of the statement.
#pragma once

#include "fuse_mount.hpp"
#include "twin.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace overcache::test {

// Runs f(root) on the mount and the twin; CHECKs that the results agree and
// returns the mount's.
template <class F> Res check_same(const Mount& m, F&& f, const char* what) {
    Res on_mnt = call([&] { return f(m.mountpoint()); });
    Res on_twin = call([&] { return f(m.twin()); });
    INFO("expression: " << std::string(what));
    INFO("mount: " << on_mnt << "  twin: " << on_twin);
    CHECK(on_mnt == on_twin);
    return on_mnt;
}

// One open file in each tree.
struct FdPair {
    int mnt = -1;
    int twin = -1;
    FdPair() = default;
    FdPair(const Mount& m, const std::string& rel, int flags, mode_t mode = 0644) {
        mnt = ::open(m.mnt(rel).c_str(), flags | O_CLOEXEC, mode);
        twin = ::open(m.twin(rel).c_str(), flags | O_CLOEXEC, mode);
    }
    FdPair(const FdPair&) = delete;
    FdPair& operator=(const FdPair&) = delete;
    ~FdPair() {
        if (mnt >= 0)
            ::close(mnt);
        if (twin >= 0)
            ::close(twin);
    }
    bool ok() const { return mnt >= 0 && twin >= 0; }
};

template <class F> Res check_same_fd(const FdPair& fds, F&& f, const char* what) {
    Res on_mnt = call([&] { return f(fds.mnt); });
    Res on_twin = call([&] { return f(fds.twin); });
    INFO("expression: " << std::string(what));
    INFO("mount: " << on_mnt << "  twin: " << on_twin);
    CHECK(on_mnt == on_twin);
    return on_mnt;
}

// lstat of `rel` in both trees: same result, same fields; and the mount's
// st_ino is the backing file's (the adapter passes the backing inode through).
inline void same_stat(const Mount& m, const std::string& rel, unsigned fields = kStatDefault) {
    struct stat a {
    }, b{}, k{};
    m.settle(); // writeback: the backing holds what the mount shows
    Res ra = call([&] { return ::lstat(m.mnt(rel).c_str(), &a); });
    Res rb = call([&] { return ::lstat(m.twin(rel).c_str(), &b); });
    INFO("lstat " << rel << "  mount: " << ra << "  twin: " << rb);
    REQUIRE(ra == rb);
    if (ra.ret != 0)
        return;
    CHECK(stat_diff(a, b, fields) == "");
    if (::lstat(m.backing(rel).c_str(), &k) == 0 && rel != "" && rel != ".") {
        CHECK(a.st_ino == k.st_ino);
        CHECK(stat_diff(a, k, fields | kMtime) == "");
    }
}

} // namespace overcache::test

#define P(name) (root + "/" + (name)).c_str()
#define SAME(expr)                                                                                 \
    ::overcache::test::check_same(                                                                 \
        m, [&](const std::string& root) { return (void)root, (expr); }, #expr)
#define SAME_FD(fds, expr)                                                                         \
    ::overcache::test::check_same_fd((fds), [&](int fd) { return (void)fd, (expr); }, #expr)
