// Parked writes through a real mount (issue #7 item 6): writers fill a small
// writeback cache whose dirty data nothing writes back on its own, so
// further writes wait (parked in the daemon: the FUSE handler returned
// without replying, the answer comes later from another thread) and after
// writeback_wait_max go around the cache to the backing. Every write
// completes, every byte reads back right through the mount and, after a
// flush, from the backing; .overcache counts the waits. Once a flush has
// cleaned the cache, waiting writes go into it again.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"

#include <cerrno>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <random>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

using overcache::test::random_bytes;

using namespace overcache;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;
constexpr std::size_t kWrite = 256 * KiB;

// Writes `data` to `path` in kWrite pieces; the first error, or 0.
int write_pieces(const std::string& path, const std::string& data) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno;
    int err = 0;
    for (std::size_t at = 0; at < data.size() && err == 0; at += kWrite) {
        const std::size_t n = std::min(kWrite, data.size() - at);
        const ssize_t w = ::pwrite(fd, data.data() + at, n, static_cast<off_t>(at));
        if (w != static_cast<ssize_t>(n))
            err = w < 0 ? errno : EIO;
    }
    if (::close(fd) != 0 && err == 0)
        err = errno;
    return err;
}

// The file's bytes as the mount serves them now, not from the kernel's
// page cache (which may hold what the writer wrote).
std::string read_all(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE_MESSAGE(fd >= 0, path << ": " << std::strerror(errno));
    REQUIRE(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    std::string s(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    while (got < s.size()) {
        const ssize_t n = ::pread(fd, s.data() + got, s.size() - got, static_cast<off_t>(got));
        REQUIRE_MESSAGE(n > 0, path << ": " << (n < 0 ? std::strerror(errno) : "short read"));
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return s;
}

// `writers` threads, each writing its own file of `bytes` through the mount.
std::vector<std::string> write_files(const test::Mount& m, const std::string& prefix,
                                     unsigned writers, std::size_t bytes, unsigned seed) {
    std::vector<std::string> data;
    for (unsigned i = 0; i < writers; ++i)
        data.push_back(random_bytes(bytes, seed + i));
    std::vector<int> errs(writers, 0);
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < writers; ++i)
        ts.emplace_back([&, i] {
            errs[i] = write_pieces(m.mnt(prefix + std::to_string(i)), data[i]);
        });
    for (auto& t : ts)
        t.join();
    for (unsigned i = 0; i < writers; ++i)
        CHECK_MESSAGE(errs[i] == 0, prefix << i << ": " << std::strerror(errs[i]));
    return data;
}

} // namespace

TEST_SUITE("parked_writes") {
    TEST_CASE("parked writes: with the cache full of dirty data that is not written back yet, "
              "writes wait writeback_wait_max, then go around the cache; every byte is right") {
        test::require_daemon();
        // 15 buckets of 1M. Writeback runs but writes nothing on its own:
        // no dirty extent gets old enough, and dirty data never passes its
        // share. So nothing frees room until the flush below.
        test::Mount m("cache_mode=writeback,cache_size=16M,bucket_size=1M,writeback_delay=3600,"
                      "writeback_percent=100,writeback_wait_max=0.2");
        const auto data = write_files(m, "a", 4, 6 * MiB, 1);
        CHECK(m.stat("foreground_waits") > 0);
        CHECK(m.stat("foreground_waits_around") > 0);
        CHECK(m.stat("foreground_waiting") == 0);
        CHECK(m.stat("foreground_wait_max_ms") >= 200);
        CHECK(m.stat("writes_around") >= m.stat("foreground_waits_around"));
        CHECK(m.stat("writes_dirty") > 0);
        for (unsigned i = 0; i < 4; ++i)
            CHECK_MESSAGE(read_all(m.mnt("a" + std::to_string(i))) == data[i], "a" << i);

        // The flush cleans every bucket; GC may now reclaim them, and a
        // waiting write asks it to: new writes go into the cache again.
        m.settle();
        const std::uint64_t dirty_before = m.stat("writes_dirty");
        const auto more = write_files(m, "b", 2, 4 * MiB, 11);
        CHECK(m.stat("writes_dirty") > dirty_before);
        CHECK(m.stat("foreground_waiting") == 0);
        for (unsigned i = 0; i < 2; ++i)
            CHECK_MESSAGE(read_all(m.mnt("b" + std::to_string(i))) == more[i], "b" << i);

        for (unsigned i = 0; i < 4; ++i)
            CHECK_MESSAGE(read_all(m.backing("a" + std::to_string(i))) == data[i], "a" << i);
        for (unsigned i = 0; i < 2; ++i)
            CHECK_MESSAGE(read_all(m.backing("b" + std::to_string(i))) == more[i], "b" << i);
        CHECK(m.stat("dirty_data") == 0);
    }

    TEST_CASE("parked writes: with writeback paused and every bucket dirty, writes go around "
              "the cache at once (nothing could make room); every byte is right") {
        test::require_daemon();
        test::Mount m("cache_mode=writeback,cache_size=16M,bucket_size=1M,writeback_running=0,"
                      "writeback_wait_max=0.2");
        const auto data = write_files(m, "a", 2, 12 * MiB, 21);
        CHECK(m.stat("writes_around") > 0);
        CHECK(m.stat("foreground_waits") == 0);
        for (unsigned i = 0; i < 2; ++i)
            CHECK_MESSAGE(read_all(m.mnt("a" + std::to_string(i))) == data[i], "a" << i);
        for (unsigned i = 0; i < 2; ++i)
            CHECK_MESSAGE(read_all(m.backing("a" + std::to_string(i))) == data[i], "a" << i);
    }
}
