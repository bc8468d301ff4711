// store::ErrorBudget: a decaying error count that reports its crossing of
// the limit exactly once, on a fake clock.
#include "overcache/store/error_budget.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <doctest/doctest.h>
#include <memory>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using overcache::store::ErrorBudget;
using overcache::store::ErrorBudgetParams;

namespace {

struct FakeClock {
    std::shared_ptr<std::atomic<ErrorBudget::Clock::rep>> ticks =
        std::make_shared<std::atomic<ErrorBudget::Clock::rep>>(1'000'000'000);
    void advance(ErrorBudget::Clock::duration d) { *ticks += d.count(); }
    ErrorBudget::NowFn fn() const {
        return [t = ticks] {
            return ErrorBudget::Clock::time_point(ErrorBudget::Clock::duration(t->load()));
        };
    }
};

ErrorBudgetParams params(double limit, ErrorBudget::Clock::duration halflife) {
    ErrorBudgetParams p;
    p.limit = limit;
    p.halflife = halflife;
    return p;
}

} // namespace

TEST_SUITE("store") {
    TEST_CASE("store::ErrorBudget: errors spread thinly never spend it") {
        FakeClock clock;
        ErrorBudget b(params(8, 60s), clock.fn());
        // One error every 20 s with a 60 s half-life settles at
        // 1 / (1 - 2^(-1/3)) ~= 4.8 errors.
        for (int i = 0; i < 1000; ++i) {
            REQUIRE_FALSE(b.record_error());
            clock.advance(20s);
        }
        CHECK_FALSE(b.degraded());
        CHECK(b.error_count() < 5);
    }

    TEST_CASE("store::ErrorBudget: a steady rate above the budget spends it") {
        FakeClock clock;
        ErrorBudget b(params(8, 60s), clock.fn());
        // Every 5 s settles at ~17.8 errors: past the limit, once.
        int crossings = 0;
        for (int i = 0; i < 1000; ++i) {
            crossings += b.record_error() ? 1 : 0;
            clock.advance(5s);
        }
        CHECK(crossings == 1);
        CHECK(b.degraded());
    }

    TEST_CASE("store::ErrorBudget: a burst trips it exactly once") {
        FakeClock clock;
        ErrorBudget b(params(8, 60s), clock.fn());
        for (int i = 0; i < 8; ++i)
            CHECK_FALSE(b.record_error()); // 8 is not past the limit
        CHECK_FALSE(b.degraded());
        CHECK(b.record_error());
        CHECK(b.degraded());
        for (int i = 0; i < 100; ++i)
            CHECK_FALSE(b.record_error());
        // Degraded stays, even once the count has decayed away.
        clock.advance(24h);
        CHECK(b.error_count() < 1e-6);
        CHECK(b.degraded());
        CHECK_FALSE(b.record_error());
    }

    TEST_CASE("store::ErrorBudget: the count halves every half-life") {
        FakeClock clock;
        ErrorBudget b(params(8, 60s), clock.fn());
        for (int i = 0; i < 8; ++i)
            REQUIRE_FALSE(b.record_error());
        CHECK(b.error_count() == doctest::Approx(8));
        clock.advance(60s);
        CHECK(b.error_count() == doctest::Approx(4));
        clock.advance(30s);
        CHECK(b.error_count() == doctest::Approx(4 / std::sqrt(2.0)));
        clock.advance(30s);
        CHECK(b.error_count() == doctest::Approx(2));
        // Room for six more, not seven.
        for (int i = 0; i < 6; ++i)
            REQUIRE_FALSE(b.record_error());
        CHECK(b.record_error());
    }

    TEST_CASE("store::ErrorBudget: reset() clears it and a new crossing reports again") {
        FakeClock clock;
        ErrorBudget b(params(2, 60s), clock.fn());
        CHECK_FALSE(b.record_error());
        CHECK_FALSE(b.record_error());
        CHECK(b.record_error());
        b.reset();
        CHECK_FALSE(b.degraded());
        CHECK(b.error_count() == 0);
        CHECK_FALSE(b.record_error());
        CHECK_FALSE(b.record_error());
        CHECK(b.record_error());
    }

    TEST_CASE("store::ErrorBudget: limit 0 trips on the first error; half-life 0 never decays") {
        FakeClock clock;
        ErrorBudget first(params(0, 60s), clock.fn());
        CHECK(first.record_error());
        CHECK(first.degraded());

        ErrorBudget forever(params(3, 0s), clock.fn());
        for (int i = 0; i < 3; ++i) {
            REQUIRE_FALSE(forever.record_error());
            clock.advance(24h);
        }
        CHECK(forever.error_count() == 3);
        CHECK(forever.record_error());
    }

    TEST_CASE("store::ErrorBudget: a clock that steps back decays nothing") {
        FakeClock clock;
        ErrorBudget b(params(8, 60s), clock.fn());
        clock.advance(60s);
        REQUIRE_FALSE(b.record_error());
        clock.advance(-30s);
        CHECK(b.error_count() == 1);
        REQUIRE_FALSE(b.record_error());
        CHECK(b.error_count() == 2);
    }

    TEST_CASE("store::ErrorBudget: many threads, exactly one crossing" * doctest::timeout(30)) {
        // The real clock: with a one-hour half-life nothing decays in the
        // test's lifetime, so the 101st error crosses.
        ErrorBudget b(params(100, 1h));
        constexpr int kThreads = 8;
        std::atomic<int> crossings{0};
        std::atomic<int> seen_degraded{0};
        std::vector<std::thread> ts;
        for (int t = 0; t < kThreads; ++t)
            ts.emplace_back([&] {
                for (int i = 0; i < 500; ++i) {
                    if (b.record_error())
                        ++crossings;
                    if (b.degraded())
                        ++seen_degraded;
                }
            });
        for (auto& t : ts)
            t.join();
        CHECK(crossings == 1);
        CHECK(b.degraded());
        CHECK(seen_degraded > 0);
    }
}
