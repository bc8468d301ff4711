// Commands about one file of a mount: `overcache invalidate PATH...` and the
// control file's `invalidate REL` line drop a file's cached data (the next
// read comes from the backing and is still right), write dirty data back
// first instead of losing it, take names with blanks (%XX-escaped), walk a
// directory, and refuse paths outside a mount or leading out of it.
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

// One line written to the control file: 0 or the write's errno.
int control_write(const Mount& m, const std::string& line) {
    const int fd = ::open(m.mnt(".overcache").c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const ssize_t n = ::write(fd, line.data(), line.size());
    const int err = n < 0 ? errno : 0;
    ::close(fd);
    return err;
}

} // namespace

TEST_SUITE("path_commands") {
    TEST_CASE("invalidate: a file's cached data goes and it still reads right" *
              doctest::timeout(120)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough,sequential_cutoff=0"});
        ::mkdir(m.mnt("d").c_str(), 0755);
        ::mkdir(m.mnt("d/sub").c_str(), 0755);
        const std::string a = random_bytes(2u << 20, 1);
        const std::string b = random_bytes(1u << 20, 2);
        const std::string c = random_bytes(300000, 3);
        write_file(m.root() + "/backing/d/a b%.txt", a); // a blank and a '%'
        write_file(m.root() + "/backing/d/sub/b", b);
        write_file(m.root() + "/backing/top", c);
        CHECK(read_uncached(m.mnt("d/a b%.txt")) == a);
        CHECK(read_uncached(m.mnt("d/sub/b")) == b);
        CHECK(read_uncached(m.mnt("top")) == c);
        m.wait_fills();
        REQUIRE(cached(m.mnt("d/a b%.txt")) == std::to_string(a.size()));
        REQUIRE(cached(m.mnt("top")) == std::to_string(c.size()));

        auto r = cli({"invalidate", m.mnt("d/a b%.txt")});
        CHECK_MESSAGE(r.status == 0, r.out);
        CHECK(cached(m.mnt("d/a b%.txt")) == "0");
        CHECK(cached(m.mnt("d/sub/b")) == std::to_string(b.size()));
        // The next read comes from the backing, and fills again.
        const std::uint64_t misses = m.stat("cache_misses");
        CHECK(read_uncached(m.mnt("d/a b%.txt")) == a);
        CHECK(m.stat("cache_misses") > misses);

        // A directory: every regular file below it; a relative PATH works.
        m.wait_fills();
        auto dir = run_command(
            {"/bin/sh", "-c", "cd '" + m.mnt("d") + "' && '" + overcache_bin() + "' invalidate ."},
            std::chrono::seconds(60));
        CHECK_MESSAGE(dir.status == 0, dir.out);
        CHECK(cached(m.mnt("d/a b%.txt")) == "0");
        CHECK(cached(m.mnt("d/sub/b")) == "0");
        CHECK(cached(m.mnt("top")) == std::to_string(c.size()));
        CHECK(read_file(m.mnt("d/sub/b")) == b);

        // The control file's line, escaped by hand.
        CHECK(control_write(m, "invalidate top\n") == 0);
        CHECK(cached(m.mnt("top")) == "0");
        CHECK(read_file(m.mnt("top")) == c);
    }

    TEST_CASE("invalidate: dirty data is written back first, never lost" * doctest::timeout(120)) {
        require_daemon();
        // Nothing would be written back on its own for an hour.
        Mount m(MountOptions{.options = "cache_mode=writeback,writeback_delay=3600,"
                                        "writeback_running=0,sequential_cutoff=0"});
        const std::string data = random_bytes((1u << 20) + 4321, 7);
        write_file(m.mnt("dirty"), data);
        REQUIRE(fact(m.mnt("dirty"), "user.overcache.dirty_bytes") == std::to_string(data.size()));
        auto r = cli({"invalidate", m.mnt("dirty")});
        CHECK_MESSAGE(r.status == 0, r.out);
        CHECK(cached(m.mnt("dirty")) == "0");
        CHECK(fact(m.mnt("dirty"), "user.overcache.dirty_bytes") == "0");
        CHECK(read_file(m.root() + "/backing/dirty") == data);
        CHECK(read_uncached(m.mnt("dirty")) == data);
        CHECK(m.stat("dirty_data") == 0);
    }

    TEST_CASE("invalidate: refusals, exit codes and messages" * doctest::timeout(120)) {
        require_daemon();
        Mount m(MountOptions{.options = "cache_mode=writethrough"});
        write_file(m.root() + "/backing/f", "bytes");
        // Usage errors: exit 2.
        CHECK(cli({"invalidate"}).status == 2);
        CHECK(cli({"invalidate", "--frob", m.mnt("f")}).status == 2);
        // Not on a mount, or not there: exit 1 with a message.
        auto elsewhere = cli({"invalidate", m.root() + "/backing/f"});
        CHECK(elsewhere.status == 1);
        CHECK(has(elsewhere.out, "not on an overcache mount"));
        auto missing = cli({"invalidate", m.mnt("nope")});
        CHECK(missing.status == 1);
        CHECK(has(missing.out, "nope"));
        // One bad PATH does not stop the others.
        auto mixed = cli({"invalidate", m.mnt("nope"), m.mnt("f")});
        CHECK(mixed.status == 1);
        // The daemon refuses paths that lead out of the mount, and bad escapes.
        CHECK(control_write(m, "invalidate ../backing/f\n") == EINVAL);
        CHECK(control_write(m, "invalidate /etc/passwd\n") == EINVAL);
        CHECK(control_write(m, "invalidate f%2\n") == EINVAL);
        CHECK(control_write(m, "invalidate nope\n") == ENOENT);
        CHECK(has(read_file(m.mnt(".overcache")), "nope"));
        CHECK(control_write(m, "invalidate f\n") == 0);
        CHECK(read_file(m.mnt("f")) == "bytes");
    }
}
