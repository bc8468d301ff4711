// `overcache prefetch PATH...` and the control file's `prefetch REL` line:
// files written straight to the backing end up whole in the cache (a file,
// a directory tree), so reading them then misses nothing; an explicit
// prefetch ignores sequential_cutoff; a file with dirty data keeps it; a
// cache too small fails "full" and the mount goes on; bad paths are named.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

using namespace overcache::test;

namespace {

std::string fact(const std::string& path, const char* key) {
    char buf[64];
    const ssize_t n = ::getxattr(path.c_str(), key, buf, sizeof buf);
    REQUIRE_MESSAGE(n >= 0, path, " ", key, ": ", std::strerror(errno));
    return std::string(buf, static_cast<std::size_t>(n));
}

std::string cached(const std::string& path) {
    return fact(path, "user.overcache.cached_bytes");
}

int control_write(const Mount& m, const std::string& line) {
    const int fd = ::open(m.mnt(".overcache").c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const ssize_t n = ::write(fd, line.data(), line.size());
    const int err = n < 0 ? errno : 0;
    ::close(fd);
    return err;
}

} // namespace

TEST_SUITE("prefetch") {
    TEST_CASE("prefetch: files and a tree are cached whole; reading them misses nothing" *
              doctest::timeout(300)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough"});
        const std::string back = m.root() + "/backing/";
        ::mkdir((back + "d").c_str(), 0755);
        ::mkdir((back + "d/sub").c_str(), 0755);
        const std::string one = random_bytes((3u << 20) + 123, 1);
        const std::string a = random_bytes(1u << 20, 2);
        const std::string b = random_bytes(300000, 3);
        write_file(back + "one", one);
        write_file(back + "d/a b%.txt", a); // a blank and a '%'
        write_file(back + "d/sub/b", b);
        write_file(back + "d/empty", "");

        auto r = cli({"prefetch", m.mnt("one"), m.mnt("d")});
        CHECK_MESSAGE(r.status == 0, r.out);
        CHECK(r.out.empty()); // quiet when not on a terminal
        CHECK(cached(m.mnt("one")) == std::to_string(one.size()));
        CHECK(cached(m.mnt("d/a b%.txt")) == std::to_string(a.size()));
        CHECK(cached(m.mnt("d/sub/b")) == std::to_string(b.size()));
        CHECK(cached(m.mnt("d/empty")) == "0");
        CHECK(m.stat("prefetch_bytes") == one.size() + a.size() + b.size());

        const std::uint64_t misses = m.stat("cache_misses");
        CHECK(read_uncached(m.mnt("one")) == one);
        CHECK(read_uncached(m.mnt("d/a b%.txt")) == a);
        CHECK(read_uncached(m.mnt("d/sub/b")) == b);
        CHECK(m.stat("cache_misses") == misses);

        // Again: all of it is there already, nothing is fetched.
        const std::uint64_t fetched = m.stat("prefetch_bytes");
        CHECK(control_write(m, "prefetch d/a%20b%25.txt\n") == 0);
        CHECK(m.stat("prefetch_bytes") == fetched);

        // Changed behind the mount: the new bytes are fetched, never the old.
        const std::string b2 = random_bytes(300000, 33);
        write_file(back + "d/sub/b", b2);
        CHECK(control_write(m, "prefetch d/sub/b\n") == 0);
        CHECK(cached(m.mnt("d/sub/b")) == std::to_string(b2.size()));
        CHECK(read_uncached(m.mnt("d/sub/b")) == b2);
    }

    TEST_CASE("prefetch: sequential_cutoff and promote_after_hits do not apply" *
              doctest::timeout(300)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough,sequential_cutoff=1M,"
                                        "promote_after_hits=3"});
        const std::string big = random_bytes(16u << 20, 4);
        write_file(m.root() + "/backing/big", big);
        auto r = cli({"prefetch", m.mnt("big")});
        CHECK_MESSAGE(r.status == 0, r.out);
        CHECK(cached(m.mnt("big")) == std::to_string(big.size()));
        const std::uint64_t misses = m.stat("cache_misses");
        CHECK(read_uncached(m.mnt("big")) == big);
        CHECK(m.stat("cache_misses") == misses);
    }

    TEST_CASE("prefetch: a file with dirty data keeps it" * doctest::timeout(300)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writeback,writeback_delay=3600,"
                                        "writeback_running=0,sequential_cutoff=0"});
        std::string data = random_bytes(2u << 20, 5);
        write_file(m.root() + "/backing/f", data);
        const std::string patch = random_bytes(100000, 6);
        {
            const int fd = ::open(m.mnt("f").c_str(), O_WRONLY | O_CLOEXEC);
            REQUIRE(fd >= 0);
            REQUIRE(::pwrite(fd, patch.data(), patch.size(), 700000) ==
                    static_cast<ssize_t>(patch.size()));
            REQUIRE(::close(fd) == 0);
        }
        data.replace(700000, patch.size(), patch);
        const std::string dirty = fact(m.mnt("f"), "user.overcache.dirty_bytes");
        REQUIRE(dirty != "0");

        auto r = cli({"prefetch", m.mnt("f")});
        CHECK_MESSAGE(r.status == 0, r.out);
        CHECK(fact(m.mnt("f"), "user.overcache.dirty_bytes") == dirty);
        CHECK(read_uncached(m.mnt("f")) == data);
        CHECK(read_file(m.root() + "/backing/f") != data); // still not written back
    }

    TEST_CASE("prefetch: a cache too small fails 'full' and the mount goes on" *
              doctest::timeout(300)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough,cache_size=16M"});
        const std::string huge = random_bytes(64u << 20, 8);
        write_file(m.root() + "/backing/huge", huge);
        const std::string small = random_bytes(100000, 9);
        write_file(m.root() + "/backing/small", small);
        auto r = cli({"prefetch", m.mnt("huge"), m.mnt("small")});
        CHECK(r.status == 1);
        CHECK_MESSAGE(has(r.out, "full"), r.out);
        CHECK_MESSAGE(has(r.out, m.mnt("huge")), r.out);
        CHECK_MESSAGE(has(r.out, "fetching"), r.out); // how much was fetched
        CHECK(read_uncached(m.mnt("huge")) == huge);
        CHECK(read_file(m.mnt("small")) == small);
        CHECK(m.stats().at("cache_state") == "running");
    }

    TEST_CASE("prefetch: refusals, exit codes and messages" * doctest::timeout(120)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough"});
        write_file(m.root() + "/backing/f", random_bytes(5000, 10));
        ::mkdir((m.root() + "/backing/dir").c_str(), 0755);
        CHECK(cli({"prefetch"}).status == 2);
        CHECK(cli({"prefetch", "--frob", m.mnt("f")}).status == 2);
        auto help = cli({"prefetch", "--help"});
        CHECK(help.status == 0);
        CHECK(has(help.out, "usage: overcache prefetch PATH..."));
        auto missing = cli({"prefetch", m.mnt("nope"), m.mnt("f")});
        CHECK(missing.status == 1);
        CHECK_MESSAGE(has(missing.out, m.mnt("nope")), missing.out);
        CHECK(cached(m.mnt("f")) == "5000"); // the rest still ran
        auto elsewhere = cli({"prefetch", m.root() + "/backing/f"});
        CHECK(elsewhere.status == 1);
        CHECK_MESSAGE(has(elsewhere.out, "not on an overcache mount"), elsewhere.out);

        CHECK(control_write(m, "prefetch ../backing/f\n") == EINVAL);
        CHECK(control_write(m, "prefetch /etc/passwd\n") == EINVAL);
        CHECK(control_write(m, "prefetch f%2\n") == EINVAL);
        CHECK(control_write(m, "prefetch dir\n") == EINVAL);
        CHECK(control_write(m, "prefetch nope\n") == ENOENT);
        CHECK(control_write(m, "prefetch\n") == EINVAL);
        CHECK(control_write(m, "prefetch f\n") == 0);
    }

    TEST_CASE("prefetch: a mount without a cache, or a path whose mode is none, refuses" *
              doctest::timeout(120)) {
        require_daemon();
        {
            Mount m(MountOptions{.options = "cache_mode=none"});
            write_file(m.root() + "/backing/f", random_bytes(5000, 11));
            auto r = cli({"prefetch", m.mnt("f")});
            CHECK(r.status == 1);
            CHECK_MESSAGE(has(r.out, "no cache"), r.out);
        }
        Mount m(MountOptions{.options = "cache_mode=writethrough"});
        ::mkdir((m.root() + "/backing/nc").c_str(), 0755);
        write_file(m.root() + "/backing/nc/f", random_bytes(5000, 12));
        REQUIRE(::setxattr(m.mnt("nc").c_str(), "user.overcache.mode", "none", 4, 0) == 0);
        auto r = cli({"prefetch", m.mnt("nc/f")});
        CHECK(r.status == 1);
        CHECK_MESSAGE(has(r.out, "none"), r.out);
        CHECK(cached(m.mnt("nc/f")) == "0");
    }
}
