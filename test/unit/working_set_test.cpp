// cache::WorkingSet: the distinct bytes touched over five minutes, an hour
// and a day, estimated within a few percent; touching the same blocks again
// adds nothing; a window forgets what is older than it; reset forgets all.
// Time is passed in by the test.
#include "cache/working_set.hpp"

#include <cstdint>
#include <doctest/doctest.h>
#include <thread>
#include <vector>

using overcache::cache::WorkingSet;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kMiB = 1u << 20;

// Within `pct` percent of `want`.
bool near(std::uint64_t got, std::uint64_t want, double pct) {
    const double d = static_cast<double>(got) - static_cast<double>(want);
    return (d < 0 ? -d : d) <= static_cast<double>(want) * pct / 100;
}

} // namespace

TEST_SUITE("cache") {
    TEST_CASE("WorkingSet: distinct bytes, not bytes moved") {
        WorkingSet ws;
        const auto t = WorkingSet::Clock::now();
        CHECK(ws.estimate(t).five_minute == 0);
        // 64 MiB of one file read three times, 4 KiB of another.
        for (int pass = 0; pass < 3; ++pass)
            for (std::uint64_t off = 0; off < 64 * kMiB; off += 128 * 1024)
                ws.touch(1, off, 128 * 1024, t);
        ws.touch(2, 0, 4096, t);
        const auto e = ws.estimate(t);
        CHECK_MESSAGE(near(e.five_minute, 64 * kMiB + 4096, 5), e.five_minute);
        CHECK(e.hour == e.five_minute);
        CHECK(e.day == e.hour);
        // Small sets are counted exactly (linear counting).
        WorkingSet small;
        small.touch(7, 4096 * 10, 3 * 4096, t); // 3 blocks
        small.touch(7, 4096 * 10 + 100, 10, t); // inside the first: nothing new
        small.touch(8, 1, 1, t);                // another file's first block
        CHECK(small.estimate(t).five_minute == 4 * 4096);
        // Reset in the first minute (windows reaching before the start).
        small.clear();
        const auto e0 = small.estimate(t);
        CHECK(e0.five_minute == 0);
        CHECK(e0.hour == 0);
        CHECK(e0.day == 0);
    }

    TEST_CASE("WorkingSet: the windows forget in turn, reset forgets at once") {
        WorkingSet ws;
        const auto t0 = WorkingSet::Clock::now();
        ws.touch(1, 0, 8 * kMiB, t0);
        ws.touch(2, 0, 8 * kMiB, t0 + 10min);
        auto e = ws.estimate(t0 + 10min);
        CHECK_MESSAGE(near(e.five_minute, 8 * kMiB, 5), e.five_minute);
        CHECK_MESSAGE(near(e.hour, 16 * kMiB, 5), e.hour);
        CHECK_MESSAGE(near(e.day, 16 * kMiB, 5), e.day);
        e = ws.estimate(t0 + 90min);
        CHECK(e.five_minute == 0);
        CHECK(e.hour == 0);
        CHECK_MESSAGE(near(e.day, 16 * kMiB, 5), e.day);
        e = ws.estimate(t0 + 26h);
        CHECK(e.day == 0);
        // Slots are reused after a wrap: what they held before is gone.
        ws.touch(3, 0, 4096, t0 + 26h);
        CHECK(ws.estimate(t0 + 26h).day == 4096);
        ws.clear();
        CHECK(ws.estimate(t0 + 26h).day == 0);
        ws.touch(4, 0, 4096, t0 + 26h);
        CHECK(ws.estimate(t0 + 26h).five_minute == 4096);
    }

    TEST_CASE("WorkingSet: many threads touching at once count each block once") {
        WorkingSet ws;
        const auto t = WorkingSet::Clock::now();
        std::vector<std::thread> threads;
        for (int i = 0; i < 4; ++i)
            threads.emplace_back([&] {
                for (std::uint64_t off = 0; off < 32 * kMiB; off += 64 * 1024)
                    ws.touch(9, off, 64 * 1024, t);
            });
        for (auto& th : threads)
            th.join();
        const auto e = ws.estimate(t);
        CHECK_MESSAGE(near(e.five_minute, 32 * kMiB, 5), e.five_minute);
    }
}
