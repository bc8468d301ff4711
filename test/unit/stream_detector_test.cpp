// cache::StreamDetector: sequential streams found in out-of-order reads;
// random reads and re-reads never counted as sequential.
#include "overcache/cache/stream_detector.hpp"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <doctest/doctest.h>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

using overcache::cache::StreamDetector;
using overcache::cache::StreamDetectorParams;

namespace {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;
constexpr std::uint64_t kGiB = 1024 * kMiB;
constexpr std::uint64_t kCutoff = 4 * kMiB;
constexpr std::uint64_t kReq = 128 * kKiB;

} // namespace

TEST_SUITE("cache") {
    TEST_CASE("cache::StreamDetector: an in-order stream bypasses once past the cutoff") {
        StreamDetector d;
        const std::uint64_t first_bypass = kCutoff / kReq; // the read that makes it > cutoff
        for (std::uint64_t i = 0; i < 100; ++i) {
            CAPTURE(i);
            CHECK(d.note_read(i * kReq, kReq, kCutoff) == (i >= first_bypass));
        }
    }

    TEST_CASE("cache::StreamDetector: reads in flight arrive permuted, still one stream") {
        // Readahead keeps several requests in flight; FUSE threads answer
        // them in any order. Model: each group of `in_flight` consecutive
        // 128 KiB requests arrives in a random order.
        for (const std::uint64_t in_flight : {2u, 4u, 8u}) {
            for (const unsigned seed : {1u, 2u, 3u, 42u}) {
                CAPTURE(in_flight);
                CAPTURE(seed);
                StreamDetector d;
                std::mt19937_64 rng(seed);
                std::uint64_t delivered = 0;
                bool last = false;
                const std::uint64_t blocks = 30 * kMiB / kReq;
                for (std::uint64_t g = 0; g < blocks; g += in_flight) {
                    std::vector<std::uint64_t> order(in_flight);
                    std::iota(order.begin(), order.end(), g);
                    std::shuffle(order.begin(), order.end(), rng);
                    for (const std::uint64_t b : order) {
                        const bool bypass = d.note_read(b * kReq, kReq, kCutoff);
                        delivered += kReq;
                        // The run can never be longer than what was read...
                        if (delivered <= kCutoff)
                            CHECK_FALSE(bypass);
                        // ...and at most in_flight - 1 requests are missing
                        // from below it.
                        if (delivered > kCutoff + in_flight * kReq)
                            CHECK(bypass);
                        last = bypass;
                    }
                }
                CHECK(last);
            }
        }
    }

    TEST_CASE("cache::StreamDetector: random 4 KiB reads never bypass") {
        SUBCASE("over a large file") {
            StreamDetector d;
            std::mt19937_64 rng(7);
            std::uniform_int_distribution<std::uint64_t> block(0, 64 * kGiB / (4 * kKiB) - 1);
            for (int i = 0; i < 50000; ++i)
                REQUIRE_FALSE(d.note_read(block(rng) * 4 * kKiB, 4 * kKiB, kCutoff));
        }
        SUBCASE("over a file smaller than the window, read many times over") {
            // Every block is read ~100 times: runs must not knit together.
            for (const unsigned seed : {8u, 9u, 10u}) {
                CAPTURE(seed);
                StreamDetector d;
                std::mt19937_64 rng(seed);
                std::uniform_int_distribution<std::uint64_t> block(0, 2 * kMiB / (4 * kKiB) - 1);
                for (int i = 0; i < 50000; ++i)
                    REQUIRE_FALSE(d.note_read(block(rng) * 4 * kKiB, 4 * kKiB, 1 * kMiB));
            }
        }
    }

    TEST_CASE("cache::StreamDetector: two interleaved streams in one open") {
        StreamDetector d;
        const std::uint64_t a0 = 0;
        const std::uint64_t b0 = 10 * kGiB;
        const std::uint64_t first_bypass = kCutoff / kReq;
        for (std::uint64_t i = 0; i < 64; ++i) {
            CAPTURE(i);
            CHECK(d.note_read(a0 + i * kReq, kReq, kCutoff) == (i >= first_bypass));
            CHECK(d.note_read(b0 + i * kReq, kReq, kCutoff) == (i >= first_bypass));
            // A random read elsewhere neither joins nor breaks them.
            CHECK_FALSE(d.note_read(100 * kGiB + i * 7 * kMiB, 4 * kKiB, kCutoff));
        }
    }

    TEST_CASE("cache::StreamDetector: re-reading the first MiB is not a stream") {
        StreamDetector d;
        for (int pass = 0; pass < 100; ++pass)
            for (std::uint64_t off = 0; off < kMiB; off += kReq)
                REQUIRE_FALSE(d.note_read(off, kReq, kCutoff));
        // The same bytes read backwards and in 4 KiB pieces add nothing either.
        for (int pass = 0; pass < 10; ++pass)
            for (std::uint64_t off = kMiB; off > 0; off -= 4 * kKiB)
                REQUIRE_FALSE(d.note_read(off - 4 * kKiB, 4 * kKiB, kCutoff));
    }

    TEST_CASE("cache::StreamDetector: a seek far back starts a new stream") {
        StreamDetector d;
        bool bypass = false;
        for (std::uint64_t off = 0; off < 16 * kMiB; off += kReq)
            bypass = d.note_read(off, kReq, kCutoff);
        CHECK(bypass);
        // A second pass from the start is new: it bypasses only once it too
        // has gone past the cutoff.
        CHECK_FALSE(d.note_read(0, kReq, kCutoff));
        for (std::uint64_t off = kReq; off <= kCutoff; off += kReq)
            bypass = d.note_read(off, kReq, kCutoff);
        CHECK(bypass);
    }

    TEST_CASE("cache::StreamDetector: a hole in a stream (pages the kernel had)") {
        StreamDetector d;
        for (std::uint64_t off = 0; off < 8 * kMiB; off += kReq)
            (void)d.note_read(off, kReq, kCutoff);
        // The stream skips 1 MiB: it still bypasses right after the hole...
        const std::uint64_t resume = 9 * kMiB;
        CHECK(d.note_read(resume, kReq, kCutoff));
        // ...and, once the run before the hole is forgotten, again as soon as
        // the run after it is past the cutoff.
        bool bypass = false;
        for (std::uint64_t off = resume + kReq; off < resume + 2 * kCutoff; off += kReq)
            bypass = d.note_read(off, kReq, kCutoff);
        CHECK(bypass);
    }

    TEST_CASE("cache::StreamDetector: cutoff 0 never bypasses") {
        StreamDetector d;
        for (std::uint64_t off = 0; off < 256 * kMiB; off += kMiB)
            REQUIRE_FALSE(d.note_read(off, kMiB, 0));
        // And a zero-length read records nothing.
        CHECK_FALSE(d.note_read(0, 0, 1));
    }

    TEST_CASE("cache::StreamDetector: reset forgets the streams") {
        StreamDetector d;
        for (std::uint64_t off = 0; off < 8 * kMiB; off += kReq)
            (void)d.note_read(off, kReq, kCutoff);
        CHECK(d.note_read(8 * kMiB, kReq, kCutoff));
        d.reset();
        CHECK_FALSE(d.note_read(8 * kMiB + kReq, kReq, kCutoff));
    }

    TEST_CASE("cache::StreamDetector: FUSE threads reading one stream at once" *
              doctest::timeout(30)) {
        // Four threads answer one stream's requests, a round of four at a
        // time (the barrier stands for the readahead window), each round's
        // reads racing inside the detector.
        StreamDetector d;
        constexpr unsigned kThreads = 4;
        const std::uint64_t rounds = 32 * kMiB / (kReq * kThreads);
        std::barrier sync(kThreads);
        std::atomic<unsigned> wrong{0};
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < kThreads; ++t)
            ts.emplace_back([&, t] {
                for (std::uint64_t r = 0; r < rounds; ++r) {
                    const std::uint64_t b = r * kThreads + t;
                    const bool bypass = d.note_read(b * kReq, kReq, kCutoff);
                    const std::uint64_t before = r * kThreads * kReq; // complete rounds
                    const bool expect_bypass = before > kCutoff;
                    const bool expect_not = before + kThreads * kReq <= kCutoff;
                    if ((expect_bypass && !bypass) || (expect_not && bypass))
                        ++wrong;
                    sync.arrive_and_wait();
                }
            });
        for (auto& t : ts)
            t.join();
        CHECK(wrong == 0);
    }
}
