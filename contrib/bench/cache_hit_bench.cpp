// In-process micro-benchmark of the caching DataPath's hit path (no FUSE, no
// kernel): what a hit costs when the data is already in the cache. Not a
// test; it prints numbers for the record and checks only that every read was
// a hit. Built on request only:
//
//   ninja -C build test/cache_hit_bench && build/test/cache_hit_bench [N]
//
// N is the number of random 4 KiB reads (default 200000). The cache and the
// file live in a temporary directory under $TMPDIR (or /tmp).
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/cache/caching_path.hpp"
#include "overcache/cache/extent_index.hpp"
#include "tmp_dir.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <random>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace overcache;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;

[[noreturn]] void die(const std::string& why) {
    std::fprintf(stderr, "cache_hit_bench: %s\n", why.c_str());
    std::exit(1);
}

std::uint64_t stat_of(const cache::DataPath& dp, const std::string& key) {
    for (const auto& [k, v] : dp.stats())
        if (k == key)
            return std::stoull(v);
    die("no stat " + key);
}

} // namespace

// The index part of a hit alone: finding the extents that cover a random
// 4 KiB range of a file of 16 extents, among 32 files.
void time_lookups(int n) {
    test::TmpDir tmp("overcache-bench");
    store::DeviceConfig dc;
    dc.dir = tmp / "cache";
    dc.cache_size = 256 * MiB;
    dc.bucket_size = 1 * MiB;
    dc.backing = store::BackingIdentity{"/b", 1, 2};
    auto dev = store::open_cache_device(dc);
    if (!dev)
        die(dev.error().message);
    store::Allocator alloc((*dev)->meta(),
                           static_cast<std::uint32_t>((*dev)->superblock().bucket_count),
                           dc.bucket_size, 1, (*dev)->block_size());
    alloc.finish_load();
    store::WritePoint wp("bench", false);
    cache::ExtentIndex ix(**dev, alloc);
    const std::string chunk(256 * KiB, 'x');
    for (meta::FileId f = 1; f <= 32; ++f)
        for (std::uint64_t off = 0; off < 4 * MiB; off += 256 * KiB)
            if (auto r = ix.insert(wp, f, off, chunk.data(), 256 * KiB); !r || !*r)
                die("insert failed");
    std::vector<cache::Piece> pieces;
    std::mt19937_64 rng(7);
    std::uint64_t found = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
        const meta::FileId f = 1 + rng() % 32;
        const std::uint64_t off = (rng() % 1024) * 4 * KiB;
        if (!ix.lookup(f, off, off + 4 * KiB, pieces))
            die("lookup failed");
        found += pieces.size();
    }
    const auto dt =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-28s %8.2f us/lookup (%llu pieces)\n", "index lookup of 4 KiB", dt / n,
                static_cast<unsigned long long>(found));
}

int main(int argc, char** argv) {
    const int n_random = argc > 1 ? std::atoi(argv[1]) : 200000;
    time_lookups(n_random);
    test::TmpDir tmp("overcache-bench");
    const std::string backing = tmp / "backing";
    ::mkdir(backing.c_str(), 0755);

    store::DeviceConfig dc;
    dc.dir = tmp / "cache";
    dc.cache_size = 128 * MiB;
    dc.bucket_size = 1 * MiB;
    dc.backing = store::BackingIdentity{backing, 1, 2};
    cache::CachingParams cp;
    cp.fill_size = 256 * KiB;
    cp.sequential_cutoff = 0;
    auto dev = store::open_cache_device(dc);
    if (!dev)
        die(dev.error().message);
    bg::Executors ex;
    ex.start();
    auto dp = cache::make_caching_path(std::move(*dev), cp, ex);
    auto& ctl = dynamic_cast<cache::CacheControl&>(*dp);

    constexpr std::uint64_t kSize = 64 * MiB;
    const std::string path = backing + "/f";
    {
        std::mt19937_64 rng(50);
        std::string data(kSize, '\0');
        for (auto& c : data)
            c = static_cast<char>(rng());
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ::pwrite(fd, data.data(), data.size(), 0) != static_cast<ssize_t>(kSize))
            die("cannot write " + path);
        ::close(fd);
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0)
        die("cannot open " + path);
    auto opened = dp->open(fd, st, O_RDONLY);
    if (!opened)
        die("open: " + opened.error().message);
    auto& of = *opened->file;
    std::string buf(256 * KiB, '\0');
    // Fill the cache with the whole file, then wait for the fills.
    for (std::uint64_t off = 0; off < kSize; off += 256 * KiB)
        if (!dp->read(of, buf.data(), 256 * KiB, static_cast<off_t>(off)))
            die("read failed while filling");
    ctl.drain_fills();

    auto time_it = [&](const char* what, int n, std::uint64_t len, bool random) {
        std::mt19937_64 rng(1);
        const auto hits0 = stat_of(*dp, "cache_hits");
        const auto t0 = std::chrono::steady_clock::now();
        std::uint64_t off = 0;
        for (int i = 0; i < n; ++i) {
            off = random ? (rng() % (kSize / len)) * len : (off + len) % kSize;
            if (!dp->read(of, buf.data(), len, static_cast<off_t>(off)))
                die("read failed");
        }
        const auto dt =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                .count();
        const auto hits = stat_of(*dp, "cache_hits") - hits0;
        std::printf("%-28s %8.2f us/read  %8.0f MiB/s  (%llu of %d hits)\n", what, dt / n,
                    static_cast<double>(len) * n / dt * 1e6 / MiB,
                    static_cast<unsigned long long>(hits), n);
        return hits == static_cast<std::uint64_t>(n);
    };
    bool ok = time_it("random 4 KiB hits", n_random, 4 * KiB, true);
    ok = time_it("sequential 128 KiB hits", 20000, 128 * KiB, false) && ok;
    ok = time_it("sequential 256 KiB hits", 10000, 256 * KiB, false) && ok;
    opened->file.reset();
    ::close(fd);
    dp->stop();
    return ok ? 0 : 1;
}
