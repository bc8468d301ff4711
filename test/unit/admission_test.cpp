// promote_after_hits' filter: a range is admitted at its Nth recent miss,
// old misses age out by generations, and memory stays bounded.
#include "cache/admission.hpp"

#include <doctest/doctest.h>

using overcache::cache::MissFilter;
using namespace std::chrono_literals;

TEST_SUITE("cache") {
    TEST_CASE("admission: 1 admits at once and counts nothing") {
        MissFilter f(16, 10min);
        for (std::uint64_t r = 0; r < 100; ++r)
            CHECK(f.admit(r, 1));
        CHECK(f.tracked() == 0);
    }

    TEST_CASE("admission: a range is admitted at its Nth miss, then starts over") {
        MissFilter f(1024, 10min);
        const auto t = MissFilter::Clock::now();
        CHECK_FALSE(f.admit(7, 3, t));
        CHECK_FALSE(f.admit(7, 3, t + 1s));
        CHECK_FALSE(f.admit(8, 3, t + 1s)); // another range counts on its own
        CHECK(f.admit(7, 3, t + 2s));
        CHECK_FALSE(f.admit(7, 3, t + 3s)); // admitted ranges are forgotten
        CHECK(f.tracked() == 2);
    }

    TEST_CASE("admission: misses older than two generations are forgotten") {
        MissFilter f(1024, 10min);
        const auto t = MissFilter::Clock::now();
        CHECK_FALSE(f.admit(1, 2, t));
        // One generation later the miss is still recent...
        CHECK(f.admit(1, 2, t + 11min));
        CHECK_FALSE(f.admit(2, 2, t + 11min));
        // ...two generations later it is gone.
        CHECK_FALSE(f.admit(3, 2, t + 22min));
        CHECK_FALSE(f.admit(2, 2, t + 33min));
    }

    TEST_CASE("admission: a scan of many ranges ages the counts out, memory bounded") {
        MissFilter f(100, 10min);
        const auto t = MissFilter::Clock::now();
        CHECK_FALSE(f.admit(5, 2, t));
        // A one-off scan: each range once, many more than the capacity.
        for (std::uint64_t r = 1000; r < 10000; ++r) {
            CHECK_FALSE(f.admit(r, 2, t));
            CHECK(f.tracked() <= 201);
        }
        // Range 5's miss went with the generations the scan filled.
        CHECK_FALSE(f.admit(5, 2, t));
    }
}
