// bg::WritebackRate and bg::WritebackPacer: the controller's rate at, below
// and above the target, its clamps, percent changes, the derivative's
// damping (against a simulated cache filled by a burst of writes), and the
// pacer's delays over many writes, all on a fake clock.
#include "bg/writeback_rate.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <doctest/doctest.h>
#include <random>
#include <vector>

using namespace std::chrono_literals;
using overcache::bg::dirty_target_bytes;
using overcache::bg::kUnlimitedRate;
using overcache::bg::PacerLimits;
using overcache::bg::RateInputs;
using overcache::bg::RateTuning;
using overcache::bg::WritebackPacer;
using overcache::bg::WritebackRate;

namespace {

constexpr std::uint64_t kMiB = 1u << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

RateInputs inputs(std::uint64_t dirty, unsigned percent = 10, std::uint64_t capacity = 10 * kGiB,
                  std::uint64_t minimum = 1 * kMiB) {
    RateInputs in;
    in.dirty_bytes = dirty;
    in.capacity_bytes = capacity;
    in.writeback_percent = percent;
    in.rate_minimum_bytes_per_s = minimum;
    return in;
}

// The rate a fresh controller gives on its first update: no derivative yet.
std::uint64_t first_rate(std::uint64_t dirty, unsigned percent = 10,
                         std::uint64_t maximum = kUnlimitedRate) {
    WritebackRate r(maximum);
    return r.update(inputs(dirty, percent), 1s);
}

// A cache whose dirty data grows by what is written to it and shrinks by
// what writeback writes back at the rate set at the start of each second.
struct Run {
    std::uint64_t peak_dirty = 0;
    std::vector<std::uint64_t> dirty; // at the start of each second
    std::vector<std::uint64_t> rate;  // chosen then
    std::vector<std::int64_t> proportional, derivative;
};

Run simulate(WritebackRate& ctl, std::uint64_t start_dirty, int seconds,
             std::uint64_t (*incoming)(int second)) {
    Run run;
    double dirty = static_cast<double>(start_dirty);
    for (int s = 0; s < seconds; ++s) {
        const auto d = static_cast<std::uint64_t>(dirty);
        const std::uint64_t rate = ctl.update(inputs(d), 1s);
        run.dirty.push_back(d);
        run.rate.push_back(rate);
        run.proportional.push_back(ctl.stats().proportional_bytes_per_s);
        run.derivative.push_back(ctl.stats().derivative_bytes_per_s);
        run.peak_dirty = std::max(run.peak_dirty, d);
        dirty += static_cast<double>(incoming(s));
        dirty = std::max(0.0, dirty - static_cast<double>(rate));
    }
    return run;
}

struct FakeClock {
    std::chrono::steady_clock::time_point t{std::chrono::hours(1000)};
    WritebackPacer::Clock fn() {
        return [this] { return t; };
    }
};

double seconds_of(std::chrono::nanoseconds d) {
    return std::chrono::duration<double>(d).count();
}

} // namespace

TEST_SUITE("writeback rate") {
    TEST_CASE("dirty_target_bytes is capacity * percent / 100, without overflow") {
        CHECK(dirty_target_bytes(1000, 10) == 100);
        CHECK(dirty_target_bytes(1000, 0) == 0);
        CHECK(dirty_target_bytes(1000, 100) == 1000);
        CHECK(dirty_target_bytes(1000, 250) == 1000); // capped at 100%
        CHECK(dirty_target_bytes(999, 50) == 499);
        CHECK(dirty_target_bytes(UINT64_MAX, 100) == UINT64_MAX);
        CHECK(dirty_target_bytes(UINT64_MAX, 50) == UINT64_MAX / 2);
    }

    TEST_CASE("at or below the target the rate is the minimum") {
        WritebackRate ctl(512 * kMiB);
        const std::uint64_t target = dirty_target_bytes(10 * kGiB, 10);
        for (std::uint64_t dirty : {std::uint64_t{0}, 10 * kMiB, target / 2, target}) {
            CAPTURE(dirty);
            CHECK(ctl.update(inputs(dirty), 1s) == 1 * kMiB);
            CHECK(ctl.stats().target_bytes == target);
        }
        // Fast growth below the target does not raise it either: the target
        // is the share dirty data may hold.
        CHECK(ctl.stats().derivative_bytes_per_s > 0);
        CHECK(ctl.rate_bytes_per_s() == 1 * kMiB);
        // Another minimum is taken at the next update.
        CHECK(ctl.update(inputs(target, 10, 10 * kGiB, 4 * kMiB), 1s) == 4 * kMiB);
    }

    TEST_CASE("above the target the rate grows with the dirty data") {
        const std::uint64_t target = dirty_target_bytes(10 * kGiB, 10);
        std::uint64_t previous = 1 * kMiB;
        for (std::uint64_t excess = 100 * kMiB; excess <= 2 * kGiB; excess += 100 * kMiB) {
            CAPTURE(excess);
            const std::uint64_t rate = first_rate(target + excess);
            CHECK(rate > previous);
            // No derivative yet: the excess retired in p_term_inverse_s (40 s).
            CHECK(static_cast<double>(rate) ==
                  doctest::Approx(static_cast<double>(excess) / 40).epsilon(1e-6));
            previous = rate;
        }
    }

    TEST_CASE("the rate is clamped to [minimum, maximum]") {
        const std::uint64_t target = dirty_target_bytes(10 * kGiB, 10);
        // Just above the target the proportional term is tiny: the minimum.
        CHECK(first_rate(target + 4096) == 1 * kMiB);
        // Far above it: full speed, and no more.
        CHECK(first_rate(9 * kGiB, 10, 100 * kMiB) == 100 * kMiB);
        // Unlimited full speed: whatever the terms say, even beyond any
        // real device.
        CHECK(static_cast<double>(first_rate(9 * kGiB)) ==
              doctest::Approx(static_cast<double>(9 * kGiB - target) / 40).epsilon(1e-9));
        WritebackRate huge;
        CHECK(huge.update(inputs(UINT64_MAX, 10, UINT64_MAX), 1s) > 1ull << 55);
        // A minimum above full speed cannot be had: full speed wins.
        WritebackRate slow(2 * kMiB);
        CHECK(slow.update(inputs(0, 10, 10 * kGiB, 8 * kMiB), 1s) == 2 * kMiB);
        CHECK(slow.update(inputs(9 * kGiB, 10, 10 * kGiB, 8 * kMiB), 1s) == 2 * kMiB);
    }

    TEST_CASE("writeback_percent moves the target; 0 means full speed") {
        WritebackRate ctl(200 * kMiB);
        const std::uint64_t dirty = 3 * kGiB; // 30% of the cache
        const std::uint64_t at10 = ctl.update(inputs(dirty, 10), 1s);
        CHECK(at10 > 1 * kMiB);
        const std::uint64_t at20 = ctl.update(inputs(dirty, 20), 1s);
        CHECK(at20 < at10);
        CHECK(at20 > 1 * kMiB);
        CHECK(ctl.update(inputs(dirty, 50), 1s) == 1 * kMiB);
        CHECK(ctl.stats().target_bytes == 5 * kGiB);
        CHECK(ctl.update(inputs(dirty, 0), 1s) == 200 * kMiB);
        CHECK(ctl.update(inputs(0, 0), 1s) == 200 * kMiB); // even with nothing dirty
        // The derivative follows the dirty bytes, not the error: a new
        // target is no jolt.
        CHECK(ctl.stats().derivative_bytes_per_s < 0);
        WritebackRate steady(200 * kMiB);
        steady.update(inputs(dirty, 10), 1s);
        steady.update(inputs(dirty, 10), 1s);
        steady.update(inputs(dirty, 30), 1s);
        CHECK(steady.stats().derivative_bytes_per_s == 0);
    }

    TEST_CASE("the derivative is the smoothed growth of dirty data") {
        RateTuning t;
        t.p_term_inverse_s = 40;
        t.d_term_s = 30;
        t.d_smooth_s = 10;
        WritebackRate ctl(kUnlimitedRate, t);
        const std::uint64_t base = 2 * kGiB;
        ctl.update(inputs(base), 1s);
        CHECK(ctl.stats().derivative_bytes_per_s == 0); // nothing to compare with yet
        // 100 MiB more in one second: smoothed, part of that growth counts.
        ctl.update(inputs(base + 100 * kMiB), 1s);
        const auto d1 = ctl.stats().derivative_bytes_per_s;
        const double raw_term = 30.0 * 100 * kMiB / 40;
        CHECK(d1 > 0);
        CHECK(static_cast<double>(d1) < raw_term);
        // The same growth again counts more; the rate rises above P alone.
        ctl.update(inputs(base + 200 * kMiB), 1s);
        const auto d2 = ctl.stats().derivative_bytes_per_s;
        CHECK(d2 > d1);
        CHECK(ctl.rate_bytes_per_s() >
              static_cast<std::uint64_t>(ctl.stats().proportional_bytes_per_s));
        // No time elapsed: nothing learnt about growth yet; the next update
        // measures the change over its second.
        ctl.update(inputs(base + 900 * kMiB), 0s);
        CHECK(ctl.stats().derivative_bytes_per_s == d2);
        ctl.update(inputs(base + 900 * kMiB), 1s);
        CHECK(ctl.stats().derivative_bytes_per_s > 2 * d2);
        // Dirty data steady: the growth fades.
        for (int i = 0; i < 100; ++i)
            ctl.update(inputs(base + 900 * kMiB), 1s);
        CHECK(ctl.stats().derivative_bytes_per_s < d2 / 100);
        // Shrinking: the derivative brakes, below the proportional term.
        ctl.update(inputs(base + 800 * kMiB), 1s);
        CHECK(ctl.stats().derivative_bytes_per_s < 0);
        CHECK(ctl.rate_bytes_per_s() <
              static_cast<std::uint64_t>(ctl.stats().proportional_bytes_per_s));
    }

    TEST_CASE("the derivative damps: a burst peaks lower, the drain brakes into the target") {
        // 20 s of writes at 200 MiB/s into a cache at its target, then none.
        auto burst = [](int s) -> std::uint64_t { return s < 20 ? 200 * kMiB : 0; };
        const std::uint64_t target = dirty_target_bytes(10 * kGiB, 10);
        RateTuning p_only;
        p_only.d_term_s = 0;
        WritebackRate p_ctl(kUnlimitedRate, p_only);
        WritebackRate pd_ctl(kUnlimitedRate, RateTuning{});
        const Run p = simulate(p_ctl, target, 600, burst);
        const Run pd = simulate(pd_ctl, target, 600, burst);

        // The excursion above the target is smaller with the derivative.
        const double p_over = static_cast<double>(p.peak_dirty - target);
        const double pd_over = static_cast<double>(pd.peak_dirty - target);
        CAPTURE(p_over);
        CAPTURE(pd_over);
        CHECK(pd_over < 0.85 * p_over);

        // While writes pour in, the derivative adds to the rate; once they
        // stop it brakes: the drain runs below the proportional term alone,
        // so dirty data eases into the target instead of being rushed at it.
        CHECK(pd.derivative[10] > 0);
        CHECK(pd.rate[10] > static_cast<std::uint64_t>(pd.proportional[10]));
        CHECK(pd.derivative[60] < 0);
        CHECK(pd.rate[60] < static_cast<std::uint64_t>(pd.proportional[60]));

        // Both return to the target within the run, and neither drops below
        // it by more than a second of the minimum rate: they meet it at the
        // minimum, not at speed.
        for (const Run* r : {&p, &pd}) {
            std::size_t cross = 20;
            while (cross < r->dirty.size() && r->dirty[cross] >= target)
                ++cross;
            REQUIRE(cross < r->dirty.size());
            CHECK(r->rate[cross - 1] == 1 * kMiB);
            CHECK(target - r->dirty[cross] <= 1 * kMiB);
        }
        // And the drain never stops early: every second above the target
        // writes at least the minimum.
        for (std::size_t s = 0; s < pd.dirty.size(); ++s)
            CHECK(pd.rate[s] >= 1 * kMiB);
    }

    TEST_CASE("stats hold the last update's numbers") {
        WritebackRate ctl(64 * kMiB);
        CHECK(ctl.stats().updates == 0);
        CHECK(ctl.rate_bytes_per_s() == 0);
        CHECK(ctl.maximum_bytes_per_s() == 64 * kMiB);
        const std::uint64_t target = dirty_target_bytes(10 * kGiB, 10);
        ctl.update(inputs(target + 400 * kMiB), 1s);
        const auto& s = ctl.stats();
        CHECK(s.updates == 1);
        CHECK(s.dirty_bytes == target + 400 * kMiB);
        CHECK(s.target_bytes == target);
        CHECK(s.proportional_bytes_per_s == static_cast<std::int64_t>(10 * kMiB));
        CHECK(s.derivative_bytes_per_s == 0);
        CHECK(s.rate_bytes_per_s == 10 * kMiB);
        ctl.update(inputs(0), 1s);
        CHECK(ctl.stats().proportional_bytes_per_s < 0); // below the target
        CHECK(ctl.stats().rate_bytes_per_s == 1 * kMiB);
    }
}

TEST_SUITE("writeback pacer") {
    TEST_CASE("delays give the configured rate over many writes") {
        FakeClock clock;
        const std::uint64_t rate = 4 * kMiB;
        WritebackPacer pacer(rate, clock.fn());
        std::mt19937_64 rng(7);
        std::uniform_int_distribution<std::uint64_t> size(4096, 512 * 1024);
        const auto start = clock.t;
        std::uint64_t written = 0;
        for (int i = 0; i < 5000; ++i) {
            const std::uint64_t n = size(rng);
            written += n;
            auto d = pacer.delay_for(n);
            while (d > 0ns) {
                CHECK(d <= 1s);
                clock.t += d;
                d = pacer.delay();
            }
        }
        const double elapsed = seconds_of(clock.t - start);
        CHECK(static_cast<double>(written) / elapsed ==
              doctest::Approx(static_cast<double>(rate)).epsilon(0.001));
    }

    TEST_CASE("a write larger than a second's worth is paid over several capped delays") {
        FakeClock clock;
        WritebackPacer pacer(1 * kMiB, clock.fn());
        auto d = pacer.delay_for(8 * kMiB);
        int sleeps = 0;
        while (d > 0ns) {
            CHECK(d <= 1s);
            clock.t += d;
            ++sleeps;
            d = pacer.delay();
        }
        CHECK(sleeps == 8);
        CHECK(pacer.owed_bytes() <= 0);
    }

    TEST_CASE("a new rate applies at once to what is owed") {
        FakeClock clock;
        WritebackPacer pacer(1 * kMiB, clock.fn());
        CHECK(pacer.delay_for(10 * kMiB) == 1s); // capped: 10 s are owed
        pacer.set_rate(100 * kMiB);
        CHECK(seconds_of(pacer.delay()) == doctest::Approx(0.1).epsilon(1e-6));
        pacer.set_rate(kUnlimitedRate);
        CHECK(pacer.delay() == 0ns);
        CHECK(pacer.delay_for(kGiB) == 0ns);
        pacer.set_rate(0); // stopped: wait, and ask again
        CHECK(pacer.delay() == 1s);
        CHECK(pacer.delay_for(1) == 1s);
    }

    TEST_CASE("idle time saves up at most a second's worth") {
        FakeClock clock;
        WritebackPacer pacer(2 * kMiB, clock.fn());
        CHECK(pacer.delay_for(64 * 1024) > 0ns); // no credit to start with
        clock.t += std::chrono::hours(1);
        CHECK(pacer.owed_bytes() == doctest::Approx(-2.0 * kMiB));
        CHECK(pacer.delay_for(2 * kMiB) == 0ns); // the saved second
        CHECK(seconds_of(pacer.delay_for(kMiB)) == doctest::Approx(0.5).epsilon(1e-6));
        // A lower rate keeps less credit.
        clock.t += std::chrono::hours(1);
        pacer.set_rate(1 * kMiB);
        CHECK(pacer.owed_bytes() == doctest::Approx(-1.0 * kMiB));
    }

    TEST_CASE("a writer slower than the rate is not delayed") {
        FakeClock clock;
        WritebackPacer pacer(10 * kMiB, clock.fn());
        clock.t += 1s; // a second's credit
        for (int i = 0; i < 100; ++i) {
            CHECK(pacer.delay_for(1 * kMiB) == 0ns);
            clock.t += 200ms; // the backing takes 200 ms a MiB: 5 MiB/s
        }
    }

    TEST_CASE("limits are parameters, and a clock stepping back repays nothing") {
        FakeClock clock;
        PacerLimits limits;
        limits.max_delay = 250ms;
        limits.max_credit = 0ns;
        WritebackPacer pacer(1 * kMiB, clock.fn(), limits);
        CHECK(pacer.delay_for(kMiB) == 250ms);
        clock.t -= 10s;
        CHECK(pacer.owed_bytes() == doctest::Approx(1.0 * kMiB));
        clock.t += 20s;
        CHECK(pacer.owed_bytes() == doctest::Approx(0.0)); // no credit kept
    }
}
