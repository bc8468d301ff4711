// Mount tests, names and directories: mkdir/rmdir, unlink, rename (flags),
// link, open files across rename/unlink, readdir, statfs and the control
// file. Each call runs on the mount and on a twin plain directory.
#include "fuse_mount.hpp"
#include "same.hpp"

#include <algorithm>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdio.h>
#include <string>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <vector>

using namespace overcache::test;

namespace {

void make_file(const Mount& m, const std::string& rel, const std::string& data = "x") {
    write_all(m.mnt(rel), data);
    write_all(m.twin(rel), data);
}

void make_dir(const Mount& m, const std::string& rel) {
    REQUIRE(::mkdir(m.mnt(rel).c_str(), 0755) == 0);
    REQUIRE(::mkdir(m.twin(rel).c_str(), 0755) == 0);
}

// Sorted (name, d_type) pairs of a directory, without . and ..
std::vector<std::pair<std::string, int>> listing(const std::string& dir) {
    std::vector<std::pair<std::string, int>> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return out;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..")
            out.emplace_back(n, e->d_type);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

int renameat2_(const char* from, const char* to, unsigned flags) {
    return ::renameat2(AT_FDCWD, from, AT_FDCWD, to, flags);
}

} // namespace

TEST_SUITE("posix_namespace") {

    TEST_CASE("mkdir and rmdir: EEXIST, ENOTEMPTY, ENOTDIR, EISDIR" * doctest::timeout(120)) {
        Mount m;
        ::umask(022);
        SAME(::mkdir(P("d"), 0777));
        same_stat(m, "d");
        SAME(::mkdir(P("d"), 0755));
        SAME(::mkdir(P("d/sub"), 0700));
        same_stat(m, "d"); // nlink 3 now
        same_stat(m, "d/sub");
        SAME(::rmdir(P("d")));
        SAME(::mkdir(P("nope/sub"), 0755));
        make_file(m, "f");
        SAME(::rmdir(P("f")));
        SAME(::mkdir(P("f/sub"), 0755));
        SAME(::rmdir(P("f/sub")));
        SAME(::unlink(P("d")));
        SAME(::rmdir(P("nope")));
        SAME(::rmdir(P("d/sub/.")));
        SAME(::rmdir(P("d/sub")));
        same_stat(m, "d");
        SAME(::rmdir(P("d")));
        SAME(::mkdir(P("sticky"), 01777));
        same_stat(m, "sticky");
        CHECK(tree_diff(m.mountpoint(), m.twin()) == "");
        CHECK(tree_diff(m.mountpoint(), m.backing()) == "");
    }

    TEST_CASE("unlink" * doctest::timeout(120)) {
        Mount m;
        make_file(m, "f");
        SAME(::unlink(P("f")));
        SAME(::unlink(P("f")));
        struct stat st {};
        SAME(::lstat(P("f"), &st));
        make_file(m, "g");
        SAME(::unlink(P("g/x")));
        SAME(::symlink("g", P("l")));
        SAME(::unlink(P("l")));
        same_stat(m, "g");
        CHECK(tree_diff(m.mountpoint(), m.twin()) == "");
    }

    TEST_CASE("rename: files, over existing, directories, NOREPLACE, EXCHANGE" *
              doctest::timeout(120)) {
        Mount m;
        make_file(m, "a", "AAA");
        make_file(m, "b", "BBBB");
        SAME(::rename(P("a"), P("c")));
        SAME(::rename(P("a"), P("c")));
        SAME(::rename(P("c"), P("b"))); // over an existing file
        same_stat(m, "b");
        CHECK(read_all(m.mnt("b")) == "AAA");

        make_dir(m, "d1");
        make_dir(m, "d2");
        make_dir(m, "full");
        make_file(m, "full/x");
        SAME(::rename(P("d1"), P("d2")));   // dir over empty dir
        SAME(::rename(P("d2"), P("full"))); // dir over non-empty dir
        SAME(::rename(P("b"), P("full")));  // file over dir
        SAME(::rename(P("full"), P("b")));  // dir over file
        SAME(::rename(P("full"), P("full/x/y")));
        SAME(::rename(P("full"), P("full/sub"))); // into itself
        SAME(::rename(P("d2"), P("full/d2")));    // move between dirs
        same_stat(m, "full");
        same_stat(m, "full/d2");

        // RENAME_NOREPLACE
        make_file(m, "n1", "1");
        make_file(m, "n2", "2");
        SAME(renameat2_(P("n1"), P("n2"), RENAME_NOREPLACE));
        SAME(renameat2_(P("n1"), P("n3"), RENAME_NOREPLACE));
        same_stat(m, "n3");

        // RENAME_EXCHANGE: file <-> dir, and with a missing side.
        SAME(renameat2_(P("n3"), P("full"), RENAME_EXCHANGE));
        same_stat(m, "n3");
        same_stat(m, "full");
        SAME(renameat2_(P("n2"), P("missing"), RENAME_EXCHANGE));
        SAME(renameat2_(P("n2"), P("full"), RENAME_EXCHANGE | RENAME_NOREPLACE));
        CHECK(read_all(m.mnt("full")) == "1");
        CHECK(tree_diff(m.mountpoint(), m.twin()) == "");
        CHECK(tree_diff(m.mountpoint(), m.backing()) == "");

        // Renaming to the same name, and hard links of the same inode: no-ops.
        SAME(::rename(P("n2"), P("n2")));
        SAME(::link(P("n2"), P("n2link")));
        SAME(::rename(P("n2"), P("n2link")));
        same_stat(m, "n2");
        same_stat(m, "n2link");
        CHECK(tree_diff(m.mountpoint(), m.twin()) == "");
    }

    TEST_CASE("link: nlink counts, EEXIST, EPERM on directories" * doctest::timeout(120)) {
        Mount m;
        make_file(m, "f", "data");
        SAME(::link(P("f"), P("g")));
        same_stat(m, "f");
        same_stat(m, "g");
        SAME(::link(P("f"), P("g")));
        SAME(::link(P("nope"), P("h")));
        make_dir(m, "d");
        SAME(::link(P("d"), P("d2")));
        SAME(::link(P("f"), P("d/h")));
        same_stat(m, "d/h");
        struct stat a {
        }, b{};
        REQUIRE(::stat(m.mnt("f").c_str(), &a) == 0);
        REQUIRE(::stat(m.mnt("d/h").c_str(), &b) == 0);
        CHECK(a.st_ino == b.st_ino);
        CHECK(a.st_nlink == 3);
        SAME(::unlink(P("f")));
        same_stat(m, "g");
        SAME(::rename(P("g"), P("d/g")));
        same_stat(m, "d/h");
        CHECK(read_all(m.mnt("d/h")) == "data");
        // The kernel caches attributes: after unlinks through the mount the
        // count it reports must follow.
        SAME(::unlink(P("d/g")));
        same_stat(m, "d/h");
    }

    TEST_CASE("open files keep working after rename and after unlink of their name" *
              doctest::timeout(120)) {
        Mount m;
        make_dir(m, "d");
        make_file(m, "d/f", "0123456789");
        FdPair f(m, "d/f", O_RDWR);
        REQUIRE(f.ok());
        SAME(::rename(P("d"), P("e")));
        SAME(::rename(P("e/f"), P("g")));
        SAME_FD(f, ::pwrite(fd, "abc", 3, 2));
        char buf[32] = {};
        SAME_FD(f, ::pread(fd, buf, sizeof buf, 0));
        CHECK(std::string(buf) == "01abc56789");
        CHECK(read_all(m.mnt("g")) == "01abc56789");
        struct stat st {};
        SAME_FD(f, ::fstat(fd, &st));
        SAME(::unlink(P("g")));
        SAME_FD(f, ::pwrite(fd, "XYZ", 3, 20));
        SAME_FD(f, ::pread(fd, buf, sizeof buf, 0));
        SAME_FD(f, ::ftruncate(fd, 5));
        struct stat a {
        }, b{};
        REQUIRE(::fstat(f.mnt, &a) == 0);
        REQUIRE(::fstat(f.twin, &b) == 0);
        CHECK(stat_diff(a, b) == "");
        CHECK(a.st_nlink == 0);
        SAME_FD(f, ::fsync(fd));
        // An unlinked directory that is still open: readdir sees nothing.
        make_dir(m, "gone");
        FdPair d(m, "gone", O_RDONLY | O_DIRECTORY);
        REQUIRE(d.ok());
        SAME(::rmdir(P("gone")));
        SAME(::mkdir(P("gone"), 0755)); // a new directory with the old name
        SAME_FD(d, ::openat(fd, "x", O_CREAT | O_WRONLY, 0644));
        CHECK(tree_diff(m.mountpoint(), m.twin()) == "");
    }

    TEST_CASE("readdir: names and d_type, 5000 entries, seekdir" * doctest::timeout(120)) {
        Mount m;
        make_dir(m, "mix");
        make_file(m, "mix/file");
        make_dir(m, "mix/dir");
        SAME(::symlink("file", P("mix/link")));
        SAME(::mkfifo(P("mix/fifo"), 0644));
        SAME(::mknod(P("mix/sock"), S_IFSOCK | 0644, 0));
        CHECK(listing(m.mnt("mix")) == listing(m.twin("mix")));
        CHECK(listing(m.mnt("mix")) == listing(m.backing("mix")));

        make_dir(m, "big");
        for (int i = 0; i < 5000; ++i) {
            std::string n = "big/entry-with-a-longish-name-" + std::to_string(i);
            if (i % 10 == 0) {
                REQUIRE(::mkdir(m.mnt(n).c_str(), 0755) == 0);
                REQUIRE(::mkdir(m.twin(n).c_str(), 0755) == 0);
            } else {
                make_file(m, n, "");
            }
        }
        auto a = listing(m.mnt("big")), b = listing(m.twin("big"));
        CHECK(a.size() == 5000);
        CHECK(a == b);
        same_stat(m, "big");

        // telldir/seekdir resume where they left off.
        DIR* d = ::opendir(m.mnt("big").c_str());
        REQUIRE(d != nullptr);
        std::vector<std::string> first;
        long pos = 0;
        for (int i = 0; i < 2500; ++i) {
            dirent* e = ::readdir(d);
            REQUIRE(e != nullptr);
            if (i == 1200)
                pos = ::telldir(d);
            first.emplace_back(e->d_name);
        }
        ::seekdir(d, pos);
        dirent* e = ::readdir(d);
        REQUIRE(e != nullptr);
        CHECK(std::string(e->d_name) == first[1201]);
        ::rewinddir(d);
        size_t n = 0;
        while (::readdir(d))
            ++n;
        CHECK(n == 5002);
        ::closedir(d);

        // Removing everything leaves an empty, removable directory.
        for (auto& [name, type] : a) {
            std::string rel = "big/" + name;
            if (type == DT_DIR)
                REQUIRE(::rmdir(m.mnt(rel).c_str()) == 0);
            else
                REQUIRE(::unlink(m.mnt(rel).c_str()) == 0);
        }
        CHECK(listing(m.mnt("big")).empty());
        CHECK(::rmdir(m.mnt("big").c_str()) == 0);
    }

    TEST_CASE("statfs matches the backing" * doctest::timeout(120)) {
        Mount m;
        struct statfs a {
        }, b{};
        REQUIRE(::statfs(m.mountpoint().c_str(), &a) == 0);
        REQUIRE(::statfs(m.backing().c_str(), &b) == 0);
        CHECK(a.f_bsize == b.f_bsize);
        CHECK(a.f_blocks == b.f_blocks);
        CHECK(a.f_files == b.f_files);
        CHECK(a.f_namelen == b.f_namelen);
        CHECK(a.f_frsize == b.f_frsize);
        struct statvfs va {
        }, vb{};
        REQUIRE(::statvfs(m.mnt("").c_str(), &va) == 0);
        REQUIRE(::statvfs(m.backing().c_str(), &vb) == 0);
        CHECK(va.f_blocks == vb.f_blocks);
        CHECK(va.f_namemax == vb.f_namemax);
    }

    TEST_CASE("control file .overcache" * doctest::timeout(120)) {
        Mount m;
        if (!m.has_daemon()) {
            MESSAGE("stand-in mount: no control file");
            return;
        }
        const std::string ctl = m.mnt(".overcache");
        struct stat st {};
        REQUIRE(::stat(ctl.c_str(), &st) == 0);
        CHECK(S_ISREG(st.st_mode));
        std::string text = read_all(ctl);
        CHECK(!text.empty());
        // Every line is "key value".
        size_t start = 0, lines = 0;
        while (start < text.size()) {
            size_t end = text.find('\n', start);
            if (end == std::string::npos)
                end = text.size();
            std::string line = text.substr(start, end - start);
            INFO("line: " << line);
            if (!line.empty()) {
                size_t sp = line.find(' ');
                CHECK(sp != std::string::npos);
                CHECK(sp > 0);
                ++lines;
            }
            start = end + 1;
        }
        CHECK(lines > 0);
        for (auto& [name, type] : listing(m.mountpoint()))
            CHECK(name != ".overcache");
        CHECK(::unlink(ctl.c_str()) == -1);
        CHECK(::rename(ctl.c_str(), m.mnt("moved").c_str()) == -1);
        make_file(m, "victim");
        CHECK(::rename(m.mnt("victim").c_str(), ctl.c_str()) == -1);
        // creat() of the existing control file opens it for commands (root
        // may write them); it creates nothing and writes nothing.
        const int fd = ::creat(ctl.c_str(), 0644);
        CHECK(fd >= 0);
        if (fd >= 0)
            ::close(fd);
        CHECK(::open(ctl.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644) == -1);
        CHECK(::mkdir(ctl.c_str(), 0755) == -1);
        CHECK(::link(m.mnt("victim").c_str(), ctl.c_str()) == -1);
        // Nothing leaked onto the backing, and the control file still reads.
        CHECK(::access(m.backing(".overcache").c_str(), F_OK) == -1);
        CHECK(::stat(ctl.c_str(), &st) == 0);
        CHECK(!read_all(ctl).empty());
        // Only the root has one.
        make_dir(m, "sub");
        CHECK(::stat(m.mnt("sub/.overcache").c_str(), &st) == -1);
        CHECK(errno == ENOENT);
    }

} // TEST_SUITE
