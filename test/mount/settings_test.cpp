// Settings of a mounted cache: `overcache get/set`, `set KEY VALUE` lines
// and the control file's user.overcache.KEY xattrs change a setting at
// once, refuse a bad one with nothing changed (and say why), keep a change
// for the next mount (under the options given at mount), refuse users who
// may not command the mount, and a switch away from writeback leaves no
// dirty data.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <doctest/doctest.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>

using namespace overcache::test;

namespace {

// The control file's value of `key` as text.
std::string value(const Mount& m, const std::string& key) {
    const auto all = m.stats();
    const auto it = all.find(key);
    REQUIRE_MESSAGE(it != all.end(), key);
    return it->second;
}

std::string control_path(const Mount& m) {
    return m.mnt(".overcache");
}

// A setxattr on the control file as `uid` (a forked child): its errno, 0
// when it succeeded.
int setxattr_as(uid_t uid, const std::string& path, const std::string& name,
                const std::string& v) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(uid, uid, uid) != 0)
            std::_Exit(200);
        const int rc = ::setxattr(path.c_str(), name.c_str(), v.data(), v.size(), 0);
        std::_Exit(rc == 0 ? 0 : errno);
    }
    int ws = 0;
    REQUIRE(::waitpid(pid, &ws, 0) == pid);
    REQUIRE(WIFEXITED(ws));
    return WEXITSTATUS(ws);
}

} // namespace

TEST_SUITE("settings") {
    TEST_CASE("settings: get and set on a mount, exit codes and messages" * doctest::timeout(120)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough"});
        const std::string mp = m.mountpoint();

        auto all = cli({"get", mp});
        REQUIRE(all.status == 0);
        CHECK(has(all.out, "cache_mode writethrough\n"));
        CHECK(has(all.out, "sequential_cutoff 4M\n"));
        CHECK_FALSE(has(all.out, "cache_hits")); // settings only
        auto one = cli({"get", mp, "sequential-cutoff"});
        CHECK(one.status == 0);
        CHECK(one.out == "4M\n");

        auto set = cli({"set", mp, "sequential_cutoff", "8M"});
        CHECK(set.status == 0);
        CHECK(set.out.empty());
        CHECK(value(m, "sequential_cutoff") == "8M");
        CHECK(cli({"get", mp, "sequential_cutoff"}).out == "8M\n");

        // A bad value: exit 1, the reason, nothing changed.
        auto bad = cli({"set", mp, "sequential_cutoff", "8Q"});
        CHECK(bad.status == 1);
        CHECK(has(bad.out, "unknown suffix"));
        CHECK(value(m, "sequential_cutoff") == "8M");
        CHECK(has(value(m, "last_error"), "unknown suffix"));
        auto gc = cli({"set", mp, "gc_low_percent", "50"});
        CHECK(gc.status == 1);
        CHECK(has(gc.out, "must be below gc_high_percent"));
        CHECK(value(m, "gc_low_percent") == "5");

        // Names: unknown or fixed at mount are usage errors (2), asking nothing.
        auto unknown = cli({"set", mp, "sequential_cutof", "1M"});
        CHECK(unknown.status == 2);
        CHECK(has(unknown.out, "unknown setting 'sequential_cutof'"));
        auto fixed = cli({"set", mp, "bucket_size", "2M"});
        CHECK(fixed.status == 2);
        CHECK(has(fixed.out, "fixed at mount"));
        CHECK(cli({"get", mp, "bucket_size"}).status == 2);
        CHECK(cli({"set", mp, "sequential_cutoff"}).status == 2);
        CHECK(cli({"set", mp, "sequential_cutoff", "1 M"}).status == 2);
        // Not an overcache mount: a failure, not a usage error.
        auto elsewhere = cli({"get", m.root()});
        CHECK(elsewhere.status == 1);
        CHECK(has(elsewhere.out, "not an overcache mount"));

        // The same through a line written to the control file.
        CHECK(m.control("set writeback_percent 40\n") == 0);
        CHECK(value(m, "writeback_percent") == "40");
        CHECK(m.control("set writeback_percent 400\n") == EINVAL);
        CHECK(value(m, "writeback_percent") == "40");
        CHECK(has(value(m, "last_error"), "400 is not in 0..100"));
    }

    TEST_CASE("settings: cache_replacement_policy, live: lru, fifo, random; others refused" *
              doctest::timeout(120)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough"});
        const std::string mp = m.mountpoint();
        CHECK(value(m, "cache_replacement_policy") == "lru"); // the default
        CHECK(cli({"get", mp, "cache_replacement_policy"}).out == "lru\n");

        auto fifo = cli({"set", mp, "cache_replacement_policy", "fifo"});
        CHECK(fifo.status == 0);
        CHECK(fifo.out.empty());
        CHECK(value(m, "cache_replacement_policy") == "fifo");
        CHECK(cli({"get", mp, "cache-replacement-policy"}).out == "fifo\n");
        CHECK(m.control("set cache_replacement_policy random\n") == 0);
        CHECK(value(m, "cache_replacement_policy") == "random");

        // A bad value: refused with the reason, nothing changed.
        auto bad = cli({"set", mp, "cache_replacement_policy", "mru"});
        CHECK(bad.status == 1);
        CHECK(has(bad.out, "is not one of lru, fifo, random"));
        CHECK(value(m, "cache_replacement_policy") == "random");
        CHECK(m.control("set cache_replacement_policy LRU\n") == EINVAL);
        CHECK(value(m, "cache_replacement_policy") == "random");
        CHECK(has(value(m, "last_error"), "'LRU' is not one of lru, fifo, random"));

        // The control file lists it with the other settings, after cache_mode.
        auto all = cli({"get", mp});
        REQUIRE(all.status == 0);
        CHECK(has(all.out, "cache_mode writethrough\ncache_replacement_policy random\n"));
    }

    TEST_CASE("settings: a change takes effect at once (sequential_cutoff)" * doctest::timeout(120)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough,sequential_cutoff=0"});
        write_file(m.root() + "/backing/a", random_bytes(8 << 20, 1));
        write_file(m.root() + "/backing/b", random_bytes(8 << 20, 2));
        // No cutoff: a whole sequential read is cached, nothing bypasses.
        CHECK(read_uncached(m.mnt("a")).size() == 8u << 20);
        CHECK(m.stat("cache_bypass_misses") == 0);
        REQUIRE(cli({"set", m.mountpoint(), "sequential_cutoff", "1M"}).status == 0);
        CHECK(read_uncached(m.mnt("b")).size() == 8u << 20);
        CHECK(m.stat("cache_bypass_misses") > 0);
    }

    TEST_CASE("settings: fill_size changes live: new misses fill in the new size, what is "
              "cached stays" *
              doctest::timeout(180)) {
        require_daemon();
        const std::string opts = "cache_mode=writethrough,sequential_cutoff=0,bucket_size=256K";
        Mount m(MountOptions{.options = opts + ",fill_size=256K"});
        const std::string a = random_bytes(2u << 20, 11);
        const std::string b = random_bytes(2u << 20, 12);
        write_file(m.root() + "/backing/a", a);
        write_file(m.root() + "/backing/b", b);
        auto extents = [&](const std::string& name) {
            char buf[32];
            const ssize_t n =
                ::getxattr(m.mnt(name).c_str(), "user.overcache.extents", buf, sizeof buf);
            REQUIRE(n > 0);
            return std::stoul(std::string(buf, static_cast<std::size_t>(n)));
        };
        REQUIRE(read_uncached(m.mnt("a")) == a);
        m.wait_fills();
        CHECK(extents("a") == 8); // 2 MiB in 256K chunks

        REQUIRE(cli({"set", m.mountpoint(), "fill_size", "64K"}).status == 0);
        CHECK(cli({"get", m.mountpoint(), "fill_size"}).out == "64K\n");
        REQUIRE(read_uncached(m.mnt("b")) == b);
        m.wait_fills();
        CHECK(extents("b") == 32); // the next misses use the new size
        // What was cached in the old size is still served, all hits.
        const auto misses = m.stat("cache_misses");
        CHECK(read_uncached(m.mnt("a")) == a);
        CHECK(m.stat("cache_misses") == misses);
        CHECK(extents("a") == 8);

        // Larger than the cache's buckets: refused, said, nothing changed.
        auto big = cli({"set", m.mountpoint(), "fill_size", "512K"});
        CHECK(big.status == 1);
        CHECK(has(big.out, "fill_size must not exceed bucket_size"));
        CHECK(cli({"get", m.mountpoint(), "fill_size"}).out == "64K\n");
        CHECK(cli({"set", m.mountpoint(), "fill_size", "96K"}).status == 1); // not a power of two
        CHECK(cli({"get", m.mountpoint(), "fill_size"}).out == "64K\n");

        // Kept for the next mount, like any other setting.
        m.remount(opts);
        CHECK(cli({"get", m.mountpoint(), "fill_size"}).out == "64K\n");

        // Sizes changing under concurrent misses: every byte read is right,
        // whichever chunk size filled it.
        const std::string c = random_bytes(8u << 20, 13);
        write_file(m.root() + "/backing/c", c);
        std::atomic<bool> done{false};
        std::thread flipper([&] {
            const char* sizes[] = {"4K", "256K", "16K", "128K", "64K"};
            for (int i = 0; !done.load(); ++i) {
                (void)cli({"set", m.mountpoint(), "fill_size", sizes[i % 5]});
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
        });
        for (int pass = 0; pass < 3; ++pass) {
            CHECK(read_uncached(m.mnt("c"), 48 * 1024) == c);
            CHECK(m.control("invalidate c\n") == 0);
        }
        done.store(true);
        flipper.join();
        m.wait_fills();
        CHECK(read_uncached(m.mnt("c")) == c);
    }

    TEST_CASE("settings: promote_after_hits=2 keeps a one-off scan from evicting the hot set" *
              doctest::timeout(180)) {
        require_daemon();
        // A cache of 16 MiB; the scan is four times that.
        Mount m(MountOptions{.options = "cache_mode=writethrough,cache_size=16M,bucket_size=64K,"
                                        "fill_size=64K,sequential_cutoff=0"});
        REQUIRE(cli({"set", m.mountpoint(), "promote_after_hits", "2"}).status == 0);
        std::vector<std::string> hot;
        for (int i = 0; i < 4; ++i) {
            hot.push_back(random_bytes(1u << 20, 100 + i));
            write_file(m.root() + "/backing/hot" + std::to_string(i), hot.back());
        }
        write_file(m.root() + "/backing/scan", random_bytes(64u << 20, 200));
        auto read_hot = [&] {
            for (int i = 0; i < 4; ++i)
                REQUIRE(read_uncached(m.mnt("hot" + std::to_string(i))) == hot[i]);
            m.wait_fills();
        };
        read_hot(); // first misses: counted, not cached
        CHECK(m.stat("fills_skipped_unpromoted") > 0);
        CHECK(m.stat("fills") == 0);
        read_hot(); // second misses: cached
        CHECK(m.stat("fills") > 0);
        const auto misses = m.stat("cache_misses");
        read_hot();
        CHECK(m.stat("cache_misses") == misses); // all hits now

        const auto skipped = m.stat("fills_skipped_unpromoted");
        const auto fills = m.stat("fills");
        CHECK(read_uncached(m.mnt("scan")).size() == 64u << 20);
        m.wait_fills();
        CHECK(m.stat("fills_skipped_unpromoted") > skipped);
        CHECK(m.stat("fills") == fills); // nothing of the scan was cached...
        const auto after_scan = m.stat("cache_misses");
        CHECK(after_scan > misses);
        read_hot();
        CHECK(m.stat("cache_misses") == after_scan); // ...and the hot set is all hits
    }

    TEST_CASE("settings: a change is kept for the next mount; options given at mount win" *
              doctest::timeout(120)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough"});
        REQUIRE(cli({"set", m.mountpoint(), "sequential_cutoff", "16M"}).status == 0);
        REQUIRE(cli({"set", m.mountpoint(), "writeback_delay", "2.5"}).status == 0);
        m.remount();
        CHECK(value(m, "sequential_cutoff") == "16M");
        CHECK(value(m, "writeback_delay") == "2.5");

        // Given at mount: the option wins for this mount; the stored value
        // is still there for a mount without it.
        m.remount("cache_mode=writethrough,sequential_cutoff=2M");
        CHECK(value(m, "sequential_cutoff") == "2M");
        CHECK(value(m, "writeback_delay") == "2.5");
        m.remount("cache_mode=writethrough");
        CHECK(value(m, "sequential_cutoff") == "16M");
    }

    TEST_CASE("settings: the control file's xattrs" * doctest::timeout(120)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough"});
        const std::string ctl = control_path(m);
        // Listed: the settings, under user.overcache.
        std::string list(4096, '\0');
        const ssize_t n = ::listxattr(ctl.c_str(), list.data(), list.size());
        REQUIRE(n > 0);
        list.resize(static_cast<std::size_t>(n));
        CHECK(has(list, std::string("user.overcache.cache_mode\0", 26)));
        CHECK(has(list, std::string("user.overcache.writeback_percent\0", 33)));
        CHECK_FALSE(has(list, "cache_hits"));
        // Read: any key of the control file.
        char buf[64] = {};
        ssize_t got = ::getxattr(ctl.c_str(), "user.overcache.cache_mode", buf, sizeof buf);
        CHECK(std::string(buf, got > 0 ? static_cast<std::size_t>(got) : 0) == "writethrough");
        CHECK(::getxattr(ctl.c_str(), "user.overcache.cache_hits", buf, sizeof buf) > 0);
        CHECK(::getxattr(ctl.c_str(), "user.overcache.no_such", buf, sizeof buf) == -1);
        CHECK(errno == ENODATA);
        // Set: a live setting; a bad value or name is EINVAL and changes nothing.
        CHECK(::setxattr(ctl.c_str(), "user.overcache.writeback_percent", "25", 2, 0) == 0);
        CHECK(value(m, "writeback_percent") == "25");
        CHECK(::setxattr(ctl.c_str(), "user.overcache.writeback_percent", "250", 3, 0) == -1);
        CHECK(errno == EINVAL);
        CHECK(value(m, "writeback_percent") == "25");
        CHECK(has(value(m, "last_error"), "250"));
        CHECK(::setxattr(ctl.c_str(), "user.overcache.bucket_size", "2M", 2, 0) == -1);
        CHECK(errno == EINVAL);
        CHECK(::setxattr(ctl.c_str(), "user.overcache.no_such", "1", 1, 0) == -1);
        CHECK(errno == EINVAL);
        CHECK(::setxattr(ctl.c_str(), "user.other", "1", 1, 0) == -1);
        CHECK(::removexattr(ctl.c_str(), "user.overcache.writeback_percent") == -1);
        CHECK(errno == EPERM);
        // Only root (or the mount's owner) commands the mount.
        const int err = setxattr_as(65534, ctl, "user.overcache.writeback_percent", "30");
        CHECK((err == EACCES || err == EPERM));
        CHECK(value(m, "writeback_percent") == "25");
        // getfattr -d shows them.
        auto dump = run_command({"getfattr", "-d", "-m", "user.overcache.", ctl},
                                std::chrono::seconds(20));
        REQUIRE_MESSAGE(dump.status == 0, dump.out);
        CHECK(has(dump.out, "user.overcache.writeback_percent=\"25\""));
    }

    TEST_CASE("settings: leaving writeback writes the dirty data back first" *
              doctest::timeout(180)) {
        require_daemon();
        // Nothing would be written back on its own for an hour.
        Mount m(MountOptions{.options = "cache_mode=writeback,writeback_delay=3600,writeback_running=0"});
        std::vector<std::string> data;
        for (int i = 0; i < 4; ++i) {
            data.push_back(random_bytes((1u << 20) + 1234u * static_cast<unsigned>(i), 10 + i));
            write_file(m.mnt("f" + std::to_string(i)), data.back());
        }
        REQUIRE(m.stat("dirty_data") > 0);
        auto r = cli({"set", m.mountpoint(), "cache_mode", "writethrough"});
        REQUIRE_MESSAGE(r.status == 0, r.out);
        CHECK(m.stat("dirty_data") == 0);
        CHECK(value(m, "cache_mode") == "writethrough");
        for (int i = 0; i < 4; ++i)
            CHECK(read_file(m.root() + "/backing/f" + std::to_string(i)) == data[i]);
        // Writes now go through to the backing at once.
        write_file(m.mnt("g"), "through");
        CHECK(m.stat("dirty_data") == 0);
        CHECK(read_file(m.root() + "/backing/g") == "through");
        // And back to writeback: writes stay in the cache again.
        REQUIRE(cli({"set", m.mountpoint(), "cache_mode", "writeback"}).status == 0);
        write_file(m.mnt("h"), "later");
        CHECK(m.stat("dirty_data") > 0);
    }

    TEST_CASE("facts: a file's cached and dirty bytes, as xattrs and overcache status" *
              doctest::timeout(120)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writeback,writeback_delay=3600,"
                                        "writeback_running=0,sequential_cutoff=0"});
        auto fact = [](const std::string& path, const char* key) {
            char buf[64];
            const ssize_t n = ::getxattr(path.c_str(), key, buf, sizeof buf);
            REQUIRE_MESSAGE(n >= 0, path, " ", key, ": ", std::strerror(errno));
            return std::string(buf, static_cast<std::size_t>(n));
        };
        ::mkdir(m.mnt("d").c_str(), 0755);
        write_file(m.mnt("d/new"), random_bytes(1u << 20, 5)); // dirty, nothing written back
        write_file(m.root() + "/backing/d/old", random_bytes(2u << 20, 6));
        CHECK(read_uncached(m.mnt("d/old")).size() == 2u << 20);
        m.wait_fills();

        CHECK(fact(m.mnt("d/new"), "user.overcache.dirty_bytes") == std::to_string(1u << 20));
        CHECK(fact(m.mnt("d/new"), "user.overcache.cached_bytes") == std::to_string(1u << 20));
        CHECK(fact(m.mnt("d/new"), "user.overcache.state") == "dirty");
        CHECK(fact(m.mnt("d/old"), "user.overcache.cached_bytes") == std::to_string(2u << 20));
        CHECK(fact(m.mnt("d/old"), "user.overcache.dirty_bytes") == "0");
        CHECK(fact(m.mnt("d/old"), "user.overcache.state") == "clean");
        CHECK(std::stoul(fact(m.mnt("d/old"), "user.overcache.extents")) > 0);
        // Not listed (nothing is set), not on directories, not settable.
        char list[256];
        const ssize_t ln = ::listxattr(m.mnt("d/old").c_str(), list, sizeof list);
        CHECK_FALSE(has(std::string(list, ln > 0 ? static_cast<std::size_t>(ln) : 0),
                        "user.overcache."));
        char buf[16];
        CHECK(::getxattr(m.mnt("d").c_str(), "user.overcache.cached_bytes", buf, sizeof buf) ==
              -1);
        CHECK(errno == ENODATA);
        CHECK(::setxattr(m.mnt("d/old").c_str(), "user.overcache.cached_bytes", "0", 1, 0) == -1);

        auto one = cli({"status", m.mnt("d/old"), m.mnt("d/new")});
        CHECK(one.status == 0);
        CHECK(has(one.out, "CACHED"));
        CHECK(has(one.out, "2.0 MiB"));
        CHECK(has(one.out, m.mnt("d/new")));
        auto dir = cli({"status", m.mountpoint()});
        CHECK(dir.status == 0);
        CHECK(has(dir.out, "(2 files)"));
        // Not an overcache mount: said, exit 1.
        auto elsewhere = cli({"status", m.root() + "/backing/d/old"});
        CHECK(elsewhere.status == 1);
        CHECK(has(elsewhere.out, "not on an overcache mount"));
        CHECK(cli({"status"}).status == 2);

        // Written back: nothing dirty any more, still cached.
        m.settle();
        CHECK(fact(m.mnt("d/new"), "user.overcache.dirty_bytes") == "0");
        CHECK(fact(m.mnt("d/new"), "user.overcache.state") == "clean");
    }

    TEST_CASE("settings: a mount without a cache cannot start caching" * doctest::timeout(60)) {
        require_daemon();
        TmpDir none_cache;
        Mount m(MountOptions{.options = "cache_mode=none,cache=" + none_cache.path() + "/absent"});
        auto r = cli({"set", m.mountpoint(), "cache_mode", "writeback"});
        CHECK(r.status == 1);
        CHECK(has(r.out, "has no cache"));
        CHECK(value(m, "cache_mode") == "none");
        // What it does read live still changes.
        CHECK(cli({"set", m.mountpoint(), "attr_timeout", "0.5"}).status == 0);
        CHECK(value(m, "attr_timeout") == "0.5");
    }
}
