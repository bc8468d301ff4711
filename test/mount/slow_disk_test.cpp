// Writeback over a backing that takes writes into the page cache at once
// and writes them out slowly, as an NFS mount or an HDD does: a real ext4
// filesystem on a throttled loop device (test/support/slow_disk.hpp).
// faultfs cannot show this: its writes are slow when they are made.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "slow_disk.hpp"
#include "tmp_dir.hpp"

#include <chrono>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace overcache::test;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {
constexpr std::size_t MiB = 1024 * 1024;
} // namespace

TEST_CASE("an unmount with flush_on_unmount writes all dirty data to a backing whose disk is "
          "slower than the unmount watchdog's limit per batch" *
          doctest::timeout(300)) {
    // backing_timeout=1: the watchdog over the stop gives up once nothing
    // has moved for 10 s. 24 MiB, one writeback batch, at 2 MiB/s take
    // 12 s to reach the disk. Writeback used to wait for all of it in one
    // fdatasync, which the watchdog took for a stopped backing: the daemon
    // exited with the data still dirty. Each run written out now counts.
    constexpr std::uint64_t kRate = 2 * MiB;
    const std::string opts = "cache_mode=writeback,writeback_running=0,flush_on_unmount,"
                             "backing_timeout=1";
    Mount m(MountOptions{.options = opts, .twin = false, .timeout = milliseconds(120000)});
    if (!m.has_daemon())
        return;
    // The first daemon formatted its cache for the plain directory; the
    // slow disk goes over that directory and the cache starts again.
    REQUIRE(m.unmount() == 0);
    TmpDir::remove_tree(m.cache_dir());
    REQUIRE(::mkdir(m.cache_dir().c_str(), 0700) == 0);
    const std::string backing = m.root() + "/backing";
    SlowDisk disk(m.root() + "/disk.img", backing, 256);
    m.remount();

    const std::string data = random_bytes(24 * MiB, 11);
    write_file(m.mnt("f"), data);                 // fsynced: durable in the cache
    REQUIRE(m.stat("dirty_data") >= data.size()); // premise: nothing written back yet

    disk.throttle_writes(m.daemon_pid(), kRate);
    const auto began = Clock::now();
    const int status = m.unmount();
    const auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - began);
    disk.unthrottle();
    MESSAGE("unmount with the flush took " << took.count() << " ms");
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // Premise: the disk was as slow as asked (else the test shows nothing).
    CHECK(took >= milliseconds(8000));

    // Every byte on the disk (read past the page cache), nothing left dirty.
    CHECK(read_uncached(backing + "/f") == data);
    m.remount();
    CHECK(m.stat("dirty_data") == 0);
    CHECK(m.stat("dirty_files") == 0);
    REQUIRE(m.unmount() == 0);
}
