// Two overlapping writes the kernel does not serialise: one thread writes a
// range with pwrite(2) (which the kernel sends under the inode lock) while
// another writes the same range through a MAP_SHARED mapping and msync
// (page writeback, which does not take the inode lock). The daemon can then
// run both FUSE_WRITEs at once. Whatever order they reach the backing in,
// the cache must end up holding what the backing holds: it must never keep
// older bytes under a record that says they are current (in writethrough the
// backing write and the cache insert of one request are two steps, and the
// other request's two steps may land between them).
//
// At the end, after both threads finished and an fsync, the file is read
// through the mount with its page cache dropped (POSIX_FADV_DONTNEED, never
// drop_caches) and directly from the backing: the two must be equal.
#include "fuse_mount.hpp"

#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <vector>
#include <unistd.h>

using namespace overcache;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t KiB = 1024;

std::map<std::string, std::string> stats(const test::Mount& m) {
    std::ifstream in(m.mnt(".overcache"));
    std::map<std::string, std::string> out;
    std::string k, v;
    while (in >> k >> v)
        out[k] = v;
    return out;
}

std::uint64_t stat_of(const test::Mount& m, const std::string& key) {
    auto s = stats(m);
    auto it = s.find(key);
    REQUIRE_MESSAGE(it != s.end(), "no " << key << " in .overcache");
    return std::stoull(it->second);
}

void wait_fills(const test::Mount& m) {
    const auto end = std::chrono::steady_clock::now() + 15s;
    while (stat_of(m, "fills_pending") != 0) {
        REQUIRE_MESSAGE(std::chrono::steady_clock::now() < end,
                        "fills_pending did not reach 0 within 15 s");
        std::this_thread::sleep_for(10ms);
    }
}

std::string read_all(int fd) {
    std::string out, buf(128 * KiB, '\0');
    for (off_t off = 0;;) {
        const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
        REQUIRE_MESSAGE(n >= 0, "read: " << std::strerror(errno));
        if (n == 0)
            break;
        out.append(buf.data(), static_cast<std::size_t>(n));
        off += n;
    }
    return out;
}

std::string read_uncached(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE_MESSAGE(fd >= 0, "open " << path << ": " << std::strerror(errno));
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    std::string out = read_all(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    return out;
}

// Fills `buf` with 8-byte words naming the writer and the iteration, so a
// mismatch says whose bytes each side holds.
void pattern(char* buf, std::size_t len, std::uint32_t writer, std::uint32_t iter) {
    const std::uint64_t word = (std::uint64_t{writer} << 32) | iter;
    for (std::size_t i = 0; i + 8 <= len; i += 8)
        std::memcpy(buf + i, &word, 8);
}

std::string who(const std::string& s, std::size_t at) {
    std::uint64_t w = 0;
    std::memcpy(&w, s.data() + (at & ~std::size_t{7}), 8);
    const auto writer = static_cast<std::uint32_t>(w >> 32);
    std::ostringstream os;
    if (writer == 1)
        os << "write(2) #" << static_cast<std::uint32_t>(w);
    else if (writer == 2)
        os << "mmap #" << static_cast<std::uint32_t>(w);
    else if (w == 0)
        os << "the initial bytes";
    else
        os << "bytes no writer wrote (word " << std::hex << w << ")";
    return os.str();
}

void require_daemon() {
    test::require_fuse();
    if (const char* s = std::getenv("OVERCACHE_TEST_STANDIN"); s && *s) {
        std::fprintf(stderr, "overlap tests need the daemon; skipping under the stand-in\n");
        std::exit(77);
    }
}

void run_race(bool direct) {
    require_daemon();
    test::Mount m(test::MountOptions{.options = "cache_size=64M,sequential_cutoff=0",
                                     .twin = false});
    constexpr std::size_t kFile = 512 * KiB, kOff = 64 * KiB, kLen = 64 * KiB;
    constexpr int kIters = 200;
    const auto until = std::chrono::steady_clock::now() + 4s;
    int rounds = 0, bad_rounds = 0, bad_iterations = 0;
    int by_write = 0, by_mmap = 0, mixed = 0; // the backing's last writer, per iteration
    std::string first_failure;
    do {
        const std::string name = "f" + std::to_string(rounds);
        {
            std::string init(kFile, '\0');
            pattern(init.data(), init.size(), 0, 0);
            const int fd = ::open(m.backing(name).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            REQUIRE(fd >= 0);
            REQUIRE(::pwrite(fd, init.data(), init.size(), 0) ==
                    static_cast<ssize_t>(init.size()));
            ::close(fd);
        }
        // Cached before the race, so that stale extents would be there to
        // serve.
        (void)read_uncached(m.mnt(name));
        wait_fills(m);

        const int wfd =
            ::open(m.mnt(name).c_str(), O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0));
        REQUIRE(wfd >= 0);
        const int mfd = ::open(m.mnt(name).c_str(), O_RDWR | O_CLOEXEC);
        REQUIRE(mfd >= 0);
        void* map = ::mmap(nullptr, kFile, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
        REQUIRE_MESSAGE(map != MAP_FAILED, "mmap: " << std::strerror(errno));
        char* region = static_cast<char*>(map) + kOff;

        // CPU pressure (2 spinning threads, niced) so the daemon's threads
        // are preempted more often between a request's backing write and
        // its cache insert, which is where the two requests can cross.
        std::atomic<bool> spin{true};
        std::vector<std::thread> hogs;
        for (int i = 0; i < 2; ++i)
            hogs.emplace_back([&] {
                (void)!::nice(10);
                while (spin.load(std::memory_order_relaxed)) {
                }
            });
        std::atomic<int> errors{0};
        std::atomic<int> write_errno{0}, msync_errno{0};
        // After every iteration (both writes returned, so the daemon has
        // replied to both), the range read through the mount with O_DIRECT
        // (straight to the daemon, whatever the page cache holds; the pages
        // are mapped, so fadvise could not drop them) must equal the backing.
        const int rfd = ::open(m.mnt(name).c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
        REQUIRE_MESSAGE(rfd >= 0, "O_DIRECT open through the mount: " << std::strerror(errno));
        const int bfd_check = ::open(m.backing(name).c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(bfd_check >= 0);
        int iteration = 0;
        auto check_iteration = [&]() noexcept {
            ++iteration;
            alignas(4096) static char via_mount[kLen];
            static char on_backing[kLen];
            if (m.writeback_mode()) {
                // The backing lags by design: compare once it is flushed.
                const int c = ::open(m.mnt(".overcache").c_str(), O_WRONLY | O_CLOEXEC);
                if (c >= 0) {
                    (void)!::write(c, "flush\n", 6);
                    ::close(c);
                }
            }
            const ssize_t a = ::pread(rfd, via_mount, kLen, kOff);
            const ssize_t b = ::pread(bfd_check, on_backing, kLen, kOff);
            if (b == static_cast<ssize_t>(kLen)) {
                // Who wrote the range last, as the backing sees it.
                std::uint32_t first_writer = 0, last_writer = 0;
                std::memcpy(&first_writer, on_backing + 4, 4);
                std::memcpy(&last_writer, on_backing + kLen - 4, 4);
                ++(first_writer != last_writer ? mixed : first_writer == 1 ? by_write : by_mmap);
            }
            if (a != static_cast<ssize_t>(kLen) || b != static_cast<ssize_t>(kLen) ||
                std::memcmp(via_mount, on_backing, kLen) != 0) {
                ++bad_iterations;
                if (first_failure.empty()) {
                    try {
                        std::size_t at = 0;
                        while (a > 0 && at < kLen && via_mount[at] == on_backing[at])
                            ++at;
                        std::ostringstream os;
                        os << "round " << rounds << " iteration " << iteration << ": ";
                        if (a != static_cast<ssize_t>(kLen) || b != static_cast<ssize_t>(kLen))
                            os << "short/failed reads (" << a << ", " << b << ")";
                        else
                            os << "at offset " << kOff + at << " the mount reads "
                               << who(std::string(via_mount, kLen), at)
                               << " but the backing has "
                               << who(std::string(on_backing, kLen), at);
                        first_failure = os.str();
                    } catch (...) {
                    }
                }
            }
        };
        std::barrier sync(2, check_iteration);
        std::thread writer([&] {
            // Page-aligned, for O_DIRECT.
            alignas(4096) static thread_local char buf[kLen];
            for (int i = 1; i <= kIters; ++i) {
                pattern(buf, kLen, 1, static_cast<std::uint32_t>(i));
                if (::pwrite(wfd, buf, kLen, kOff) != static_cast<ssize_t>(kLen)) {
                    write_errno = errno;
                    ++errors;
                    sync.arrive_and_drop();
                    return;
                }
                sync.arrive_and_wait();
            }
        });
        std::thread mapper([&] {
            for (int i = 1; i <= kIters; ++i) {
                pattern(region, kLen, 2, static_cast<std::uint32_t>(i));
                if (::msync(map, kFile, MS_SYNC) != 0) {
                    msync_errno = errno;
                    ++errors;
                    sync.arrive_and_drop();
                    return;
                }
                sync.arrive_and_wait();
            }
        });
        writer.join();
        mapper.join();
        spin = false;
        for (auto& h : hogs)
            h.join();
        CHECK_MESSAGE(errors == 0, "pwrite errno " << write_errno << ", msync errno "
                                                   << msync_errno);
        CHECK(::msync(map, kFile, MS_SYNC) == 0);
        CHECK(::munmap(map, kFile) == 0);
        CHECK(::fsync(wfd) == 0);
        ::close(mfd);
        ::close(wfd);
        ::close(rfd);
        ::close(bfd_check);
        wait_fills(m);

        const int bfd = ::open(m.backing(name).c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(bfd >= 0);
        const std::string backing = read_all(bfd);
        ::close(bfd);
        const std::string through = read_uncached(m.mnt(name));
        REQUIRE(backing.size() == kFile);
        if (through != backing) {
            ++bad_rounds;
            if (first_failure.empty()) {
                std::size_t at = 0; // NOLINT
                while (at < through.size() && at < backing.size() && through[at] == backing[at])
                    ++at;
                std::ostringstream os;
                os << "round " << rounds << " (final state): at offset " << at << " the mount reads "
                   << who(through, at) << " but the backing has " << who(backing, at)
                   << " (size " << through.size() << " vs " << backing.size() << ")";
                first_failure = os.str();
            }
        }
        ++rounds;
    } while (std::chrono::steady_clock::now() < until);
    MESSAGE((direct ? "O_DIRECT " : "buffered ") << "write(2): " << rounds << " rounds of "
                                                << kIters << " racing writes per writer; "
                                                << "the backing's range last written by write(2) "
                                                << by_write << " times, by mmap " << by_mmap
                                                << " times, by both (pages interleaved) "
                                                << mixed << " times");
    CHECK_MESSAGE(bad_iterations == 0,
                  bad_iterations << " iterations left the cache unlike the backing (checked "
                                    "right after both writes returned); first: "
                                 << first_failure);
    CHECK_MESSAGE(bad_rounds == 0, bad_rounds << " of " << rounds
                                              << " rounds left the cache unlike the backing; "
                                              << first_failure);
    CHECK(stat_of(m, "cache_read_errors") == 0);
}

} // namespace

TEST_SUITE("mount") {
    // Checks: after racing write(2) and mmap+msync writes of one 64 KiB
    // range (writethrough, the default mode), an uncached read through the
    // mount equals the backing, byte for byte. Rounds on fresh files until
    // 4 s have passed, each round 200 iterations per writer.
    //
    // Buffered write(2): the kernel sends it with the pages locked and waits
    // for their writeback first, so it is in fact serialised against the
    // mmap writeback page by page; kept as the ordinary case.
    TEST_CASE("buffered write(2) racing mmap writeback: the cache ends equal to the backing" *
              doctest::timeout(180)) {
        run_race(false);
    }
    // O_DIRECT write(2) (overcache strips O_DIRECT toward the backing; the
    // kernel's FUSE client still sends it as a direct write, holding no page
    // locks): not serialised against the mmap writeback, so both FUSE_WRITEs
    // of the range can be in the daemon at once.
    TEST_CASE("O_DIRECT write(2) racing mmap writeback: the cache ends equal to the backing" *
              doctest::timeout(180)) {
        run_race(true);
    }
}
