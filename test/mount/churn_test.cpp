// Churn with kill -9: a 16 MiB cache (the smallest cache_size the options
// allow; bucket_size at its default 1M, so 16 buckets) over 100 MiB of files
// (25 files of 4 MiB, seeded random content written to the backing
// directly), four reader threads reading random ranges (4 KiB to 1 MiB)
// through the mount and comparing every byte with the expected content,
// while the cache fills, GC reclaims buckets and they are reused. Each round
// the daemon is killed with SIGKILL at a random moment and the next round
// mounts the same backing and cache again.
//
// Checks:
//  - every byte of every successful read is right, in every round;
//  - cache_read_errors (checksum or I/O rejects of cached data) stays 0 in
//    every round: after kill -9 the kernel still holds every byte the daemon
//    wrote to its data file, so a rejected checksum means the index pointed
//    at space that was reused (an extent committed before its data, or a
//    bucket reused under an extent that still names its generation);
//  - a last round ends with a clean unmount and the same checks.
//
// Readers cope with the mount going away under them during the kill: once
// the kill has begun, errors (ENOTCONN, EIO, ECONNABORTED, ENOENT on the
// detached mountpoint) end that reader's round; before it, any error fails.
// Rounds: 6 by default, OVERCACHE_CHURN_ROUNDS to change; the seed is fixed
// (OVERCACHE_CHURN_SEED to change). About 30-40 s with the defaults.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "tmp_dir.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

using overcache::test::random_bytes;

using namespace overcache;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;
constexpr int kFiles = 25;
constexpr std::size_t kFileSize = 4 * MiB;
constexpr int kReaders = 4;

unsigned env_uint(const char* name, unsigned dflt) {
    const char* s = std::getenv(name);
    if (!s || !*s)
        return dflt;
    return static_cast<unsigned>(std::strtoul(s, nullptr, 10));
}

// Stats from MOUNT/.overcache; empty if the control file cannot be read.
std::map<std::string, std::string> stats(const test::Mount& m) {
    std::ifstream in(m.mnt(".overcache"));
    std::map<std::string, std::string> out;
    std::string k, v;
    while (in >> k >> v)
        out[k] = v;
    return out;
}

std::uint64_t num(const std::map<std::string, std::string>& s, const std::string& key) {
    auto it = s.find(key);
    return it == s.end() ? UINT64_MAX : std::stoull(it->second);
}

struct ReaderResult {
    std::uint64_t reads = 0, bytes = 0, mismatches = 0, errors_before_kill = 0;
    std::string first_problem;
};

// Reads random ranges of random files through the mount until `stop`.
// Errors once `killing` is set are the mount going away, and end the loop.
void reader(const test::Mount& m, const std::vector<std::string>& content, std::uint64_t seed,
            const std::atomic<bool>& killing, const std::atomic<bool>& stop, ReaderResult& res) {
    std::mt19937_64 rng(seed);
    std::string buf(1 * MiB, '\0');
    auto problem = [&](const std::string& what) {
        if (res.first_problem.empty())
            res.first_problem = what;
    };
    while (!stop.load()) {
        const int f = static_cast<int>(rng() % kFiles);
        // Lengths log-uniform over 4 KiB .. 1 MiB.
        const std::size_t len = std::size_t{4 * KiB} << (rng() % 9);
        const std::size_t len2 = len + rng() % len;
        const std::size_t n = std::min<std::size_t>(len2, 1 * MiB);
        const std::size_t off = rng() % (kFileSize - n + 1);
        const std::string path = m.mnt("f" + std::to_string(f));
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (killing.load())
                return;
            ++res.errors_before_kill;
            problem("open " + path + ": " + std::strerror(errno));
            continue;
        }
        // Make the kernel's page cache irrelevant for this range: the read
        // goes to the daemon (other readers may repopulate it: fine).
        ::posix_fadvise(fd, static_cast<off_t>(off), static_cast<off_t>(n), POSIX_FADV_DONTNEED);
        std::size_t got = 0;
        bool failed = false;
        while (got < n) {
            const ssize_t r = ::pread(fd, buf.data() + got, n - got, static_cast<off_t>(off + got));
            if (r < 0) {
                failed = true;
                if (!killing.load()) {
                    ++res.errors_before_kill;
                    std::ostringstream os;
                    os << "pread f" << f << " [" << off + got << ", +" << n - got
                       << "): " << std::strerror(errno);
                    problem(os.str());
                }
                break;
            }
            if (r == 0)
                break;
            got += static_cast<std::size_t>(r);
        }
        ::close(fd);
        // Compare what was read, even a part before an error.
        if (std::memcmp(buf.data(), content[f].data() + off, got) != 0) {
            ++res.mismatches;
            std::size_t at = 0;
            while (at < got && buf[at] == content[f][off + at])
                ++at;
            std::ostringstream os;
            os << "wrong bytes in f" << f << " at offset " << off + at << " (read [" << off
               << ", +" << n << ")" << (killing.load() ? ", during the kill" : "") << ")";
            problem(os.str());
        } else if (!failed && got != n) {
            ++res.mismatches;
            std::ostringstream os;
            os << "short read of f" << f << ": " << got << " of " << n << " at " << off;
            problem(os.str());
        }
        ++res.reads;
        res.bytes += got;
        if (failed && killing.load())
            return;
    }
}

void require_daemon() {
    test::require_fuse();
    if (const char* s = std::getenv("OVERCACHE_TEST_STANDIN"); s && *s) {
        std::fprintf(stderr, "churn test needs the daemon; skipping under the stand-in\n");
        std::exit(77);
    }
}

} // namespace

TEST_SUITE("mount") {
    // See the top of the file: every byte right and no checksum rejects,
    // through N rounds of random reads over a cache 6x smaller than the data,
    // each ended by kill -9, then one round ended by a clean unmount.
    TEST_CASE("churn over a small cache with kill -9: every byte right, no checksum rejects" *
              doctest::timeout(300)) {
        require_daemon();
        const unsigned rounds = env_uint("OVERCACHE_CHURN_ROUNDS", 6);
        const std::uint64_t seed = env_uint("OVERCACHE_CHURN_SEED", 20261202);
        const auto t0 = std::chrono::steady_clock::now();
        const std::string options = "cache_size=16M,sequential_cutoff=0";
        // One backing, mountpoint and cache for every round: each round
        // mounts the cache the previous one left (after kill -9).
        test::Mount m(test::MountOptions{.options = options, .twin = false});
        const std::string backing = m.backing();
        std::vector<std::string> content;
        for (int f = 0; f < kFiles; ++f) {
            content.push_back(random_bytes(kFileSize, seed * 1000 + static_cast<unsigned>(f)));
            const std::string p = backing + "/f" + std::to_string(f);
            const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            REQUIRE(fd >= 0);
            REQUIRE(::pwrite(fd, content.back().data(), kFileSize, 0) ==
                    static_cast<ssize_t>(kFileSize));
            ::close(fd);
        }
        std::mt19937_64 rng(seed);
        std::uint64_t total_reads = 0, total_hits = 0, total_reclaimed = 0;

        // Rounds 0..rounds-1 end with kill -9; the last one (== rounds) with
        // a clean unmount.
        for (unsigned round = 0; round <= rounds; ++round) {
            const bool last = round == rounds;
            const std::string round_name =
                "round " + std::to_string(round) + (last ? " (clean unmount)" : " (kill -9)");
            INFO(round_name);
            if (round > 0)
                m.remount();
            std::atomic<bool> killing{false}, stop{false};
            std::vector<ReaderResult> res(kReaders);
            std::vector<std::thread> threads;
            for (int t = 0; t < kReaders; ++t)
                threads.emplace_back(reader, std::cref(m), std::cref(content),
                                     seed + round * 100 + static_cast<unsigned>(t),
                                     std::cref(killing), std::cref(stop), std::ref(res[t]));
            // Run 1.0 to 4.0 s (random), then end the round.
            const auto run = std::chrono::milliseconds(1000 + rng() % 3000);
            std::this_thread::sleep_for(run);
            const auto s = stats(m); // the daemon's counters are per process
            std::uint64_t status = 0;
            if (last) {
                stop = true;
                for (auto& th : threads)
                    th.join();
                const auto after = stats(m);
                CHECK_MESSAGE(num(after, "cache_read_errors") == 0,
                              "checksum/I-O rejects of cached data: "
                                  << num(after, "cache_read_errors"));
                status = static_cast<std::uint64_t>(m.unmount());
                CHECK_MESSAGE(status == 0, "clean unmount ended with wait status " << status);
            } else {
                killing = true;
                m.kill9();
                stop = true;
                for (auto& th : threads)
                    th.join();
            }
            REQUIRE_MESSAGE(!s.empty(), "could not read .overcache");
            std::uint64_t reads = 0, mismatches = 0, errors = 0;
            std::string problem;
            for (const auto& r : res) {
                reads += r.reads;
                mismatches += r.mismatches;
                errors += r.errors_before_kill;
                if (problem.empty())
                    problem = r.first_problem;
            }
            total_reads += reads;
            total_hits += num(s, "cache_hits");
            total_reclaimed += num(s, "gc_buckets_reclaimed");
            MESSAGE("round " << round << ": " << run.count() << " ms, " << reads
                             << " reads, hits " << num(s, "cache_hits") << ", misses "
                             << num(s, "cache_misses") << ", fills " << num(s, "fills")
                             << ", buckets reclaimed " << num(s, "gc_buckets_reclaimed")
                             << ", cache_read_errors " << num(s, "cache_read_errors")
                             << ", cache_stale_reads " << num(s, "cache_stale_reads"));
            CHECK_MESSAGE(mismatches == 0, mismatches << " reads returned wrong bytes; first: "
                                                      << problem);
            CHECK_MESSAGE(errors == 0, errors << " reads failed before the kill; first: "
                                              << problem);
            CHECK_MESSAGE(num(s, "cache_read_errors") == 0,
                          "checksum/I-O rejects of cached data in this round: "
                              << num(s, "cache_read_errors")
                              << " (the index pointed at reused space)");
            CHECK(reads > 0);
        }
        // The test must have exercised what it claims to.
        CHECK(total_hits > 0);
        CHECK(total_reclaimed > 0);
        const auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::steady_clock::now() - t0)
                              .count();
        MESSAGE(rounds << " kill -9 rounds + 1 clean, " << total_reads << " reads, " << secs
                       << " s");
    }
}
