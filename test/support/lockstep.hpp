// Test support for randomized lockstep tests: each step runs the same system
// call on the mount and on the twin plain directory and says how the results
// differ; a log of the last steps goes into the failure message. Holds what
// such tests share: the seeded generator, the paths seen so far, a few open
// file slots (one fd in each tree), and the common operations, each one
// random step. Tests add their own operations on top (see random_ops_test.cpp,
// writeback_ops_test.cpp).
//
// The operations draw from the generator in a fixed order, so a seed replays
// the same steps: keep that order when changing them, or the regression
// seeds of the tests replay something else.
#pragma once

#include "fuse_mount.hpp"
#include "twin.hpp"

#include <array>
#include <cstdint>
#include <deque>
#include <random>
#include <sstream>
#include <string>
#include <sys/types.h>
#include <unordered_set>
#include <vector>

namespace overcache::test {

// One open file in both trees.
struct Slot {
    int mnt = -1;
    int twin = -1;
    std::string path;
    bool writable = false;
    void close();
    bool open() const { return mnt >= 0 && twin >= 0; }
};

class Lockstep {
public:
    Lockstep(const Mount& m, std::uint64_t seed);
    Lockstep(const Lockstep&) = delete;
    Lockstep& operator=(const Lockstep&) = delete;
    ~Lockstep();

    // Names, types, modes, sizes, nlink and contents of the mount and the twin.
    std::string compare_trees() const { return tree_diff(m_.mountpoint(), m_.twin(), true); }
    // The last steps, one a line.
    std::string log_tail() const;
    void note(const std::string& s);

    // Common operations, each one random step; "" when both trees agreed,
    // else what differed (the step is in the log either way).
    std::string op_open(unsigned long i);
    std::string op_close_or_reopen(unsigned long i);
    std::string op_pwrite(unsigned long i);
    std::string op_pread(unsigned long i);
    std::string op_truncate(unsigned long i);
    std::string op_fallocate(unsigned long i);
    std::string op_rename(unsigned long i);
    std::string op_link(unsigned long i);
    std::string op_unlink(unsigned long i);
    std::string op_mkdir(unsigned long i);
    std::string op_rmdir(unsigned long i);
    std::string op_mmap(unsigned long i); // MAP_SHARED read, or write + msync
    std::string op_fsync(unsigned long i);
    std::string op_stat(unsigned long i); // lstat by name, fstat of a slot

    // Closes every slot (before an unmount, or after the mount died).
    void close_slots();

protected:
    std::size_t uniform(std::size_t n) {
        return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
    }
    bool chance(unsigned percent) { return uniform(100) < percent; }

    // An existing-ish path (70%) or a new name under an existing-ish dir.
    std::string pick_path();
    void remember(const std::string& p);
    // Sizes: mostly small, sometimes above 1 MiB (the FUSE request size).
    std::size_t pick_len();
    off_t pick_off();
    Slot* pick_slot(bool need_open);

    // Both sides of one system call, with the description that goes into
    // the log. f(root, on_mount) / f(fd, on_mount) returns the call's result.
    template <class F> std::string both(const std::string& what, F&& f) {
        Res a = call([&] { return f(m_.mountpoint(), true); });
        Res b = call([&] { return f(m_.twin(), false); });
        return outcome(what, a, b);
    }
    template <class F> std::string both_fd(Slot& s, const std::string& what, F&& f) {
        Res a = call([&] { return f(s.mnt, true); });
        Res b = call([&] { return f(s.twin, false); });
        return outcome(what + " [" + s.path + "]", a, b);
    }
    std::string outcome(const std::string& what, const Res& a, const Res& b);

    const Mount& m_;
    std::mt19937_64 rng_;
    std::vector<std::string> known_;
    std::unordered_set<std::string> seen_;
    std::array<Slot, 6> slots_{};
    std::deque<std::string> log_;
};

} // namespace overcache::test
