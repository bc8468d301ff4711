// coherency=none and coherency=timeout (fuse/coherency.hpp): names and
// attributes the mount kept answer lookups, stat and listings without the
// backing; a change made behind the mount is seen after `invalidate`
// (none), once the attribute interval passed (timeout, unwatched), or at
// the next question (a watched backing, any mode but none), and a change made
// through the mount at once (a directory changed behind the mount as well
// is then read again: what else changed there is unknown). (Every change through the mount agreeing
// with a twin directory step by step: random_ops' coherency=none case. The default, cto, seeing
// changes at once: stale_read, posix_*.)
#include "file_bytes.hpp"
#include "fuse_mount.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache::test;

namespace {

// The kernel keeps nothing: every lookup and stat reaches the daemon, and
// directories count as settled at once.
constexpr const char* kNoKernelCache =
    "attr_timeout=0,entry_timeout=0,negative_timeout=0,dir_settle=0";

std::string names_of(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = ::opendir(dir.c_str());
    REQUIRE_MESSAGE(d != nullptr, "opendir " << dir);
    while (const dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..")
            names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    std::string out;
    for (const auto& n : names)
        out += (out.empty() ? "" : " ") + n;
    return out;
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    REQUIRE_MESSAGE(::stat(path.c_str(), &st) == 0, "stat " << path);
    return st.st_mode & 07777;
}

off_t size_of(const std::string& path) {
    struct stat st {};
    REQUIRE_MESSAGE(::stat(path.c_str(), &st) == 0, "stat " << path);
    return st.st_size;
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

// d/a and d/b made through the mount, d and the root listed (kept whole,
// with the attributes their readdirplus saw) and d's files looked up. A
// name is answered from the index only under a kept listing of its
// directory: the root's too, for d.
void make_tree(Mount& m) {
    REQUIRE(::mkdir(m.mnt("d").c_str(), 0755) == 0);
    write_file(m.mnt("d/a"), "aaaa");
    write_file(m.mnt("d/b"), "bb");
    REQUIRE(::chmod(m.mnt("d/a").c_str(), 0644) == 0);
    REQUIRE(names_of(m.mnt("d")) == "a b");
    REQUIRE(names_of(m.mountpoint()) == "d");
    REQUIRE(mode_of(m.mnt("d/a")) == 0644);
    REQUIRE(size_of(m.mnt("d/b")) == 2);
    m.settle(); // writeback mode: the backing has them before it is changed behind
    // Seen again once written back: attributes kept before a writeback of
    // ours are not trusted after it (the backing moved on).
    REQUIRE(mode_of(m.mnt("d/a")) == 0644);
    REQUIRE(size_of(m.mnt("d/b")) == 2);
}

} // namespace

TEST_SUITE("coherency") {
    TEST_CASE("coherency=cto: a name made behind the mount, then one through it: a kept "
              "listing shows both" * doctest::timeout(120)) {
        Mount m(kNoKernelCache);
        make_tree(m);
        const std::uint64_t served = m.stat("listings_served");
        CHECK(names_of(m.mnt("d")) == "a b");
        CHECK(m.stat("listings_served") > served); // kept, and served
        write_file(m.backing("d/behind"), "x");
        std::this_thread::sleep_for(std::chrono::milliseconds(20)); // a new mtime, on coarse clocks too
        write_file(m.mnt("d/ours"), "y");
        CHECK(names_of(m.mnt("d")) == "a b behind ours");
        REQUIRE(::unlink(m.backing("d/behind").c_str()) == 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        REQUIRE(::rename(m.mnt("d/ours").c_str(), m.mnt("d/ours2").c_str()) == 0);
        CHECK(names_of(m.mnt("d")) == "a b ours2");
    }

    TEST_CASE("coherency=none: kept names and attributes until a change through the mount or "
              "an invalidate" * doctest::timeout(120)) {
        Mount m(std::string(kNoKernelCache) + ",coherency=none");
        make_tree(m);
        const std::uint64_t kept = m.stat("kept_answers");

        // Behind the mount: a new name, a new mode.
        write_file(m.backing("d/new"), "new");
        REQUIRE(::chmod(m.backing("d/a").c_str(), 0600) == 0);
        CHECK(names_of(m.mnt("d")) == "a b");
        CHECK(mode_of(m.mnt("d/a")) == 0644);
        CHECK_FALSE(exists(m.mnt("d/new")));
        CHECK(m.stat("kept_answers") > kept);

        // invalidate: asked of the backing again.
        REQUIRE(m.control("invalidate d\n") == 0);
        CHECK(names_of(m.mnt("d")) == "a b new");
        CHECK(mode_of(m.mnt("d/a")) == 0600);
        CHECK(exists(m.mnt("d/new")));
        CHECK(read_file(m.mnt("d/new")) == "new");

        // Through the mount: seen at once.
        write_file(m.mnt("d/c"), "c");
        CHECK(names_of(m.mnt("d")) == "a b c new");
        {
            const int fd = ::open(m.mnt("d/b").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
            REQUIRE(fd >= 0);
            CHECK(::write(fd, "more", 4) == 4);
            CHECK(size_of(m.mnt("d/b")) == 6); // while open for writing, too
            ::close(fd);
        }
        CHECK(size_of(m.mnt("d/b")) == 6);
        REQUIRE(::unlink(m.mnt("d/c").c_str()) == 0);
        CHECK_FALSE(exists(m.mnt("d/c")));
        CHECK(names_of(m.mnt("d")) == "a b new");
        // Still trusted after those: a name made behind the mount is not seen.
        write_file(m.backing("d/new2"), "x");
        CHECK(names_of(m.mnt("d")) == "a b new");
        CHECK_FALSE(exists(m.mnt("d/new2")));

        // Extended attributes: d/b's absence of them is kept with its
        // attributes; one set (then removed) through the mount is seen at once.
        {
            const std::string b = m.mnt("d/b");
            char v[16];
            // Written back (writeback mode): the attributes seen while it
            // was dirty (the backing's old size, the cache's overlaid) are
            // no longer the backing's, and are not trusted.
            m.settle();
            CHECK(size_of(b) == 6);
            errno = 0;
            CHECK(::getxattr(b.c_str(), "user.x", v, sizeof v) == -1);
            CHECK(errno == ENODATA);
            if (::setxattr(b.c_str(), "user.x", "1", 1, 0) == 0) {
                CHECK(::getxattr(b.c_str(), "user.x", v, sizeof v) == 1);
                CHECK(::listxattr(b.c_str(), v, sizeof v) > 0);
                REQUIRE(::removexattr(b.c_str(), "user.x") == 0);
                errno = 0;
                CHECK(::getxattr(b.c_str(), "user.x", v, sizeof v) == -1);
                CHECK(errno == ENODATA);
            } else {
                CHECK(errno == ENOTSUP); // a backing without user xattrs
            }
        }

        // The mount's root, as "." names it, is a directory like any.
        REQUIRE(names_of(m.mountpoint()) == "d");
        write_file(m.backing("top"), "top");
        CHECK_FALSE(exists(m.mnt("top")));
        REQUIRE(m.control("invalidate .\n") == 0);
        CHECK(exists(m.mnt("top")));
    }

    TEST_CASE("coherency=cto on a watched backing: kept names and attributes answer, and a "
              "change behind the mount is seen at the next question" *
              doctest::timeout(120)) {
        Mount m(kNoKernelCache);
        REQUIRE(m.stats().at("backing_watch") == "watching");
        make_tree(m);
        // Asked once more: the changes of make_tree() are read by now, and
        // what the backing answers next is vouched for from then on.
        CHECK(read_file(m.mnt("d/a")) == "aaaa");
        CHECK(names_of(m.mnt("d")) == "a b");
        const std::uint64_t kept = m.stat("kept_answers");
        CHECK(mode_of(m.mnt("d/a")) == 0644);
        CHECK(read_file(m.mnt("d/a")) == "aaaa");
        CHECK(size_of(m.mnt("d/b")) == 2);
        CHECK(names_of(m.mnt("d")) == "a b");
        CHECK(m.stat("kept_answers") >= kept + 3); // stat, open, stat (at least)

        // Behind the mount, each seen by the very next question.
        struct stat was {};
        REQUIRE(::stat(m.backing("d/a").c_str(), &was) == 0);
        write_file(m.backing("d/a"), "AAAA");
        // The same size and times: only the ctime tells.
        const struct timespec times[2] = {was.st_atim, was.st_mtim};
        REQUIRE(::utimensat(AT_FDCWD, m.backing("d/a").c_str(), times, 0) == 0);
        CHECK(read_file(m.mnt("d/a")) == "AAAA");
        REQUIRE(::chmod(m.backing("d/a").c_str(), 0600) == 0);
        CHECK(mode_of(m.mnt("d/a")) == 0600);
        REQUIRE(::truncate(m.backing("d/b").c_str(), 1) == 0);
        CHECK(size_of(m.mnt("d/b")) == 1);
        CHECK(read_file(m.mnt("d/b")) == "b");
        write_file(m.backing("d/new"), "new");
        CHECK(names_of(m.mnt("d")) == "a b new");
        CHECK(read_file(m.mnt("d/new")) == "new");
        REQUIRE(::rename(m.backing("d/new").c_str(), m.backing("d/renamed").c_str()) == 0);
        CHECK_FALSE(exists(m.mnt("d/new")));
        CHECK(read_file(m.mnt("d/renamed")) == "new");
        CHECK(names_of(m.mnt("d")) == "a b renamed");
        REQUIRE(::unlink(m.backing("d/b").c_str()) == 0);
        CHECK_FALSE(exists(m.mnt("d/b")));
        CHECK(names_of(m.mnt("d")) == "a renamed");
        CHECK(m.stat("backing_watch_reports") > 0);

        // And answered from what was kept again once asked.
        CHECK(mode_of(m.mnt("d/renamed")) == 0644);
        const std::uint64_t kept2 = m.stat("kept_answers");
        CHECK(mode_of(m.mnt("d/renamed")) == 0644);
        CHECK(m.stat("kept_answers") > kept2);
    }

    TEST_CASE("coherency=cto on a watched backing: a filesystem mounted below its root is "
              "asked every time (its changes are not reported)" *
              doctest::timeout(120)) {
        Mount m(kNoKernelCache);
        REQUIRE(m.stats().at("backing_watch") == "watching");
        const std::string t = m.backing("t");
        REQUIRE(::mkdir(t.c_str(), 0755) == 0);
        REQUIRE_MESSAGE(::mount("tmpfs", t.c_str(), "tmpfs", 0, "size=1m") == 0,
                        "mount tmpfs: " << std::strerror(errno));
        struct Unmount {
            std::string at;
            ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
        } unmount{t};
        write_file(m.backing("t/f"), "one");
        REQUIRE(::mkdir(m.backing("t/s").c_str(), 0755) == 0);
        for (int i = 0; i < 3; ++i) { // seen, kept, and asked of again
            CHECK(names_of(m.mnt("t")) == "f s");
            CHECK(read_file(m.mnt("t/f")) == "one");
            CHECK(mode_of(m.mnt("t/f")) == 0644);
            CHECK(mode_of(m.mnt("t/s")) == 0755);
        }
        // Asked by number, without a lookup of the name (which goes to
        // the backing here: the mount keeps no listing of another filesystem).
        const int s_fd = ::open(m.mnt("t/s").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        REQUIRE(s_fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(s_fd, &st) == 0);
        CHECK((st.st_mode & 07777) == 0755);
        write_file(m.backing("t/f"), "two");
        REQUIRE(::chmod(m.backing("t/f").c_str(), 0600) == 0);
        REQUIRE(::chmod(m.backing("t/s").c_str(), 0700) == 0);
        REQUIRE(::fstat(s_fd, &st) == 0);
        CHECK((st.st_mode & 07777) == 0700);
        ::close(s_fd);
        write_file(m.backing("t/g"), "g");
        CHECK(read_file(m.mnt("t/f")) == "two");
        CHECK(mode_of(m.mnt("t/f")) == 0600);
        CHECK(mode_of(m.mnt("t/s")) == 0700);
        CHECK(names_of(m.mnt("t")) == "f g s");
    }

    TEST_CASE("coherency=cto with watch_backing=off asks the backing every time" *
              doctest::timeout(120)) {
        Mount m(std::string(kNoKernelCache) + ",watch_backing=off");
        CHECK(m.stats().at("backing_watch") == "off");
        make_tree(m);
        CHECK(read_file(m.mnt("d/a")) == "aaaa");
        const std::uint64_t kept = m.stat("kept_answers");
        CHECK(mode_of(m.mnt("d/a")) == 0644);
        CHECK(read_file(m.mnt("d/a")) == "aaaa");
        CHECK(m.stat("kept_answers") == kept);
        // And so sees a change behind the mount at once, unwatched.
        write_file(m.backing("d/a"), "AAAA");
        REQUIRE(::chmod(m.backing("d/b").c_str(), 0600) == 0);
        write_file(m.backing("d/new"), "new");
        CHECK(read_file(m.mnt("d/a")) == "AAAA");
        CHECK(mode_of(m.mnt("d/b")) == 0600);
        CHECK(names_of(m.mnt("d")) == "a b new");
    }

    TEST_CASE("coherency=timeout: a change behind the mount is seen once acregmax or acdirmax "
              "has passed" * doctest::timeout(120)) {
        // Unwatched: a watched backing's changes are seen at once.
        Mount m(std::string(kNoKernelCache) +
                ",coherency=timeout,acregmin=2,acregmax=2,acdirmin=2,acdirmax=2,watch_backing=off");
        make_tree(m);
        const std::uint64_t kept = m.stat("kept_answers");
        CHECK(mode_of(m.mnt("d/a")) == 0644); // within 2 s of being seen
        CHECK(m.stat("kept_answers") > kept);

        write_file(m.backing("d/new"), "new");
        REQUIRE(::chmod(m.backing("d/a").c_str(), 0600) == 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(2300));
        CHECK(mode_of(m.mnt("d/a")) == 0600);
        CHECK(names_of(m.mnt("d")) == "a b new");
        CHECK(read_file(m.mnt("d/new")) == "new");
    }
}
