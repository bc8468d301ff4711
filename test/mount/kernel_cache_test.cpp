// cache_mode=writeback with kernel_writeback_cache=1: the kernel holds
// writes in its page cache and hands them to the mount in batches (at fsync,
// close, syncfs, or when it writes back on its own). What the mount still
// guarantees: a write-only open can write part of a page (the kernel reads
// the rest through that handle); the mtime stat showed is the one the file
// keeps after close, and the one the backing gets; `overcache flush` writes
// back what the kernel still held, not only what the mount had seen; an
// fsync survives a kill -9 of the daemon.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <random>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using overcache::test::random_bytes;
using overcache::test::read_file;
using overcache::test::write_file;

using namespace overcache;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;

void pwrite_all(int fd, const std::string& data, std::size_t off) {
    REQUIRE_MESSAGE(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)) ==
                        static_cast<ssize_t>(data.size()),
                    "pwrite: " << std::strerror(errno));
}

void put(std::string& model, std::size_t off, const std::string& data) {
    if (model.size() < off + data.size())
        model.resize(off + data.size(), '\0');
    model.replace(off, data.size(), data);
}

test::MountOptions kernel_cache(const std::string& extra = {}) {
    return test::MountOptions{.options =
                                  "cache_mode=writeback,kernel_writeback_cache=1,cache_size=64M" +
                                  (extra.empty() ? "" : "," + extra),
                              .twin = false};
}

std::int64_t mtime_ns(const struct stat& st) {
    return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

} // namespace

TEST_SUITE("kernel_cache") {
    TEST_CASE("kernel writeback cache: a write-only open writes parts of pages of a file the "
              "mount has not cached; the kernel reads the rest through it" *
              doctest::timeout(120)) {
        test::require_fuse();
        test::Mount m(kernel_cache());
        // On the backing only: the kernel's page reads go to the backing
        // through the write-only handle.
        const std::string raw = m.root() + "/backing/f";
        std::string model = random_bytes(64 * KiB, 1);
        write_file(raw, model);
        const int fd = ::open(m.mnt("f").c_str(), O_WRONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        const std::string a = random_bytes(100, 2), b = random_bytes(5000, 3);
        pwrite_all(fd, a, 10);
        pwrite_all(fd, b, 30 * KiB + 7);
        pwrite_all(fd, a, 64 * KiB + 50); // past the end: a hole of zeros before it
        put(model, 10, a);
        put(model, 30 * KiB + 7, b);
        put(model, 64 * KiB + 50, a);
        CHECK(::fsync(fd) == 0);
        CHECK(::close(fd) == 0);
        CHECK(read_file(m.mnt("f")) == model);
        CHECK(read_file(m.backing("f")) == model);
    }

    TEST_CASE("kernel writeback cache: the mtime stat shows is the file's after close and "
              "the backing's after a flush" *
              doctest::timeout(120)) {
        test::require_fuse();
        test::Mount m(kernel_cache());
        const std::string f = m.mnt("f");
        write_file(f, random_bytes(16 * KiB, 4));
        const int fd = ::open(f.c_str(), O_RDWR | O_CLOEXEC);
        REQUIRE(fd >= 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(20)); // a later mtime
        pwrite_all(fd, random_bytes(3 * KiB, 5), 5 * KiB);
        struct stat before {};
        REQUIRE(::fstat(fd, &before) == 0);
        // The mount receives the bytes after this mtime was taken.
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        CHECK(::close(fd) == 0);
        struct stat after {};
        REQUIRE(::stat(f.c_str(), &after) == 0);
        CHECK(mtime_ns(after) == mtime_ns(before));
        CHECK(after.st_size == 16 * static_cast<off_t>(KiB));
        struct stat back {};
        REQUIRE(::stat(m.backing("f").c_str(), &back) == 0);
        CHECK(mtime_ns(back) == mtime_ns(before));
        // A later mount (the kernel's inode gone) shows the same.
        m.remount();
        REQUIRE(::stat(f.c_str(), &after) == 0);
        CHECK(mtime_ns(after) == mtime_ns(before));
    }

    TEST_CASE("kernel writeback cache: overcache flush writes back what the kernel still held" *
              doctest::timeout(120)) {
        test::require_fuse();
        test::Mount m(kernel_cache());
        const std::string data = random_bytes(MiB + 123, 6);
        const int fd = ::open(m.mnt("f").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        pwrite_all(fd, data, 0);
        // Neither fsync nor close: the bytes may all be in the kernel.
        const auto r = test::run_command({std::getenv("OVERCACHE_BIN"), "flush", m.mountpoint()},
                                         std::chrono::seconds(60));
        CHECK_MESSAGE(r.status == 0, r.out);
        CHECK(read_file(m.root() + "/backing/f") == data);
        CHECK(m.stat("dirty_data") == 0);
        CHECK(::close(fd) == 0);
    }

    TEST_CASE("kernel writeback cache: what fsync returned for survives kill -9 of the daemon" *
              doctest::timeout(120)) {
        test::require_fuse();
        // Nothing written back on its own: after the crash the bytes can
        // only come from the cache.
        test::Mount m(kernel_cache("writeback_running=0"));
        std::string model;
        const int fd = ::open(m.mnt("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        std::mt19937 rng(7);
        for (int i = 0; i < 64; ++i) {
            const std::size_t off = rng() % (2 * MiB);
            const std::string d = random_bytes(4 * KiB, 100 + static_cast<unsigned>(i));
            pwrite_all(fd, d, off);
            put(model, off, d);
        }
        REQUIRE(::fsync(fd) == 0);
        ::close(fd);
        m.kill9();
        m.remount();
        CHECK(read_file(m.mnt("f")) == model);
        CHECK(read_file(m.backing("f")) == model);
    }
}
