// A file-backed cache grows as data is cached, and stops at cache_min_free:
// the cache lives on a small real tmpfs (root only; skipped with a message
// otherwise) whose free space the test takes away, and every read returns
// the backing's bytes whatever the cache could keep. Sizes are st_blocks of
// the data file and statvfs of the tmpfs; fills are waited for on the exact
// fills_pending count.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "small_fs.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

using overcache::test::random_bytes;
using overcache::test::read_uncached;
using overcache::test::write_file;

using namespace overcache;
using test::Mount;
using test::MountOptions;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;

} // namespace

TEST_SUITE("mount") {
    TEST_CASE("the cache data file grows as data is cached and stops at cache_min_free" *
              doctest::timeout(180)) {
        test::require_daemon();
        test::SmallFs fs(96 * MiB);
        if (!fs.ok()) {
            MESSAGE(test::SmallFs::why_not());
            return;
        }
        const std::uint64_t min_free = 32 * MiB;
        const std::string cache = fs / "cache";
        Mount d(MountOptions{.options = "cache=" + cache +
                                        ",cache_size=64M,cache_min_free=32M,sequential_cutoff=0",
                             .twin = false});
        const std::string data_file = cache + "/data";
        constexpr int kFiles = 16;
        std::vector<std::string> want;
        for (int i = 0; i < kFiles; ++i) {
            want.push_back(random_bytes(2 * MiB, static_cast<std::uint64_t>(100 + i)));
            write_file(d.backing("f" + std::to_string(i)), want.back());
        }
        const std::uint64_t at_mount = test::allocated_bytes(data_file);
        MESSAGE("data file at mount: ", at_mount, " bytes allocated of 64 MiB");
        CHECK(at_mount <= 1 * MiB);

        // 8 MiB read: about 8 buckets taken.
        for (int i = 0; i < 4; ++i)
            CHECK(read_uncached(d.mnt("f" + std::to_string(i))) == want[i]);
        d.wait_fills();
        const std::uint64_t grown = test::allocated_bytes(data_file);
        MESSAGE("after reading 8 MiB: ", grown, " bytes allocated");
        CHECK(grown >= at_mount + 6 * MiB);
        CHECK(grown <= at_mount + 10 * MiB);
        CHECK(read_uncached(d.mnt("f0")) == want[0]);
        CHECK(d.stat("cache_hits") > 0);
        // The control file counts whole buckets: the data file's blocks.
        CHECK(d.stat("cache_allocated_bytes") + at_mount >= grown);
        CHECK(d.stat("cache_allocated_bytes") <= grown);

        // Someone else fills the filesystem to 8 MiB above the floor.
        const std::uint64_t room = 8 * MiB;
        {
            const std::uint64_t take = fs.free_bytes() - (min_free + room);
            const int fd = ::open((fs / "filler").c_str(), O_CREAT | O_WRONLY, 0600);
            REQUIRE(fd >= 0);
            REQUIRE(::fallocate(fd, 0, 0, static_cast<off_t>(take)) == 0);
            ::close(fd);
        }
        const std::uint64_t before = test::allocated_bytes(data_file);
        // 24 MiB more read: the cache can take at most `room` of it.
        for (int i = 4; i < kFiles; ++i)
            CHECK(read_uncached(d.mnt("f" + std::to_string(i))) == want[i]);
        d.wait_fills();
        const std::uint64_t after = test::allocated_bytes(data_file);
        MESSAGE("before the second round ", before, " bytes allocated, after ", after,
                "; filesystem free ", fs.free_bytes(), " (floor ", min_free, "); fills skipped ",
                d.stat("fills_skipped_full"), ", buckets given back ",
                d.stat("gc_buckets_given_back"), ", cache_allocated_bytes ",
                d.stat("cache_allocated_bytes"));
        // Slack: the free space is re-read every 4 MiB the file grows, and
        // the index on the same filesystem grows a little too.
        CHECK(fs.free_bytes() + 6 * MiB >= min_free);
        CHECK(after >= before + 2 * MiB);        // it grew up to the floor ...
        CHECK(after <= before + room + 6 * MiB); // ... and no further
        // At the floor, what GC frees goes back to the filesystem.
        CHECK(d.stat("gc_buckets_given_back") > 0);
        // Every byte still reads right, from the cache or the backing.
        for (int i = 0; i < kFiles; ++i)
            CHECK(read_uncached(d.mnt("f" + std::to_string(i))) == want[i]);
        d.wait_fills();
        CHECK(fs.free_bytes() + 6 * MiB >= min_free);
        CHECK(d.stat("cache_read_errors") == 0);
        CHECK(d.unmount() == 0);
    }
}
