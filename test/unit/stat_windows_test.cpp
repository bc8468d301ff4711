// control::StatWindows: counts enter a window when they happen and leave it
// once the window has moved past them, resets never make a window go
// negative or jump, and memory stays bounded over any uptime. Time is a
// fake clock moved by the test.
#include "control/stat_sampler.hpp"
#include "control/stat_windows.hpp"

#include <atomic>
#include <doctest/doctest.h>
#include <thread>
#include <vector>

using overcache::control::StatLines;
using overcache::control::StatSampler;
using overcache::control::StatWindows;
using namespace std::chrono_literals;

namespace {

StatLines counters(std::uint64_t hits, std::uint64_t misses) {
    return {{"cache_mode", "writeback"},
            {"cache_hits", std::to_string(hits)},
            {"cache_misses", std::to_string(misses)},
            {"writeback_rate", "max"}};
}

std::string value(const StatLines& lines, const std::string& key) {
    for (const auto& [k, v] : lines)
        if (k == key)
            return v;
    return "(none)";
}

const StatWindows::TimePoint t0{std::chrono::hours(1000)};

} // namespace

TEST_SUITE("control") {
    TEST_CASE("StatWindows: a count enters every window and leaves each in turn") {
        StatWindows w;
        w.sample(t0, counters(0, 0));
        // 10 hits at 5 s; the sampler runs every 10 s from then on.
        StatLines live = counters(10, 0);
        CHECK(w.increase("cache_hits", 5min, t0 + 5s, live) == 10);
        CHECK(w.increase("cache_hits", 1h, t0 + 5s, live) == 10);
        CHECK(w.increase("cache_hits", 24h, t0 + 5s, live) == 10);
        auto run_to = [&](StatWindows::TimePoint& at, StatWindows::TimePoint until) {
            while (at + 10s <= until) {
                at += 10s;
                w.sample(at, live);
            }
        };
        StatWindows::TimePoint at = t0;
        run_to(at, t0 + 300s);
        CHECK(w.increase("cache_hits", 5min, t0 + 300s, live) == 10);
        run_to(at, t0 + 310s);
        CHECK(w.increase("cache_hits", 5min, t0 + 310s, live) == 0);
        CHECK(w.increase("cache_hits", 1h, t0 + 310s, live) == 10);
        run_to(at, t0 + 3600s);
        CHECK(w.increase("cache_hits", 1h, t0 + 3600s, live) == 10);
        run_to(at, t0 + 3660s);
        CHECK(w.increase("cache_hits", 1h, t0 + 3660s, live) == 0);
        CHECK(w.increase("cache_hits", 24h, t0 + 3660s, live) == 10);
        run_to(at, t0 + 24h + 60s);
        CHECK(w.increase("cache_hits", 24h, t0 + 24h + 60s, live) == 0);
        CHECK(w.increase("cache_misses", 24h, t0 + 24h + 60s, live) == 0);
    }

    TEST_CASE("StatWindows: the live values count at once, between samples") {
        StatWindows w;
        w.sample(t0, counters(100, 50));
        w.sample(t0 + 10s, counters(110, 50));
        CHECK(w.increase("cache_hits", 5min, t0 + 12s, counters(115, 60)) == 15);
        CHECK(w.increase("cache_misses", 5min, t0 + 12s, counters(115, 60)) == 10);
        CHECK(w.increase("not_followed", 5min, t0 + 12s, counters(115, 60)) == 0);
    }

    TEST_CASE("StatWindows: a counter reset is a restart from zero") {
        StatWindows w;
        w.sample(t0, counters(100, 0));
        w.sample(t0 + 10s, counters(130, 0)); // +30
        w.sample(t0 + 20s, counters(5, 0));   // reset, then +5
        w.sample(t0 + 30s, counters(7, 0));   // +2
        CHECK(w.increase("cache_hits", 5min, t0 + 30s, counters(7, 0)) == 37);
        // A live value below the last sample: reset again since.
        CHECK(w.increase("cache_hits", 5min, t0 + 31s, counters(6, 0)) == 43);
        CHECK(w.increase("cache_hits", 5min, t0 + 31s, counters(0, 0)) == 37);
        // Missing or not a number: the last value stands.
        w.sample(t0 + 40s, {{"cache_hits", "x"}});
        w.sample(t0 + 50s, {});
        CHECK(w.increase("cache_hits", 5min, t0 + 50s, counters(9, 0)) == 39);
    }

    TEST_CASE("StatWindows: memory is bounded whatever the uptime") {
        StatWindows w;
        StatWindows::TimePoint at = t0;
        std::uint64_t hits = 0;
        for (int i = 0; i < 3 * 24 * 60 * 60 / 5; ++i) { // three days, a sample each 5 s
            at += 5s;
            hits += 1;
            w.sample(at, counters(hits, 0));
            REQUIRE(w.samples_held() <= StatWindows::kFineSamples + StatWindows::kCoarseSamples);
        }
        CHECK(w.samples_held() == StatWindows::kFineSamples + StatWindows::kCoarseSamples);
        // One hit each 5 s: 60 in five minutes, 720 an hour, 17280 a day,
        // less at most a step's worth (10 s, then a minute): the baseline is
        // the oldest sample inside the window.
        const StatLines live = counters(hits, 0);
        const auto five = w.increase("cache_hits", 5min, at, live);
        const auto hour = w.increase("cache_hits", 1h, at, live);
        const auto day = w.increase("cache_hits", 24h, at, live);
        CHECK(five <= 60);
        CHECK(five >= 60 - 2);
        CHECK(hour <= 720);
        CHECK(hour >= 720 - 12);
        CHECK(day <= 17280);
        CHECK(day >= 17280 - 12);
    }

    TEST_CASE("StatWindows: a stalled sampler bounds the window by its last sample") {
        StatWindows w;
        w.sample(t0, counters(0, 0));
        w.sample(t0 + 10s, counters(4, 0));
        // Nothing for ten minutes: the five-minute window counts since the
        // newest sample there is.
        CHECK(w.increase("cache_hits", 5min, t0 + 10min, counters(9, 0)) == 5);
    }

    TEST_CASE("StatWindows: lines for each window, the hit ratio as a percentage") {
        StatWindows w;
        w.sample(t0, counters(0, 0));
        const StatLines live = w.window_lines(t0 + 1s, counters(3, 1));
        CHECK(value(live, "cache_hits") == "(none)"); // only window lines
        CHECK(value(live, "five_minute.cache_hits") == "3");
        CHECK(value(live, "hour.cache_misses") == "1");
        CHECK(value(live, "day.cache_hits") == "3");
        CHECK(value(live, "five_minute.cache_hit_ratio") == "75");
        CHECK(value(live, "day.cache_hit_ratio") == "75");
        // Only counters the source has: no gc_runs here, nothing for text.
        CHECK(value(live, "hour.gc_runs") == "(none)");
        CHECK(value(live, "hour.cache_mode") == "(none)");
        CHECK(value(live, "hour.writeback_rate") == "(none)");

        const StatLines none = w.window_lines(t0 + 2s, counters(0, 0));
        CHECK(value(none, "hour.cache_hit_ratio") == "0");

        CHECK(w.window_lines(t0 + 2s, {{"cache_mode", "none"}}).empty());
    }

    TEST_CASE("StatWindows: windowed counters are counters") {
        for (const auto& c : overcache::control::windowed_counters())
            CHECK_MESSAGE(overcache::control::is_counter(c), c);
        CHECK(!overcache::control::is_counter("dirty_data"));
        CHECK(!overcache::control::is_counter("cache_hit_ratio"));
    }

    TEST_CASE("StatSampler: samples on its own while readers add windows; stops at once" *
              doctest::timeout(10)) {
        std::atomic<std::uint64_t> hits{0};
        std::atomic<int> calls{0};
        StatSampler sampler(
            [&] {
                ++calls;
                return counters(hits.load(), 0);
            },
            std::chrono::milliseconds(1));
        sampler.start();
        CHECK(calls.load() >= 1); // the first sample, before start() returns
        std::vector<std::thread> readers;
        std::atomic<bool> bad{false};
        for (int r = 0; r < 3; ++r)
            readers.emplace_back([&] {
                for (int i = 0; i < 200; ++i) {
                    hits.fetch_add(1);
                    const StatSampler::Reading got = sampler.read();
                    // A window never holds more than the total beside it.
                    if (std::stoull(value(got.windows, "five_minute.cache_hits")) >
                        std::stoull(value(got.lines, "cache_hits")))
                        bad = true;
                }
            });
        for (auto& t : readers)
            t.join();
        CHECK(!bad.load());
        while (calls.load() < 3)
            std::this_thread::yield();
        sampler.stop();
        const int after = calls.load();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        CHECK(calls.load() == after); // no sample after stop()
        sampler.stop();               // idempotent
    }

    TEST_CASE("StatSampler: reset_stats counts the counters from the reset, windows start empty") {
        std::uint64_t hits = 30, misses = 10;
        StatSampler sampler([&] {
            StatLines l = counters(hits, misses);
            l.emplace_back("cache_hit_ratio",
                           std::to_string(hits + misses == 0 ? 0 : hits * 100 / (hits + misses)));
            l.emplace_back("dirty_data", "4096"); // a level, not a counter
            return l;
        });
        sampler.start();
        hits += 10;
        auto r = sampler.read();
        CHECK(value(r.lines, "cache_hits") == "40");
        CHECK(value(r.windows, "five_minute.cache_hits") == "10");
        sampler.reset();
        r = sampler.read();
        CHECK(value(r.lines, "cache_hits") == "0");
        CHECK(value(r.lines, "cache_misses") == "0");
        CHECK(value(r.lines, "cache_hit_ratio") == "0");
        CHECK(value(r.lines, "dirty_data") == "4096");
        CHECK(value(r.windows, "five_minute.cache_hits") == "0");
        hits += 3;
        misses += 1;
        r = sampler.read();
        CHECK(value(r.lines, "cache_hits") == "3");
        CHECK(value(r.lines, "cache_misses") == "1");
        CHECK(value(r.lines, "cache_hit_ratio") == "75");
        CHECK(value(r.windows, "five_minute.cache_hits") == "3");
        CHECK(value(r.lines, "cache_mode") == "writeback"); // other lines pass as they are
        sampler.stop();
    }
}
