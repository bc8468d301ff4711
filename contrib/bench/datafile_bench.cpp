// Micro-benchmark: random 4 KiB reads of a cache data file through
// store::DataFile (O_DIRECT, and the buffered + DONTNEED fallback) against
// plain pread, each starting with the file's pages out of the page cache,
// and how much of the file the page cache holds afterwards.
//
// Not built by meson. From the top of the source tree:
//   g++ -std=c++20 -O2 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Iinclude -Isrc
//   contrib/bench/datafile_bench.cpp src/store/data_file.cpp src/util/errors.cpp -o datafile_bench
// Run:  ./datafile_bench FILE [SIZE_MIB=256] [READS=20000]
// FILE is created (or overwritten) and removed at the end; put it on the
// disk that would hold the cache. "Cold" comes from POSIX_FADV_DONTNEED on
// FILE alone: the benchmark never touches the machine-wide caches
// (no drop_caches), so it is safe on a shared machine, but it is still a
// benchmark: run it where the disk is yours to load.
#include "overcache/store/data_file.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace overcache;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kRead = 4096;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "datafile_bench: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(1);
}

void make_cold(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED) != 0)
        die("cannot drop the pages of " + path);
}

std::size_t resident_pages(const std::string& path, std::uint64_t size) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        die("open " + path);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED)
        die("mmap " + path);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> vec((size + page - 1) / page);
    if (::mincore(p, size, vec.data()) != 0)
        die("mincore " + path);
    ::munmap(p, size);
    return static_cast<std::size_t>(
        std::count_if(vec.begin(), vec.end(), [](unsigned char c) { return (c & 1) != 0; }));
}

void create(const std::string& path, std::uint64_t size) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd)
        die("create " + path);
    std::string chunk(1u << 20, '\0');
    std::mt19937 rng(1);
    for (std::uint64_t off = 0; off < size; off += chunk.size()) {
        for (auto& c : chunk)
            c = static_cast<char>(rng());
        if (::pwrite(fd.get(), chunk.data(), chunk.size(), static_cast<off_t>(off)) !=
            static_cast<ssize_t>(chunk.size()))
            die("write " + path);
    }
    if (::fdatasync(fd.get()) != 0)
        die("fdatasync " + path);
}

struct Pass {
    double ops_per_s = 0;
    double p50_us = 0;
    double p99_us = 0;
};

template <typename ReadFn> Pass run(const std::vector<std::uint64_t>& offs, ReadFn&& read_one) {
    std::vector<double> lat;
    lat.reserve(offs.size());
    const auto t0 = Clock::now();
    for (auto off : offs) {
        const auto s = Clock::now();
        read_one(off);
        lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::sort(lat.begin(), lat.end());
    return Pass{static_cast<double>(offs.size()) / secs, lat[lat.size() / 2],
                lat[std::min(lat.size() - 1, lat.size() * 99 / 100)]};
}

void report(const char* name, const char* pass, const Pass& p, std::size_t resident) {
    std::printf("%-18s %-6s %10.0f reads/s  p50 %8.1f us  p99 %8.1f us  cached %6.1f MiB\n", name,
                pass, p.ops_per_s, p.p50_us, p.p99_us,
                static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) /
                    (1024.0 * 1024.0));
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE [SIZE_MIB=256] [READS=20000]\n", argv[0]);
        return 2;
    }
    const std::string path = argv[1];
    const std::uint64_t size = (argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256) << 20;
    const std::size_t reads = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 20000;
    if (size < (1u << 20) || reads == 0) {
        std::fprintf(stderr, "datafile_bench: SIZE_MIB >= 1 and READS >= 1\n");
        return 2;
    }
    create(path, size);

    std::mt19937_64 rng(42);
    std::vector<std::uint64_t> offs(reads);
    for (auto& o : offs)
        o = rng() % (size / kRead) * kRead;

    std::vector<char> buf(kRead);
    std::uint64_t sink = 0; // keeps the reads from being optimised away

    {
        make_cold(path);
        UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd)
            die("open " + path);
        for (const char* pass : {"cold", "again"}) {
            auto p = run(offs, [&](std::uint64_t off) {
                if (::pread(fd.get(), buf.data(), kRead, static_cast<off_t>(off)) !=
                    static_cast<ssize_t>(kRead))
                    die("pread");
                sink += static_cast<unsigned char>(buf[0]);
            });
            report("pread", pass, p, resident_pages(path, size));
        }
    }
    for (auto [name, mode] : {std::pair{"DataFile direct", store::IoMode::direct},
                              std::pair{"DataFile buffered", store::IoMode::buffered}}) {
        make_cold(path);
        auto df = store::DataFile::open(path, store::DataFileOptions{mode, false});
        if (!df) {
            std::printf("%-18s unavailable: %s\n", name, to_string(df.error()).c_str());
            continue;
        }
        for (const char* pass : {"cold", "again"}) {
            auto p = run(offs, [&](std::uint64_t off) {
                if (auto r = df->read(off, kRead, buf.data()); !r) {
                    std::fprintf(stderr, "read: %s\n", to_string(r.error()).c_str());
                    std::exit(1);
                }
                sink += static_cast<unsigned char>(buf[0]);
            });
            report(name, pass, p, resident_pages(path, size));
        }
    }
    ::unlink(path.c_str());
    std::printf("(file %llu MiB, %zu random %zu-byte reads a pass; checksum %llu)\n",
                static_cast<unsigned long long>(size >> 20), reads, kRead,
                static_cast<unsigned long long>(sink));
    return 0;
}
