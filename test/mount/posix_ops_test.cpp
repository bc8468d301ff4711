// Mount tests, file data and attributes: every call runs on the overcache
// mount and on a twin plain directory; results, errno and stat fields must
// agree (see test/support/same.hpp).
#include "fuse_mount.hpp"
#include "same.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <vector>

using namespace overcache::test;

namespace {

std::string pread_all(int fd, size_t len, off_t off) {
    std::string buf(len, '\0');
    size_t done = 0;
    while (done < len) {
        ssize_t n = ::pread(fd, buf.data() + done, len - done, off + static_cast<off_t>(done));
        if (n <= 0)
            break;
        done += static_cast<size_t>(n);
    }
    buf.resize(done);
    return buf;
}

ssize_t pwrite_all(int fd, const std::string& data, off_t off) {
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n =
            ::pwrite(fd, data.data() + done, data.size() - done, off + static_cast<off_t>(done));
        if (n <= 0)
            return n;
        done += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(done);
}

// Both trees' files read back equal, and equal to the backing's.
void same_contents(const Mount& m, const std::string& rel) {
    std::string a = read_all(m.mnt(rel)), b = read_all(m.twin(rel));
    CHECK(a.size() == b.size());
    CHECK(a == b);
    CHECK(read_all(m.backing(rel)) == a);
}

} // namespace

TEST_SUITE("posix_ops") {

    TEST_CASE("missing names: ENOENT, ENOTDIR" * doctest::timeout(120)) {
        Mount m;
        struct stat st {};
        SAME(::lstat(P("nope"), &st));
        SAME(::stat(P("nope/deeper"), &st));
        SAME(::open(P("nope"), O_RDONLY));
        SAME(::open(P("nope/x"), O_RDONLY | O_CREAT, 0644));
        write_all(m.mnt("f"), "x");
        write_all(m.twin("f"), "x");
        SAME(::lstat(P("f/x"), &st));
        SAME(::open(P("f/x"), O_RDONLY | O_CREAT, 0644));
        SAME(::mkdir(P("f/x"), 0755));
        SAME(::open(P("f"), O_RDONLY | O_DIRECTORY));
        same_stat(m, "f");
        same_stat(m, "nope");
    }

    TEST_CASE("create: O_EXCL, O_TRUNC, O_APPEND, mode" * doctest::timeout(120)) {
        Mount m;
        ::umask(022);
        CHECK(SAME(::close(::open(P("a"), O_CREAT | O_EXCL | O_WRONLY, 0640))).ret == 0);
        same_stat(m, "a");
        SAME(::open(P("a"), O_CREAT | O_EXCL | O_WRONLY, 0640));
        // umask applies: 0777 & ~022.
        SAME(::close(::open(P("b"), O_CREAT | O_WRONLY, 0777)));
        same_stat(m, "b");

        write_all(m.mnt("t"), "hello world");
        write_all(m.twin("t"), "hello world");
        {
            FdPair f(m, "t", O_WRONLY | O_TRUNC);
            REQUIRE(f.ok());
            same_stat(m, "t");
        }
        same_contents(m, "t");
        {
            FdPair f(m, "t", O_WRONLY | O_APPEND);
            REQUIRE(f.ok());
            SAME_FD(f, ::write(fd, "abc", 3));
            // O_APPEND ignores the offset of pwrite on Linux.
            SAME_FD(f, ::pwrite(fd, "XY", 2, 0));
            SAME_FD(f, ::write(fd, "def", 3));
            SAME_FD(f, ::lseek(fd, 0, SEEK_CUR));
        }
        same_contents(m, "t");
        CHECK(read_all(m.mnt("t")) == "abcXYdef");
        // Opening for write a read-only file as root works; a directory: EISDIR.
        ::mkdir(m.mnt("d").c_str(), 0755);
        ::mkdir(m.twin("d").c_str(), 0755);
        SAME(::open(P("d"), O_WRONLY));
        SAME(::open(P("d"), O_RDONLY | O_CREAT, 0644));
        SAME(::open(P("d"), O_RDWR | O_TRUNC));
        // O_CREAT of a name whose parent is missing.
        SAME(::open(P("d/missing/x"), O_CREAT | O_WRONLY, 0644));
        // A name too long for the backing.
        std::string longname(300, 'n');
        SAME(::open(P(longname), O_CREAT | O_WRONLY, 0644));
        struct stat st {};
        SAME(::lstat(P(longname), &st));
    }

    TEST_CASE("read and write at offsets, holes, past EOF" * doctest::timeout(120)) {
        Mount m;
        FdPair f(m, "f", O_RDWR | O_CREAT, 0644);
        REQUIRE(f.ok());
        const std::string data = pattern(10000, 1);
        SAME_FD(f, pwrite_all(fd, data, 0));
        SAME_FD(f, pwrite_all(fd, data, 1 << 20)); // leaves a hole 10000..1 MiB
        SAME_FD(f, pwrite_all(fd, "tail", (5 << 20) + 3));
        same_stat(m, "f");
        for (off_t off :
             {off_t{0}, off_t{4095}, off_t{9999}, off_t{10000}, off_t{500000}, off_t{(1 << 20) - 7},
              off_t{(5 << 20)}, off_t{(5 << 20) + 5}, off_t{(6 << 20)}}) {
            INFO("offset " << off);
            std::string a = pread_all(f.mnt, 20000, off), b = pread_all(f.twin, 20000, off);
            CHECK(a.size() == b.size());
            CHECK(a == b);
        }
        // Reads past EOF return 0; the hole reads as zeros.
        char c = 1;
        SAME_FD(f, ::pread(fd, &c, 1, 100 << 20));
        CHECK(pread_all(f.mnt, 100, 20000) == std::string(100, '\0'));
        // Sequential read/write through the file offset.
        SAME_FD(f, ::lseek(fd, 3, SEEK_SET));
        SAME_FD(f, ::write(fd, "0123456789", 10));
        SAME_FD(f, ::lseek(fd, 0, SEEK_CUR));
        SAME_FD(f, ::lseek(fd, -4, SEEK_END));
        SAME_FD(f, ::lseek(fd, -1, SEEK_SET));
        SAME_FD(f, ::fsync(fd));
        same_contents(m, "f");
        // Write on a read-only fd, read on a write-only fd: EBADF.
        FdPair ro(m, "f", O_RDONLY);
        SAME_FD(ro, ::write(fd, "x", 1));
        FdPair wo(m, "f", O_WRONLY);
        SAME_FD(wo, ::read(fd, &c, 1));
    }

    TEST_CASE("8 MiB writes and reads" * doctest::timeout(120)) {
        Mount m;
        const std::string big = pattern(8 << 20, 7);
        {
            FdPair f(m, "big", O_RDWR | O_CREAT | O_TRUNC, 0644);
            REQUIRE(f.ok());
            SAME_FD(f, ::write(fd, big.data(), big.size()));
            SAME_FD(f, ::pwrite(fd, big.data(), big.size(), 3 + (8 << 20)));
            std::string back(big.size(), '\0');
            SAME_FD(f, ::pread(fd, back.data(), back.size(), 0));
            CHECK(back == big);
            SAME_FD(f, ::pread(fd, back.data(), back.size(), 3 + (8 << 20)));
            CHECK(back == big);
        }
        same_stat(m, "big");
        same_contents(m, "big");
    }

    TEST_CASE("truncate and ftruncate, up and down" * doctest::timeout(120)) {
        Mount m;
        const std::string data = pattern(100000, 3);
        write_all(m.mnt("f"), data);
        write_all(m.twin("f"), data);
        SAME(::truncate(P("f"), 5000));
        same_stat(m, "f");
        same_contents(m, "f");
        SAME(::truncate(P("f"), 3 << 20));
        same_stat(m, "f");
        same_contents(m, "f");
        SAME(::truncate(P("f"), 0));
        same_stat(m, "f");
        SAME(::truncate(P("f"), -1));
        SAME(::truncate(P("nope"), 10));
        ::mkdir(m.mnt("d").c_str(), 0755);
        ::mkdir(m.twin("d").c_str(), 0755);
        SAME(::truncate(P("d"), 10));
        {
            FdPair f(m, "f", O_RDWR);
            REQUIRE(f.ok());
            SAME_FD(f, pwrite_all(fd, data, 0));
            SAME_FD(f, ::ftruncate(fd, 77777));
            SAME_FD(f, ::ftruncate(fd, 123456789));
            SAME_FD(f, ::ftruncate(fd, 4097));
            std::string a = pread_all(f.mnt, 10000, 0), b = pread_all(f.twin, 10000, 0);
            CHECK(a == b);
            CHECK(a.size() == 4097);
        }
        same_stat(m, "f");
        same_contents(m, "f");
        FdPair ro(m, "f", O_RDONLY);
        SAME_FD(ro, ::ftruncate(fd, 1));
    }

    TEST_CASE("chmod and chown" * doctest::timeout(120)) {
        Mount m;
        write_all(m.mnt("f"), "x");
        write_all(m.twin("f"), "x");
        SAME(::chmod(P("f"), 04751));
        same_stat(m, "f");
        SAME(::chmod(P("f"), 0));
        same_stat(m, "f");
        SAME(::chown(P("f"), 1234, 5678));
        same_stat(m, "f");
        SAME(::chown(P("f"), static_cast<uid_t>(-1), 42));
        same_stat(m, "f");
        // chown clears setuid/setgid bits of an executable.
        SAME(::chmod(P("f"), 06755));
        SAME(::chown(P("f"), 99, 99));
        same_stat(m, "f");
        SAME(::symlink("f", P("l")));
        SAME(::lchown(P("l"), 7, 8));
        same_stat(m, "l");
        same_stat(m, "f");
        {
            FdPair f(m, "f", O_RDONLY);
            REQUIRE(f.ok());
            SAME_FD(f, ::fchmod(fd, 0640));
            SAME_FD(f, ::fchown(fd, 4321, 1234));
        }
        same_stat(m, "f");
        SAME(::chmod(P("nope"), 0644));
    }

    TEST_CASE("utimensat and futimens: explicit times, UTIME_NOW, UTIME_OMIT" *
              doctest::timeout(120)) {
        Mount m;
        write_all(m.mnt("f"), "x");
        write_all(m.twin("f"), "x");
        const timespec t[2] = {{1000000000, 123456789}, {1200000000, 987654321}};
        SAME(::utimensat(AT_FDCWD, P("f"), t, 0));
        same_stat(m, "f", kStatDefault | kAtime | kMtime);

        const timespec omit_atime[2] = {{0, UTIME_OMIT}, {1300000000, 5}};
        SAME(::utimensat(AT_FDCWD, P("f"), omit_atime, 0));
        same_stat(m, "f", kStatDefault | kAtime | kMtime);

        timespec before{};
        ::clock_gettime(CLOCK_REALTIME, &before);
        const timespec now_mtime[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
        SAME(::utimensat(AT_FDCWD, P("f"), now_mtime, 0));
        struct stat st {};
        REQUIRE(::stat(m.mnt("f").c_str(), &st) == 0);
        CHECK(st.st_atim.tv_sec == 1000000000);
        CHECK(st.st_atim.tv_nsec == 123456789);
        CHECK(st.st_mtim.tv_sec >= before.tv_sec - 1);

        // Symlinks themselves, with AT_SYMLINK_NOFOLLOW.
        SAME(::symlink("f", P("l")));
        SAME(::utimensat(AT_FDCWD, P("l"), t, AT_SYMLINK_NOFOLLOW));
        same_stat(m, "l", kStatDefault | kMtime);

        // On open handles, including a file whose mode forbids writing.
        SAME(::chmod(P("f"), 0444));
        {
            FdPair f(m, "f", O_RDONLY);
            REQUIRE(f.ok());
            const timespec t2[2] = {{1400000000, 1}, {1500000000, 2}};
            SAME_FD(f, ::futimens(fd, t2));
        }
        same_stat(m, "f", kStatDefault | kAtime | kMtime);
        {
            FdPair f(m, "f", O_RDONLY);
            SAME_FD(f, ::futimens(fd, nullptr));
        }
        REQUIRE(::stat(m.mnt("f").c_str(), &st) == 0);
        CHECK(st.st_mtim.tv_sec >= before.tv_sec - 1);
        SAME(::utimensat(AT_FDCWD, P("nope"), t, 0));
    }

    TEST_CASE("chown(-1, -1) still updates ctime, as on Linux filesystems" *
              doctest::timeout(120)) {
        // pjdfstest chown/00.t (its TODO 1054...1144): ext4 bumps ctime on a
        // chown that changes nothing; FUSE sends a SETATTR with no attribute
        // set, and the daemon must still touch the backing inode.
        Mount m;
        write_all(m.mnt("f"), "x");
        write_all(m.twin("f"), "x");
        struct stat a0 {
        }, b0{}, a1{}, b1{};
        REQUIRE(::stat(m.mnt("f").c_str(), &a0) == 0);
        REQUIRE(::stat(m.twin("f").c_str(), &b0) == 0);
        // ctime comes from the kernel's coarse clock: let it tick (not a
        // synchronisation; nothing else is waited for).
        ::usleep(30000);
        SAME(::chown(P("f"), static_cast<uid_t>(-1), static_cast<gid_t>(-1)));
        SAME(::lchown(P("f"), static_cast<uid_t>(-1), static_cast<gid_t>(-1)));
        REQUIRE(::stat(m.mnt("f").c_str(), &a1) == 0);
        REQUIRE(::stat(m.twin("f").c_str(), &b1) == 0);
        const bool twin_moved = stat_diff(b0, b1, kCtime) != "";
        const bool mnt_moved = stat_diff(a0, a1, kCtime) != "";
        CHECK(mnt_moved == twin_moved);
    }

    TEST_CASE("a write updates mtime and ctime; a read keeps the data" * doctest::timeout(120)) {
        Mount m;
        write_all(m.mnt("f"), "x");
        const timespec t[2] = {{1000000000, 0}, {1000000000, 0}};
        REQUIRE(::utimensat(AT_FDCWD, m.mnt("f").c_str(), t, 0) == 0);
        write_all(m.mnt("f"), "more", O_APPEND);
        struct stat st {};
        REQUIRE(::stat(m.mnt("f").c_str(), &st) == 0);
        CHECK(st.st_mtim.tv_sec > 1000000000);
        struct stat bk {};
        REQUIRE(::stat(m.backing("f").c_str(), &bk) == 0);
        CHECK(stat_diff(st, bk, kStatDefault | kMtime) == "");
    }

    TEST_CASE("symlink and readlink" * doctest::timeout(120)) {
        Mount m;
        SAME(::symlink("target/does/not/exist", P("l")));
        same_stat(m, "l");
        char a[256] = {}, b[256] = {};
        CHECK(::readlink(m.mnt("l").c_str(), a, sizeof a) ==
              ::readlink(m.twin("l").c_str(), b, sizeof b));
        CHECK(std::string(a) == std::string(b));
        // Truncated into a small buffer.
        SAME(::readlink(P("l"), a, 3));
        SAME(::symlink("x", P("l")));
        SAME(::readlink(P("nope"), a, sizeof a));
        write_all(m.mnt("f"), "x");
        write_all(m.twin("f"), "x");
        SAME(::readlink(P("f"), a, sizeof a));
        std::string long_target(4000, 'z');
        SAME(::symlink(long_target.c_str(), P("long")));
        same_stat(m, "long");
        SAME(::symlink("f", P("lf")));
        SAME(::open(P("lf"), O_RDONLY | O_NOFOLLOW));
        same_contents(m, "lf");
    }

    TEST_CASE("mknod: FIFO, socket, char device, regular" * doctest::timeout(120)) {
        Mount m;
        SAME(::mknod(P("fifo"), S_IFIFO | 0644, 0));
        SAME(::mknod(P("sock"), S_IFSOCK | 0600, 0));
        SAME(::mknod(P("chr"), S_IFCHR | 0600, makedev(1, 3)));
        SAME(::mknod(P("blk"), S_IFBLK | 0600, makedev(7, 200)));
        SAME(::mknod(P("reg"), S_IFREG | 0600, 0));
        SAME(::mknod(P("fifo"), S_IFIFO | 0644, 0));
        SAME(::mkfifo(P("nope/fifo"), 0644));
        for (const char* n : {"fifo", "sock", "chr", "blk", "reg"})
            same_stat(m, n);
        // A FIFO on the mount is a kernel-local pipe (O_RDWR does not block).
        // Device nodes are not opened: FUSE mounts are nodev unless -o dev.
        FdPair f(m, "fifo", O_RDWR);
        REQUIRE(f.ok());
        SAME_FD(f, ::write(fd, "abc", 3));
        char buf[8] = {};
        SAME_FD(f, ::read(fd, buf, sizeof buf));
    }

    TEST_CASE("fallocate: default, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE" * doctest::timeout(120)) {
        Mount m;
        FdPair f(m, "f", O_RDWR | O_CREAT, 0644);
        REQUIRE(f.ok());
        const std::string data = pattern(1 << 20, 9);
        SAME_FD(f, pwrite_all(fd, data, 0));
        SAME_FD(f, ::fallocate(fd, 0, 0, 4 << 20));
        same_stat(m, "f");
        SAME_FD(f, ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 4 << 20, 2 << 20));
        same_stat(m, "f");
        SAME_FD(f, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 65536));
        SAME_FD(f, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 1000));
        same_stat(m, "f");
        SAME_FD(f, ::fallocate(fd, FALLOC_FL_ZERO_RANGE, 200000, 300000));
        SAME_FD(f, ::fallocate(fd, FALLOC_FL_ZERO_RANGE, (6 << 20) - 10, 100));
        same_stat(m, "f");
        // Punch without KEEP_SIZE is invalid; negative lengths too.
        SAME_FD(f, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096));
        SAME_FD(f, ::fallocate(fd, 0, 0, -1));
        std::string a = pread_all(f.mnt, 7 << 20, 0), b = pread_all(f.twin, 7 << 20, 0);
        CHECK(a.size() == b.size());
        CHECK(a == b);
        FdPair ro(m, "f", O_RDONLY);
        SAME_FD(ro, ::fallocate(fd, 0, 0, 4096));
    }

    TEST_CASE("lseek SEEK_DATA and SEEK_HOLE on a sparse file" * doctest::timeout(120)) {
        Mount m;
        FdPair f(m, "sparse", O_RDWR | O_CREAT, 0644);
        REQUIRE(f.ok());
        const std::string blk = pattern(65536, 2);
        SAME_FD(f, pwrite_all(fd, blk, 1 << 20));
        SAME_FD(f, pwrite_all(fd, blk, 4 << 20));
        SAME_FD(f, ::ftruncate(fd, 8 << 20));
        SAME_FD(f, ::fsync(fd));
        for (off_t off :
             {off_t{0}, off_t{1 << 20}, off_t{(1 << 20) + 100}, off_t{2 << 20},
              off_t{(4 << 20) + 65536}, off_t{(8 << 20) - 1}, off_t{8 << 20}, off_t{9 << 20}}) {
            INFO("offset " << off);
            SAME_FD(f, ::lseek(fd, off, SEEK_DATA));
            SAME_FD(f, ::lseek(fd, off, SEEK_HOLE));
        }
        SAME_FD(f, ::lseek(fd, -1, SEEK_DATA));
    }

    TEST_CASE("copy_file_range within the mount" * doctest::timeout(120)) {
        Mount m;
        const std::string data = pattern(3 << 20, 4);
        write_all(m.mnt("src"), data);
        write_all(m.twin("src"), data);
        FdPair src(m, "src", O_RDONLY);
        FdPair dst(m, "dst", O_RDWR | O_CREAT, 0644);
        REQUIRE(src.ok());
        REQUIRE(dst.ok());
        auto copy = [](int in, int out, loff_t in_off, loff_t out_off, size_t len) {
            return ::copy_file_range(in, &in_off, out, &out_off, len, 0);
        };
        Res a = call([&] { return copy(src.mnt, dst.mnt, 1000, 5000, 2 << 20); });
        Res b = call([&] { return copy(src.twin, dst.twin, 1000, 5000, 2 << 20); });
        CHECK(a == b);
        a = call([&] { return copy(src.mnt, dst.mnt, 3 << 20, 0, 100); });
        b = call([&] { return copy(src.twin, dst.twin, 3 << 20, 0, 100); });
        CHECK(a == b); // at EOF: 0
        // Into a read-only fd: EBADF.
        a = call([&] { return copy(dst.mnt, src.mnt, 0, 0, 100); });
        b = call([&] { return copy(dst.twin, src.twin, 0, 0, 100); });
        CHECK(a == b);
        same_stat(m, "dst");
        same_contents(m, "dst");
    }

    TEST_CASE("mmap: read, MAP_SHARED write, msync, read back" * doctest::timeout(120)) {
        Mount m;
        const size_t len = 256 * 1024;
        const std::string data = pattern(len, 5);
        write_all(m.mnt("f"), data);
        FdPair f(m, "f", O_RDWR);
        REQUIRE(f.mnt >= 0);
        void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, f.mnt, 0);
        REQUIRE(p != MAP_FAILED);
        auto* bytes = static_cast<char*>(p);
        CHECK(std::string(bytes, len) == data);
        const std::string upd = pattern(len, 6);
        std::memcpy(bytes + 1000, upd.data(), 100000);
        CHECK(::msync(p, len, MS_SYNC) == 0);
        std::string expect = data;
        expect.replace(1000, 100000, upd.substr(0, 100000));
        CHECK(pread_all(f.mnt, len, 0) == expect);
        CHECK(::munmap(p, len) == 0);
        CHECK(read_all(m.backing("f")) == expect);

        // A private mapping's writes stay private.
        void* q = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, f.mnt, 0);
        REQUIRE(q != MAP_FAILED);
        static_cast<char*>(q)[0] ^= 0x55;
        CHECK(::munmap(q, len) == 0);
        CHECK(read_all(m.mnt("f")) == expect);

        // A shared writable mapping of a read-only fd: EACCES.
        FdPair ro(m, "f", O_RDONLY);
        errno = 0;
        void* r = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, ro.mnt, 0);
        CHECK(r == MAP_FAILED);
        CHECK(errno == EACCES);
    }

    TEST_CASE("fsync, fdatasync, fsyncdir" * doctest::timeout(120)) {
        Mount m;
        FdPair f(m, "f", O_RDWR | O_CREAT, 0644);
        REQUIRE(f.ok());
        SAME_FD(f, ::write(fd, "abc", 3));
        SAME_FD(f, ::fsync(fd));
        SAME_FD(f, ::fdatasync(fd));
        FdPair d(m, "", O_RDONLY | O_DIRECTORY);
        REQUIRE(d.ok());
        SAME_FD(d, ::fsync(fd));
        SAME_FD(d, ::fdatasync(fd));
        SAME_FD(f, ::syncfs(fd));
    }

} // TEST_SUITE
