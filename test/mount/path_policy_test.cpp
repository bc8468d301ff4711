// Per-path policy (issue #8): user.overcache.{mode,sequential_cutoff,
// promote_after_hits} on files and directories of a real mount. A
// directory's setting reaches what is below it (writeback leaves dirty
// data on a writethrough mount; none leaves nothing cached), survives a
// remount, follows a rename; bad values and names are refused with nothing
// changed; only the owner (or root) sets one; listxattr shows the ones set
// and the backing's own; removexattr returns to inherit.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <string>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <vector>

using namespace overcache::test;

namespace {

const std::string kP = "user.overcache.";

// 0 or the errno of setxattr(path, user.overcache.<name>, v).
int set(const std::string& path, const std::string& name, const std::string& v, int flags = 0) {
    return ::setxattr(path.c_str(), (kP + name).c_str(), v.data(), v.size(), flags) == 0 ? 0
                                                                                         : errno;
}

int remove(const std::string& path, const std::string& name) {
    return ::removexattr(path.c_str(), (kP + name).c_str()) == 0 ? 0 : errno;
}

// The value of an xattr, or "errno:N".
std::string get_full(const std::string& path, const std::string& full) {
    char buf[256];
    const ssize_t n = ::getxattr(path.c_str(), full.c_str(), buf, sizeof buf);
    if (n < 0)
        return "errno:" + std::to_string(errno);
    return std::string(buf, static_cast<std::size_t>(n));
}

std::string get(const std::string& path, const std::string& name) {
    return get_full(path, kP + name);
}

std::string err(int e) {
    return "errno:" + std::to_string(e);
}

std::uint64_t number(const std::string& path, const std::string& name) {
    const std::string v = get(path, name);
    REQUIRE_MESSAGE(v.rfind("errno:", 0) != 0, name << " of " << path << ": " << v);
    return std::stoull(v);
}

std::vector<std::string> list(const std::string& path) {
    std::vector<char> buf(4096);
    const ssize_t n = ::listxattr(path.c_str(), buf.data(), buf.size());
    REQUIRE_MESSAGE(n >= 0, std::strerror(errno));
    std::vector<std::string> out;
    for (std::size_t i = 0; i < static_cast<std::size_t>(n);) {
        out.emplace_back(buf.data() + i);
        i += out.back().size() + 1;
    }
    return out;
}

bool listed(const std::vector<std::string>& names, const std::string& n) {
    for (const auto& x : names)
        if (x == n)
            return true;
    return false;
}

// setxattr as `uid` (its fsuid: the uid FUSE passes on, while the process
// may still use the mount), in a forked child: 0 or the errno.
int set_as(uid_t uid, const std::string& path, const std::string& name, const std::string& v) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        (void)::setfsgid(65534);
        (void)::setfsuid(uid);
        if (static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1))) != uid)
            std::_Exit(200);
        std::_Exit(set(path, name, v));
    }
    int ws = 0;
    REQUIRE(::waitpid(pid, &ws, 0) == pid);
    REQUIRE(WIFEXITED(ws));
    return WEXITSTATUS(ws);
}

} // namespace

TEST_SUITE("path_policy") {
    TEST_CASE("path policy: a writeback directory on a writethrough mount, across a rename and "
              "a remount" *
              doctest::timeout(180)) {
        require_daemon();
        Mount m("cache_mode=writethrough,writeback_delay=3600");
        REQUIRE(::mkdir(m.mnt("wb").c_str(), 0755) == 0);
        REQUIRE(::mkdir(m.mnt("plain").c_str(), 0755) == 0);
        CHECK(get(m.mnt("wb"), "mode") == err(ENODATA));
        CHECK(get(m.mnt("wb"), "effective_mode") == "writethrough");
        REQUIRE(set(m.mnt("wb"), "mode", "writeback") == 0);
        CHECK(get(m.mnt("wb"), "mode") == "writeback");
        CHECK(get(m.mnt("wb"), "effective_mode") == "writeback");

        const std::string data(256 * 1024, 'w');
        write_file(m.mnt("wb/f"), data);
        CHECK(get(m.mnt("wb/f"), "effective_mode") == "writeback");
        CHECK(get(m.mnt("wb/f"), "mode") == err(ENODATA)); // inherited, not set
        CHECK(number(m.mnt("wb/f"), "dirty_bytes") > 0);
        CHECK(get(m.mnt("wb/f"), "state") == "dirty");
        CHECK(read_uncached(m.mnt("wb/f")) == data); // dirty data comes from the cache

        // A sibling tree keeps the mount's mode.
        write_file(m.mnt("plain/g"), data);
        CHECK(get(m.mnt("plain/g"), "effective_mode") == "writethrough");
        CHECK(number(m.mnt("plain/g"), "dirty_bytes") == 0);

        // The setting belongs to the directory, not its name.
        REQUIRE(::rename(m.mnt("wb").c_str(), m.mnt("moved").c_str()) == 0);
        CHECK(get(m.mnt("moved"), "mode") == "writeback");
        write_file(m.mnt("moved/h"), data);
        CHECK(get(m.mnt("moved/h"), "effective_mode") == "writeback");
        CHECK(number(m.mnt("moved/h"), "dirty_bytes") > 0);
        // A file moved out of it takes its new directory's.
        REQUIRE(::rename(m.mnt("moved/h").c_str(), m.mnt("plain/h").c_str()) == 0);
        CHECK(get(m.mnt("plain/h"), "effective_mode") == "writethrough");

        // A dirty file that leaves writeback is still written back (at its
        // next open, at once: no writeback_delay) and reads its dirty bytes
        // from the cache until then.
        REQUIRE(number(m.mnt("moved/f"), "dirty_bytes") > 0);
        REQUIRE(set(m.mnt("moved/f"), "mode", "none") == 0);
        CHECK(get(m.mnt("moved/f"), "effective_mode") == "none");
        CHECK(read_uncached(m.mnt("moved/f")) == data);
        bool written_back = false;
        for (int i = 0; i < 300 && !written_back; ++i) {
            written_back = number(m.mnt("moved/f"), "dirty_bytes") == 0;
            if (!written_back)
                ::usleep(100 * 1000); // writeback's pass is periodic: poll it
        }
        CHECK(written_back);
        CHECK(read_file(m.root() + "/backing/moved/f") == data);
        REQUIRE(remove(m.mnt("moved/f"), "mode") == 0);

        m.remount();
        CHECK(get(m.mnt("moved"), "mode") == "writeback");
        write_file(m.mnt("moved/i"), data);
        CHECK(get(m.mnt("moved/i"), "effective_mode") == "writeback");
        CHECK(number(m.mnt("moved/i"), "dirty_bytes") > 0);
        CHECK(read_uncached(m.mnt("moved/f")) == data);
    }

    TEST_CASE("path policy: mode=none on a directory caches nothing below it" *
              doctest::timeout(120)) {
        require_daemon();
        Mount m("cache_mode=writethrough");
        REQUIRE(::mkdir(m.mnt("none").c_str(), 0755) == 0);
        REQUIRE(::mkdir(m.mnt("hot").c_str(), 0755) == 0);
        REQUIRE(set(m.mnt("none"), "mode", "none") == 0);
        const std::string data(512 * 1024, 'n');
        // Written on the backing, so that only reads can bring it in.
        write_file(m.backing("none/f"), data);
        write_file(m.backing("hot/f"), data);
        CHECK(read_uncached(m.mnt("none/f")) == data);
        CHECK(read_uncached(m.mnt("hot/f")) == data);
        m.wait_fills();
        CHECK(get(m.mnt("none/f"), "effective_mode") == "none");
        CHECK(number(m.mnt("none/f"), "cached_bytes") == 0);
        CHECK(number(m.mnt("hot/f"), "cached_bytes") > 0); // the mount's mode caches
        // A write through the mount under none leaves nothing cached either.
        write_file(m.mnt("none/w"), data);
        CHECK(number(m.mnt("none/w"), "cached_bytes") == 0);
        CHECK(read_uncached(m.mnt("none/w")) == data);
    }

    TEST_CASE("path policy: bad values and names, owners, listing, removal" *
              doctest::timeout(120)) {
        require_daemon();
        Mount m("cache_mode=writethrough,sequential_cutoff=4M");
        REQUIRE(::mkdir(m.mnt("d").c_str(), 0777) == 0);
        write_file(m.mnt("d/f"), "x");
        const std::string d = m.mnt("d");
        const std::string f = m.mnt("d/f");

        REQUIRE(set(d, "mode", "writearound") == 0);
        CHECK(set(d, "mode", "sideways") == EINVAL);
        CHECK(get(d, "mode") == "writearound"); // nothing changed
        CHECK(set(d, "sequential_cutoff", "lots") == EINVAL);
        CHECK(get(d, "sequential_cutoff") == err(ENODATA));
        CHECK(set(d, "promote_after_hits", "-1") == EINVAL);
        CHECK(set(d, "colour", "blue") == EINVAL);
        CHECK(set(d, "effective_mode", "none") == EINVAL);
        CHECK(set(d, "pin", "maybe") == EINVAL); // 0, 1 or inherit (pin_test.cpp)
        CHECK(set(d, "mode", "writeback", XATTR_CREATE) == EEXIST);
        CHECK(set(f, "mode", "writeback", XATTR_REPLACE) == ENODATA);

        // Values as the mount options take them, shown as they show them.
        REQUIRE(set(d, "sequential_cutoff", "8M") == 0);
        CHECK(get(d, "sequential_cutoff") == "8M");
        CHECK(get(f, "effective_sequential_cutoff") == "8M");
        CHECK(get(f, "effective_promote_after_hits") == "1"); // the mount's
        CHECK(get(m.mnt(""), "effective_sequential_cutoff") == "4M");
        REQUIRE(set(f, "promote_after_hits", "3") == 0);
        CHECK(get(f, "effective_promote_after_hits") == "3");
        CHECK(get(f, "effective_mode") == "writearound");

        // Only the owner or root: a world-writable file of root's.
        REQUIRE(::chmod(f.c_str(), 0666) == 0);
        CHECK(set_as(65534, f, "mode", "none") == EPERM);
        CHECK(get(f, "mode") == err(ENODATA));

        // listxattr: the settings set on the file itself, and the backing's
        // own names; no facts, nothing inherited.
        const bool backing_xattrs = ::setxattr(f.c_str(), "user.mine", "v", 1, 0) == 0;
        auto names = list(f);
        CHECK(listed(names, "user.overcache.promote_after_hits"));
        CHECK(!listed(names, "user.overcache.mode"));
        CHECK(!listed(names, "user.overcache.sequential_cutoff"));
        CHECK(!listed(names, "user.overcache.cached_bytes"));
        if (backing_xattrs) {
            CHECK(listed(names, "user.mine"));
            CHECK(get_full(f, "user.mine") == "v");
        }
        names = list(d);
        CHECK(listed(names, "user.overcache.mode"));
        CHECK(listed(names, "user.overcache.sequential_cutoff"));

        // removexattr and `inherit` return to the parent's (here the mount's).
        CHECK(remove(d, "mode") == 0);
        CHECK(remove(d, "mode") == ENODATA);
        CHECK(get(f, "effective_mode") == "writethrough");
        REQUIRE(set(d, "sequential_cutoff", "inherit") == 0);
        CHECK(get(d, "sequential_cutoff") == err(ENODATA));
        CHECK(get(f, "effective_sequential_cutoff") == "4M");
        CHECK(!listed(list(d), "user.overcache.sequential_cutoff"));
        CHECK(remove(f, "pin") == ENODATA); // a setting, not set here
        CHECK(remove(f, "colour") == ENODATA);

        // Settings go with the directory: one made again has none.
        REQUIRE(::mkdir(m.mnt("e").c_str(), 0755) == 0);
        REQUIRE(set(m.mnt("e"), "mode", "none") == 0);
        REQUIRE(::rmdir(m.mnt("e").c_str()) == 0);
        REQUIRE(::mkdir(m.mnt("e").c_str(), 0755) == 0);
        CHECK(get(m.mnt("e"), "mode") == err(ENODATA));
    }
}
