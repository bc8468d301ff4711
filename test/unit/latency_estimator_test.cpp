// store::LatencyEstimator: the smoothed cache device latency behind the
// congestion bypass, on explicit time points (no sleeps).
#include "overcache/store/latency_estimator.hpp"

#include <chrono>
#include <cstdint>
#include <doctest/doctest.h>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using overcache::store::LatencyEstimator;
using Clock = LatencyEstimator::Clock;

namespace {

// Feeds `n` samples of `lat` for `bytes`, 1 ms apart, from `t`; returns the
// time of the last one.
Clock::time_point feed(LatencyEstimator& e, Clock::time_point t, int n, Clock::duration lat,
                       std::size_t bytes = 4096) {
    for (int i = 0; i < n; ++i) {
        t += 1ms;
        e.record(lat, bytes, t);
    }
    return t;
}

} // namespace

TEST_SUITE("store") {
    TEST_CASE("store::LatencyEstimator: nothing measured reads as 0") {
        LatencyEstimator e;
        CHECK(e.estimate_us(Clock::now()) == 0);
    }

    TEST_CASE("store::LatencyEstimator: a steady latency is what it settles at") {
        LatencyEstimator e;
        const auto t = feed(e, Clock::time_point{} + 1h, 200, 300us);
        const auto est = e.estimate_us(t);
        CHECK(est >= 290);
        CHECK(est <= 310);
    }

    TEST_CASE("store::LatencyEstimator: one slow I/O among fast ones does not trip 2 ms") {
        LatencyEstimator e;
        auto t = feed(e, Clock::time_point{} + 1h, 100, 100us);
        t += 1ms;
        e.record(1s, 4096, t); // a hiccup ten thousand times the usual
        CHECK(e.estimate_us(t) < 2000);
        // ... and fast I/O brings it back.
        t = feed(e, t, 50, 100us);
        CHECK(e.estimate_us(t) < 150);
    }

    TEST_CASE("store::LatencyEstimator: a run of slow I/Os trips it within a few") {
        LatencyEstimator e;
        auto t = feed(e, Clock::time_point{} + 1h, 100, 100us);
        int n = 0;
        while (e.estimate_us(t) <= 2000 && n < 100) {
            t += 1ms;
            e.record(50ms, 4096, t);
            ++n;
        }
        CHECK(n <= 10);
        CHECK(n >= 3); // not at the first one
    }

    TEST_CASE("store::LatencyEstimator: a cold start needs a run too") {
        LatencyEstimator e;
        auto t = Clock::time_point{} + 1h;
        t += 1ms;
        e.record(5ms, 4096, t);
        CHECK(e.estimate_us(t) < 2000);
    }

    TEST_CASE("store::LatencyEstimator: large transfers are normalised to 64K") {
        LatencyEstimator big, small;
        // 1 MiB in 4 ms is 64K in 250 us: a fast device, not a congested one.
        const auto t = feed(big, Clock::time_point{} + 1h, 100, 4ms, 1u << 20);
        CHECK(big.estimate_us(t) >= 240);
        CHECK(big.estimate_us(t) <= 260);
        // Small ones are not scaled up.
        const auto t2 = feed(small, Clock::time_point{} + 1h, 100, 100us, 512);
        CHECK(small.estimate_us(t2) >= 95);
        CHECK(small.estimate_us(t2) <= 105);
    }

    TEST_CASE("store::LatencyEstimator: with no I/O it decays, so a bypassed device recovers") {
        LatencyEstimator e;
        auto t = feed(e, Clock::time_point{} + 1h, 100, 50ms);
        const auto congested = e.estimate_us(t);
        CHECK(congested > 40000);
        // Not within the grace: a slow device used at a slow pace stays slow.
        CHECK(e.estimate_us(t + LatencyEstimator::kIdleGrace) == congested);
        // Then a half-life of one quarter second.
        const auto later =
            e.estimate_us(t + LatencyEstimator::kIdleGrace + LatencyEstimator::kIdleHalfLife);
        CHECK(later >= congested / 2 - 1000);
        CHECK(later <= congested / 2 + 1000);
        // Five more seconds idle: 2^-20 of 50 ms is below 1 us.
        CHECK(e.estimate_us(t + 6s) == 0);
        // Measuring again starts from idle, not from the old congestion.
        t += 6s;
        e.record(100us, 4096, t);
        CHECK(e.estimate_us(t) < 10);
    }

    TEST_CASE("store::LatencyEstimator: slow I/O at a slow pace stays congested") {
        LatencyEstimator e;
        auto t = Clock::time_point{} + 1h;
        // One 40 ms write every 400 ms (each waits for the index as well).
        for (int i = 0; i < 40; ++i) {
            t += 400ms;
            e.record(40ms, 64 * 1024, t);
        }
        CHECK(e.estimate_us(t) > 30000);
    }

    TEST_CASE("store::LatencyEstimator: a time before the last sample does not raise it") {
        LatencyEstimator e;
        const auto t = feed(e, Clock::time_point{} + 1h, 50, 1ms);
        CHECK(e.estimate_us(t - 10s) == e.estimate_us(t));
    }

    TEST_CASE("store::LatencyEstimator: concurrent recorders and readers" * doctest::timeout(10)) {
        LatencyEstimator e;
        std::vector<std::thread> threads;
        for (int i = 0; i < 4; ++i)
            threads.emplace_back([&e] {
                for (int k = 0; k < 10000; ++k) {
                    e.record(200us, 4096);
                    (void)e.estimate_us();
                }
            });
        for (auto& th : threads)
            th.join();
        const auto est = e.estimate_us();
        CHECK(est > 100);
        CHECK(est <= 200);
    }
}
