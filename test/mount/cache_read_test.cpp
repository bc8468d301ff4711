// The read cache through a real mount: hit after miss, bypass past the
// sequential cutoff, a backing change behind the mount, hits after an
// unmount and after kill -9, a cache smaller than the data, and corrupt bytes
// in the cache file. Stats come from MOUNT/.overcache. Each test mounts its
// own temporary tree (test::Mount), and mounts the same cache again where it
// checks what survives; waits for fills are on the exact fills_pending count,
// and every wait has a deadline.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"

#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

using overcache::test::random_bytes;
using overcache::test::read_uncached;
using overcache::test::write_file;

using namespace overcache;
using test::Mount;
using test::MountOptions;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;

// A mount over a fresh tree with the test defaults' cache (64 MiB) and
// `extra` options.
MountOptions cache_opts(const std::string& extra) {
    return MountOptions{.options = "cache_size=64M" + (extra.empty() ? "" : "," + extra),
                        .twin = false};
}

} // namespace

TEST_SUITE("mount") {
    TEST_CASE("a second read is a hit" * doctest::timeout(120)) {
        test::require_daemon();
        Mount d(cache_opts("sequential_cutoff=0"));
        const auto data = random_bytes(4 * MiB, 1);
        write_file(d.backing("f"), data);
        CHECK(read_uncached(d.mnt("f")) == data);
        CHECK(d.stat("cache_misses") > 0);
        // (The first pass may hit already: a miss fills its whole fill_size
        // chunk, which the next read of the chunk can find.)
        CHECK(d.stat("cache_miss_bytes") > 0);
        d.wait_fills();
        const auto misses = d.stat("cache_misses");
        CHECK(read_uncached(d.mnt("f")) == data);
        CHECK(d.stat("cache_hits") > 0);
        CHECK(d.stat("cache_misses") == misses);
        CHECK(d.stat("cache_hit_bytes") >= 4 * MiB);
        CHECK(d.stat("cache_read_errors") == 0);
    }

    TEST_CASE("a sequential stream past the cutoff bypasses" * doctest::timeout(120)) {
        test::require_daemon();
        Mount d(cache_opts("sequential_cutoff=1M"));
        const auto data = random_bytes(8 * MiB, 2);
        write_file(d.backing("f"), data);
        CHECK(read_uncached(d.mnt("f")) == data);
        CHECK(d.stat("cache_bypass_misses") > 0);
        d.wait_fills();
        CHECK(d.stat("cache_used_bytes") < 4 * MiB); // most of the stream was not cached
        const auto bypass = d.stat("cache_bypass_misses");
        CHECK(read_uncached(d.mnt("f")) == data);
        CHECK(d.stat("cache_hits") > 0);               // the head of the file
        CHECK(d.stat("cache_bypass_misses") > bypass); // the rest, again
    }

    TEST_CASE("a change behind the mount is seen at the next open" * doctest::timeout(120)) {
        test::require_daemon();
        Mount d(cache_opts("sequential_cutoff=0"));
        const auto one = random_bytes(1 * MiB, 3), two = random_bytes(1 * MiB, 4);
        write_file(d.backing("f"), one);
        CHECK(read_uncached(d.mnt("f")) == one);
        d.wait_fills();
        CHECK(read_uncached(d.mnt("f")) == one);
        const auto hits = d.stat("cache_hits");
        CHECK(hits > 0);
        // Same size, same mtime (touch -d): only ctime tells.
        struct stat before {};
        REQUIRE(::stat(d.backing("f").c_str(), &before) == 0);
        write_file(d.backing("f"), two);
        const struct timespec ts[2] = {before.st_atim, before.st_mtim};
        REQUIRE(::utimensat(AT_FDCWD, d.backing("f").c_str(), ts, 0) == 0);
        const auto misses = d.stat("cache_misses");
        CHECK(read_uncached(d.mnt("f")) == two);
        CHECK(d.stat("cache_misses") > misses);
        // A new file under the same name (perhaps the same inode number). The
        // unlink goes through the mount so that the kernel forgets the name
        // (how long it may trust a name is the adapter's business, not the
        // cache's); the new file is made behind the mount.
        struct stat old_st {};
        REQUIRE(::stat(d.backing("f").c_str(), &old_st) == 0);
        REQUIRE(::unlink((d.mnt("f")).c_str()) == 0);
        write_file(d.backing("f"), one);
        struct stat new_st {};
        REQUIRE(::stat(d.backing("f").c_str(), &new_st) == 0);
        const auto got = read_uncached(d.mnt("f"));
        CHECK_MESSAGE(got == one,
                      std::string(got == two ? "read the unlinked file's bytes" : "other bytes")
                          << " size " << got.size()
                          << "; inode reused: " << (old_st.st_ino == new_st.st_ino));
    }

    TEST_CASE("cached data survives an unmount and a kill -9" * doctest::timeout(180)) {
        test::require_daemon();
        Mount d(cache_opts("sequential_cutoff=0"));
        const auto data = random_bytes(2 * MiB, 5);
        write_file(d.backing("f"), data);
        CHECK(read_uncached(d.mnt("f")) == data);
        d.wait_fills();
        REQUIRE(d.stat("fills") > 0);
        REQUIRE(d.stat("fill_errors") == 0);

        d.remount(); // after a clean unmount
        CHECK(read_uncached(d.mnt("f")) == data);
        CHECK(d.stat("cache_hits") > 0);
        CHECK(d.stat("cache_misses") == 0);
        // More data, then kill -9 right after it is cached.
        const auto more = random_bytes(1 * MiB, 6);
        write_file(d.backing("g"), more);
        CHECK(read_uncached(d.mnt("g")) == more);
        d.wait_fills();
        REQUIRE(d.stat("fills") > 0);
        d.kill9();

        d.remount();
        CHECK(read_uncached(d.mnt("f")) == data);
        CHECK(read_uncached(d.mnt("g")) == more);
        CHECK(d.stat("cache_hits") > 0);
        CHECK(d.stat("cache_misses") == 0);
        CHECK(d.stat("cache_read_errors") == 0);
    }

    TEST_CASE("a cache smaller than the data stays within its size" * doctest::timeout(300)) {
        test::require_daemon();
        Mount d(MountOptions{.options = "cache_size=16M,bucket_size=1M,sequential_cutoff=0",
                             .twin = false});
        const auto data = random_bytes(48 * MiB, 7);
        write_file(d.backing("big"), data);
        for (int round = 0; round < 3; ++round) {
            CHECK(read_uncached(d.mnt("big")) == data);
            d.wait_fills();
        }
        CHECK(d.stat("gc_buckets_reclaimed") > 0);
        CHECK(d.stat("cache_used_bytes") <= 16 * MiB);
        CHECK(d.stat("cache_read_errors") == 0);
        struct stat st {};
        REQUIRE(::stat((d.cache_dir() + "/data").c_str(), &st) == 0);
        CHECK(static_cast<std::uint64_t>(st.st_size) == 16 * MiB);
        CHECK(static_cast<std::uint64_t>(st.st_blocks) * 512 <= 16 * MiB);
    }

    TEST_CASE("corrupt bytes in the cache file: the right data, the error counted" *
              doctest::timeout(120)) {
        test::require_daemon();
        Mount d(cache_opts("sequential_cutoff=0"));
        const auto data = random_bytes(2 * MiB, 8);
        write_file(d.backing("f"), data);
        CHECK(read_uncached(d.mnt("f")) == data);
        d.wait_fills();
        {
            // Everything past the header bucket: wherever the extents are.
            int fd = ::open((d.cache_dir() + "/data").c_str(), O_WRONLY);
            REQUIRE(fd >= 0);
            const std::string junk(8 * MiB, '\x5a');
            REQUIRE(::pwrite(fd, junk.data(), junk.size(), 1 * MiB) ==
                    static_cast<ssize_t>(junk.size()));
            ::close(fd);
        }
        CHECK(read_uncached(d.mnt("f")) == data);
        CHECK(d.stat("cache_read_errors") > 0);
    }
}
