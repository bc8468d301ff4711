// Test support: seeded random bytes, and whole files read and written with
// plain system calls (on the mount, the backing or the twin alike).
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <random>
#include <string>
#include <unistd.h>

namespace overcache::test {

// `n` pseudo-random bytes, the same for the same seed.
inline std::string random_bytes(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; i += 8) {
        const auto v = rng();
        std::memcpy(s.data() + i, &v, std::min<std::size_t>(8, n - i));
    }
    return s;
}

// `n` bytes more from `rng` (a test's own seeded stream).
inline std::string random_bytes(std::mt19937_64& rng, std::size_t n) {
    std::string s(n, '\0');
    for (auto& c : s)
        c = static_cast<char>(rng());
    return s;
}

// The whole file; on failure a text that names it ("<cannot open PATH:
// reason>", "<read error on PATH: reason>"), which no test's data equals, so
// a comparison fails with the reason in its message. No doctest assertion:
// callable from any thread.
inline std::string read_file(const std::string& path) {
    std::string out;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return "<cannot open " + path + ": " + std::strerror(errno) + ">";
    char buf[65536];
    ssize_t n = 0;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        out.append(buf, static_cast<std::size_t>(n));
    if (n < 0)
        out = "<read error on " + path + ": " + std::strerror(errno) + ">";
    ::close(fd);
    return out;
}

// Creates or empties `path` and writes `data`, synced (so that dropping the
// page cache drops it).
// Reads a whole file in `chunk`-sized reads with its page cache dropped
// before and after, so on a mount every byte comes from the daemon.
inline std::string read_uncached(const std::string& path, std::size_t chunk = 128 * 1024) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE_MESSAGE(fd >= 0, "open " << path << ": " << std::strerror(errno));
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM); // no readahead beyond what we ask
    std::string out;
    std::string buf(chunk, '\0');
    for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        REQUIRE(n >= 0);
        if (n == 0)
            break;
        out.append(buf.data(), static_cast<std::size_t>(n));
    }
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    return out;
}

inline void write_file(const std::string& path, const std::string& data) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE_MESSAGE(fd >= 0, path << ": " << std::strerror(errno));
    REQUIRE(::pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
    REQUIRE(::fsync(fd) == 0);
    REQUIRE(::close(fd) == 0);
}

} // namespace overcache::test
