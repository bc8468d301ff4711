// Test support: run the same system call on the mount and on a twin plain
// directory and say how the results differ (return value, errno, stat fields,
// whole trees).
#pragma once

#include <cerrno>
#include <cstring>
#include <functional>
#include <ostream>
#include <string>
#include <sys/stat.h>

namespace overcache::test {

// What one system call did: its return value and, when it failed, errno.
struct Res {
    long ret = 0;
    int err = 0;
    bool operator==(const Res&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Res& r);

// Calls f() with errno cleared and captures errno when it returns < 0.
template <class F> Res call(F&& f) {
    errno = 0;
    long r = static_cast<long>(f());
    return Res{r, r < 0 ? errno : 0};
}

// Which stat fields stat_diff compares.
enum StatField : unsigned {
    kMode = 1u << 0,
    kNlink = 1u << 1,
    kOwner = 1u << 2,
    kSize = 1u << 3,
    kBlocks = 1u << 4, // equal within one 64 KiB of allocation
    kRdev = 1u << 5,
    kAtime = 1u << 6,
    kMtime = 1u << 7,
    kCtime = 1u << 8, // only meaningful between two stats of the same inode
    kStatDefault = kMode | kNlink | kOwner | kSize | kBlocks | kRdev,
};

// "" when equal in the chosen fields, else a readable list of differences.
std::string stat_diff(const struct stat& a, const struct stat& b, unsigned fields = kStatDefault);

// Compares two trees: names, types, modes, sizes, nlink (within each tree),
// symlink targets and, if `contents`, file bytes. Returns "" when they agree,
// else the first few differences.
std::string tree_diff(const std::string& a, const std::string& b, bool contents = true);

// Whole-file helpers; throw std::runtime_error on failure.
std::string read_all(const std::string& path);
void write_all(const std::string& path, const std::string& data, int flags = 0, mode_t mode = 0644);

// Deterministic bytes for offset `off` of a stream seeded by `seed`: the same
// (seed, off) always gives the same byte, so data can be checked anywhere.
std::string pattern(size_t len, unsigned seed, size_t off = 0);

// Runs `fn` in a forked child as uid/gid (setresgid, setgroups({}),
// setresuid) and returns what fn returned, or -1000 - signal on a crash.
// The child returns its result through the exit status, so keep it 0..255:
// tests return an errno (0 for success).
int run_as(uid_t uid, gid_t gid, const std::function<int()>& fn);

} // namespace overcache::test
