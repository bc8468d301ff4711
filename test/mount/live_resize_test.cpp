// cache_size on a live mount: `overcache set MOUNTPOINT cache_size SIZE`
// (and `set cache_size` on the control file, and its xattr) grows or
// shrinks the mounted cache. A grow keeps more data cached (fewer misses on
// a reread); a shrink keeps the dirty data (byte-identical, and it reaches
// the backing at a flush) and the pinned files (still fully cached), and
// the clean data that fits below the new end (the most recently used
// first, read afterwards without a miss); a shrink the dirty data cannot fit in is refused with
// nothing changed and the reason readable; a bad value changes nothing; the new size is what the
// next mount starts with unless -o cache_size= says otherwise; and `overcache resize` on the
// mounted cache points at `overcache set`.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"

#include <cerrno>
#include <doctest/doctest.h>
#include <string>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <vector>

using namespace overcache::test;

namespace {

constexpr std::size_t kMiB = 1u << 20;

// `overcache get MOUNT cache_size`: the size as the option table shows it.
std::string size_setting(const Mount& m) {
    auto r = cli({"get", m.mountpoint(), "cache_size"});
    REQUIRE_MESSAGE(r.status == 0, r.out);
    std::string v = r.out;
    while (!v.empty() && v.back() == '\n')
        v.pop_back();
    return v;
}

std::uint64_t cached(const std::string& path) {
    char buf[64];
    const ssize_t n = ::getxattr(path.c_str(), "user.overcache.cached_bytes", buf, sizeof buf);
    REQUIRE_MESSAGE(n > 0, path, ": ", std::strerror(errno));
    return std::stoull(std::string(buf, static_cast<std::size_t>(n)));
}

// Writes `n` files of 3 MiB to the backing; returns their names.
std::vector<std::string> backing_files(Mount& m, const std::string& tag, int n) {
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) {
        const std::string name = tag + std::to_string(i);
        write_file(m.root() + "/backing/" + name,
                   random_bytes(3 * kMiB, 1000 + static_cast<std::uint64_t>(i)));
        names.push_back(name);
    }
    return names;
}

// Misses while every file of `names` is read once more (all prefetched
// first, each evicting what it must).
std::uint64_t reread_misses(Mount& m, const std::vector<std::string>& names) {
    for (const auto& n : names)
        (void)cli({"prefetch", m.mnt(n)});
    m.wait_fills();
    const std::uint64_t before = m.stat("cache_misses");
    for (const auto& n : names)
        CHECK(read_uncached(m.mnt(n)).size() == 3 * kMiB);
    m.wait_fills();
    return m.stat("cache_misses") - before;
}

} // namespace

TEST_SUITE("live_resize") {
    TEST_CASE("live resize: a grow keeps more cached; the size persists, -o cache_size= wins; "
              "bad values and the offline command are refused" *
              doctest::timeout(600)) {
        require_daemon();
        TmpDir cache;
        const std::string where = "cache=" + (cache / "c");
        Mount m(where + ",cache_mode=writethrough,cache_size=16M");
        CHECK(m.stat("buckets_total") == 15);
        const auto names = backing_files(m, "f", 8); // 24 MiB: more than 16M holds
        const std::uint64_t small = reread_misses(m, names);
        CHECK(small > 0);

        auto grown = cli({"set", m.mountpoint(), "cache_size", "48M"});
        REQUIRE_MESSAGE(grown.status == 0, grown.out);
        CHECK(m.stat("buckets_total") == 47);
        CHECK(size_setting(m) == "48M");
        CHECK(m.stats()["cache_size"] == std::to_string(48 * kMiB));
        CHECK(m.stat("buckets_free") > 15);
        const std::uint64_t large = reread_misses(m, names);
        CHECK(large < small);
        for (const auto& n : names) // and it is all still there
            CHECK(cached(m.mnt(n)) == 3 * kMiB);

        // Refused, nothing changed: a bad value, a size below 3 buckets'
        // worth of the option's floor, the offline command on a mounted cache.
        auto bad = cli({"set", m.mountpoint(), "cache_size", "lots"});
        CHECK(bad.status == 1);
        auto huge = cli({"set", m.mountpoint(), "cache_size", "1000T"});
        CHECK(huge.status == 1);
        CHECK(has(huge.out, "larger than the filesystem"));
        struct stat data_st {};
        REQUIRE(::stat((cache / "c/data").c_str(), &data_st) == 0);
        CHECK(static_cast<std::uint64_t>(data_st.st_size) == 48 * kMiB); // not extended
        CHECK(m.control("set cache_size 1K\n") == EINVAL);
        CHECK(has(m.stats()["last_error"], "cache_size"));
        CHECK(m.stat("buckets_total") == 47);
        auto offline = cli({"resize", cache / "c", "32M"});
        CHECK(offline.status == 1);
        CHECK(has(offline.out, "in use by a mount"));
        CHECK(has(offline.out, "overcache set MOUNTPOINT cache_size"));
        CHECK(m.stat("buckets_total") == 47);

        // The xattr of the control file is another way in.
        const std::string v = "32M";
        REQUIRE(::setxattr(m.mnt(".overcache").c_str(), "user.overcache.cache_size", v.data(),
                           v.size(), 0) == 0);
        CHECK(m.stat("buckets_total") == 31);
        CHECK(size_setting(m) == "32M");
        struct stat st {};
        REQUIRE(::stat((cache / "c/data").c_str(), &st) == 0);
        CHECK(static_cast<std::uint64_t>(st.st_size) == 32 * kMiB);

        // The superblock keeps it: a mount that does not say stays at 32M;
        // one that does wins.
        m.remount(where + ",cache_mode=writethrough");
        CHECK(m.stat("buckets_total") == 31);
        CHECK(size_setting(m) == "32M");
        m.remount(where + ",cache_mode=writethrough,cache_size=16M");
        CHECK(m.stat("buckets_total") == 15);
        CHECK(size_setting(m) == "16M");
    }

    TEST_CASE("live resize: a shrink keeps dirty and pinned data, and is refused when the dirty "
              "data cannot fit" *
              doctest::timeout(600)) {
        require_daemon();
        TmpDir cache;
        // Writeback paused: what is written stays dirty until we say.
        const std::string opts =
            "cache=" + (cache / "c") + ",cache_mode=writeback,writeback_running=0,cache_size=48M";
        Mount m(opts);
        const std::string back = m.root() + "/backing/";
        // Clean data first, so the dirty and pinned data lands in the
        // buckets past a 16M end.
        const auto clean = backing_files(m, "clean", 6);
        for (const auto& n : clean)
            (void)cli({"prefetch", m.mnt(n)});
        m.wait_fills();
        REQUIRE(::mkdir((back + "p").c_str(), 0755) == 0);
        const std::string pa = random_bytes(2 * kMiB, 7), pb = random_bytes(kMiB + 999, 8);
        write_file(back + "p/a", pa);
        write_file(back + "p/b", pb);
        auto pin = cli({"pin", m.mnt("p")});
        REQUIRE_MESSAGE(pin.status == 0, pin.out);
        REQUIRE(cached(m.mnt("p/a")) == pa.size());
        std::vector<std::string> dirty;
        for (int i = 0; i < 4; ++i) {
            dirty.push_back(random_bytes(kMiB + 4096 * i + 17, 50 + static_cast<std::uint64_t>(i)));
            write_file(m.mnt("d" + std::to_string(i)), dirty.back());
        }
        REQUIRE(m.stat("dirty_data") >= 4 * kMiB);

        // With 12 MiB more dirty data, 16M cannot hold it (the option's
        // floor is 16M): refused, the reason readable, nothing changed.
        for (int i = 0; i < 12; ++i)
            write_file(m.mnt("extra" + std::to_string(i)), random_bytes(kMiB, 90 + i));
        const std::uint64_t dirty_more = m.stat("dirty_data");
        REQUIRE(dirty_more >= 16 * kMiB);
        auto refused = cli({"set", m.mountpoint(), "cache_size", "16M"});
        CHECK(refused.status == 1);
        CHECK(has(refused.out, "dirty data"));
        CHECK(has(m.stats()["last_error"], "dirty data"));
        CHECK(m.control("set cache_size 16M\n") == ENOSPC);
        CHECK(m.stat("buckets_total") == 47);
        CHECK(m.stat("dirty_data") == dirty_more);
        CHECK(size_setting(m) == "48M");
        for (int i = 0; i < 12; ++i) // their dirty extents go with them
            REQUIRE(::unlink(m.mnt("extra" + std::to_string(i)).c_str()) == 0);
        const std::uint64_t dirty_bytes = m.stat("dirty_data");
        CHECK(dirty_bytes < dirty_more);
        const std::uint64_t moved = m.stat("gc_moved_bytes");

        auto shrunk = cli({"set", m.mountpoint(), "cache_size", "16M"});
        REQUIRE_MESSAGE(shrunk.status == 0, shrunk.out);
        CHECK(m.stat("buckets_total") == 15);
        CHECK(size_setting(m) == "16M");
        CHECK(m.stat("dirty_data") == dirty_bytes); // every dirty byte kept
        CHECK(m.stat("gc_moved_bytes") > moved);    // moved below the new end
        CHECK(cached(m.mnt("p/a")) == pa.size());   // pinned: still all there
        CHECK(cached(m.mnt("p/b")) == pb.size());
        const std::uint64_t misses = m.stat("cache_misses");
        CHECK(read_uncached(m.mnt("p/a")) == pa);
        CHECK(read_uncached(m.mnt("p/b")) == pb);
        CHECK(m.stat("cache_misses") == misses); // pinned reads are hits
        for (std::size_t i = 0; i < dirty.size(); ++i)
            CHECK(read_uncached(m.mnt("d" + std::to_string(i))) == dirty[i]);
        for (const auto& n : clean) // what was dropped reads from the backing
            CHECK(read_uncached(m.mnt(n)).size() == 3 * kMiB);

        // Across a remount (no cache_size given), then to the backing.
        m.remount("cache=" + (cache / "c") + ",cache_mode=writeback,writeback_running=0");
        CHECK(m.stat("buckets_total") == 15);
        for (std::size_t i = 0; i < dirty.size(); ++i)
            CHECK(read_uncached(m.mnt("d" + std::to_string(i))) == dirty[i]);
        REQUIRE(m.control("set writeback_running 1\n") == 0);
        auto flushed = cli({"flush", m.mountpoint()});
        REQUIRE_MESSAGE(flushed.status == 0, flushed.out);
        CHECK(m.stat("dirty_data") == 0);
        for (std::size_t i = 0; i < dirty.size(); ++i)
            CHECK(read_file(back + "d" + std::to_string(i)) == dirty[i]);
        // What the shrink left (clean entries past the end) is no damage.
        m.unmount();
        auto fsck = cli({"fsck", cache / "c"});
        CHECK_MESSAGE(fsck.status == 0, fsck.out);
    }

    TEST_CASE("live resize: a shrink keeps the clean data that still fits below the new end" *
              doctest::timeout(600)) {
        require_daemon();
        TmpDir cache;
        Mount m("cache=" + (cache / "c") + ",cache_mode=writethrough,cache_size=48M");
        // Buckets are handed out in order in a new cache: 33 MiB of cold
        // data fills the ones below a 32M end, the hot data lands past it.
        const auto cold = backing_files(m, "cold", 11);
        for (const auto& n : cold)
            REQUIRE(cli({"prefetch", m.mnt(n)}).status == 0);
        std::vector<std::string> hot;
        for (int i = 0; i < 3; ++i) {
            hot.push_back("hot" + std::to_string(i));
            write_file(m.root() + "/backing/" + hot.back(),
                       random_bytes(3 * kMiB, 500 + static_cast<std::uint64_t>(i)));
            REQUIRE(cli({"prefetch", m.mnt(hot.back())}).status == 0);
        }
        m.wait_fills();
        for (const auto& n : hot)
            REQUIRE(cached(m.mnt(n)) == 3 * kMiB);
        // The cold data goes, and a GC pass with a high watermark frees its
        // buckets: room below the end.
        for (const auto& n : cold)
            REQUIRE(cli({"invalidate", m.mnt(n)}).status == 0);
        REQUIRE(m.control("set gc_high_percent 60\n") == 0);
        REQUIRE(m.control("set gc_low_percent 50\n") == 0);
        REQUIRE(cli({"gc", m.mountpoint()}).status == 0);
        REQUIRE(m.control("set gc_low_percent 5\n") == 0);
        REQUIRE(m.control("set gc_high_percent 10\n") == 0);
        REQUIRE(m.stat("buckets_free") >= 20);

        const std::uint64_t moved = m.stat("gc_moved_bytes");
        auto shrunk = cli({"set", m.mountpoint(), "cache_size", "32M"});
        REQUIRE_MESSAGE(shrunk.status == 0, shrunk.out);
        CHECK(m.stat("buckets_total") == 31);
        CHECK(m.stat("gc_moved_bytes") - moved >= 6 * kMiB); // it was past the end
        const std::uint64_t misses = m.stat("cache_misses");
        for (std::size_t i = 0; i < hot.size(); ++i) {
            CHECK(cached(m.mnt(hot[i])) == 3 * kMiB);
            CHECK(read_uncached(m.mnt(hot[i])) == random_bytes(3 * kMiB, 500 + i));
        }
        CHECK(m.stat("cache_misses") == misses); // every hot read a hit
        m.unmount();
        auto fsck = cli({"fsck", cache / "c"});
        CHECK_MESSAGE(fsck.status == 0, fsck.out);
    }
}
