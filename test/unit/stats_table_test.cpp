// cli::render_table: the default output of `overcache stats`.
#include "cli/stats_table.hpp"

#include <doctest/doctest.h>

using overcache::cli::render_table;
using overcache::control::StatLines;

namespace {

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

} // namespace

TEST_SUITE("cli") {
    TEST_CASE("render_table: windows in columns, sizes in binary units") {
        const StatLines l{{"cache_mode", "writeback"},
                          {"cache_size", "256M"}, // the setting's line comes first
                          {"cache_state", "running"},
                          {"cache_hits", "30"},
                          {"cache_misses", "10"},
                          {"cache_hit_ratio", "75"},
                          {"cache_hit_bytes", "3145728"},
                          {"cache_size", "268435456"},
                          {"cache_used_bytes", "1536"},
                          {"dirty_data", "0"},
                          {"dirty_files", "1"},
                          {"buckets_total", "255"},
                          {"buckets_free", "250"},
                          {"buckets_clean", "4"},
                          {"bucket_age_min", "0"},
                          {"bucket_age_q25", "1"},
                          {"bucket_age_median", "2"},
                          {"bucket_age_q75", "3"},
                          {"bucket_age_max", "4"},
                          {"writeback_rate", "max"},
                          {"last_error", "-"},
                          {"five_minute.cache_hits", "3"},
                          {"hour.cache_hits", "20"},
                          {"day.cache_hits", "30"},
                          {"five_minute.cache_hit_ratio", "100"}};
        const std::string t = render_table(l, "/mnt/fast");
        INFO(t);
        CHECK(t.rfind("/mnt/fast: writeback, running\n", 0) == 0);
        CHECK(contains(t, "5 min"));
        CHECK(contains(t,
                       "\nhits                        3           20           30           30\n"));
        CHECK(contains(t,
                       "\nhit ratio                100%            -            -          75%\n"));
        CHECK(contains(t, "3.0 MiB"));
        CHECK(contains(t, "1.5 KiB used of 256.0 MiB"));
        CHECK(contains(t, "0 B in 1 file\n"));
        CHECK(contains(t, "250 free of 255, 4 clean"));
        CHECK(contains(t, "\nbucket age  last used 0 / 1 / 2 / 3 / 4 allocations ago"));
        CHECK(contains(t, "rate unlimited"));
        CHECK(!contains(t, "last error"));
        CHECK(!contains(t, "bypass")); // keys the mount does not have: no row
    }

    TEST_CASE("render_table: the cache device's latencies and congestion bypasses") {
        const StatLines l{{"cache_mode", "writethrough"},
                          {"cache_read_latency_us", "120"},
                          {"cache_write_latency_us", "3400"},
                          {"congested_bypasses", "7"}};
        const std::string t = render_table(l, "/m");
        INFO(t);
        CHECK(
            contains(t, "\ndevice      read 120 us, write 3400 us; 7 bypassed while congested\n"));
    }

    TEST_CASE("render_table: a mount without a cache") {
        CHECK(render_table({{"cache_mode", "none"}, {"last_error", "gc: no cache"}}, "/m") ==
              "/m: none\n\nlast error  gc: no cache\n");
    }
}
