// control::parse_stats, render_json and render_prometheus: the formats
// `overcache stats --json` and `--prometheus` print. The mount test feeds
// the real outputs to python3's json and to promtool; here the rules.
#include "control/stats_export.hpp"

#include <cstdio>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fstream>
#include <unistd.h>

using namespace overcache::control;

TEST_SUITE("control") {
    TEST_CASE("parse_stats: lines split at the first space") {
        const StatLines l = parse_stats("a 1\nlast_error set x: bad value\n\nlone\nb  2");
        REQUIRE(l.size() == 4);
        CHECK(l[0] == StatLines::value_type{"a", "1"});
        CHECK(l[1] == StatLines::value_type{"last_error", "set x: bad value"});
        CHECK(l[2] == StatLines::value_type{"lone", ""});
        CHECK(l[3] == StatLines::value_type{"b", " 2"});
        CHECK(render_stats(parse_stats("x 1\ny two words\n")) == "x 1\ny two words\n");
    }

    TEST_CASE("render_json: numbers as numbers, '-' as null, text escaped") {
        const StatLines l{{"cache_hits", "12"}, {"cache_mode", "writeback"},
                          {"last_error", "-"},  {"writeback_rate", "max"},
                          {"odd", "007"},       {"neg", "-3"},
                          {"frac", "1.5"},      {"q\"k", "a\\b\"c\nd\te\x01"}};
        CHECK(render_json(l) == "{\"cache_hits\": 12, \"cache_mode\": \"writeback\", "
                                "\"last_error\": null, \"writeback_rate\": \"max\", "
                                "\"odd\": \"007\", \"neg\": -3, \"frac\": 1.5, "
                                "\"q\\\"k\": \"a\\\\b\\\"c\\nd\\te\\u0001\"}\n");
        CHECK(render_json({}) == "{}\n");
    }

    TEST_CASE("render_prometheus: counters, gauges, units, windows, info") {
        const StatLines l{{"cache_mode", "writeback"},
                          {"cache_state", "running"},
                          {"cache_hits", "7"},
                          {"cache_hit_ratio", "75"},
                          {"dirty_data", "4096"},
                          {"cache_miss_bytes", "123456789012345678"},
                          {"buckets_total", "64"},
                          {"foreground_wait_max_ms", "1500"},
                          {"writeback_rate", "max"},
                          {"last_error", "set x: no"},
                          {"five_minute.cache_hits", "3"},
                          {"hour.cache_hits", "5"},
                          {"five_minute.cache_hit_ratio", "50"}};
        const std::string p = render_prometheus(l, "/mnt/fast");
        const std::string mp = "{mountpoint=\"/mnt/fast\"";
        CHECK(p.find("# HELP overcache_cache_hits_total ") != std::string::npos);
        CHECK(p.find("# TYPE overcache_cache_hits_total counter\n") != std::string::npos);
        CHECK(p.find("overcache_cache_hits_total" + mp + "} 7\n") != std::string::npos);
        CHECK(p.find("# TYPE overcache_dirty_data gauge\n") != std::string::npos);
        CHECK(p.find("overcache_dirty_data" + mp + "} 4096\n") != std::string::npos);
        // Digits as they are, exact however large.
        CHECK(p.find("overcache_cache_miss_bytes_total" + mp + "} 123456789012345678\n") !=
              std::string::npos);
        CHECK(p.find("overcache_cache_hit_ratio" + mp + "} 0.75\n") != std::string::npos);
        // A gauge never ends in _total; units in seconds.
        CHECK(p.find("overcache_buckets" + mp + "} 64\n") != std::string::npos);
        CHECK(p.find("overcache_buckets_total") == std::string::npos);
        CHECK(p.find("overcache_foreground_wait_max_seconds" + mp + "} 1.5\n") !=
              std::string::npos);
        CHECK(p.find("overcache_writeback_rate" + mp + "} +Inf\n") != std::string::npos);
        CHECK(p.find("last_error") == std::string::npos);
        // Windows: one family, a label each.
        CHECK(p.find("# TYPE overcache_window_cache_hits gauge\n"
                     "overcache_window_cache_hits" +
                     mp +
                     ",window=\"five_minute\"} 3\n"
                     "overcache_window_cache_hits" +
                     mp + ",window=\"hour\"} 5\n") != std::string::npos);
        CHECK(p.find("overcache_window_cache_hit_ratio" + mp + ",window=\"five_minute\"} 0.5\n") !=
              std::string::npos);
        CHECK(p.find("overcache_info" + mp +
                     ",cache_mode=\"writeback\",cache_state=\"running\"} 1\n") !=
              std::string::npos);
    }

    TEST_CASE("render_prometheus: congestion latencies in seconds, its bypasses a counter") {
        const StatLines l{{"cache_read_latency_us", "2500"},
                          {"congested_bypasses", "4"},
                          {"congested_write_threshold_us", "20000"}};
        const std::string p = render_prometheus(l, "/m");
        INFO(p);
        CHECK(p.find("# TYPE overcache_cache_read_latency_seconds gauge\n"
                     "overcache_cache_read_latency_seconds{mountpoint=\"/m\"} 0.0025\n") !=
              std::string::npos);
        CHECK(p.find("# TYPE overcache_congested_bypasses_total counter\n") != std::string::npos);
        CHECK(p.find("overcache_congested_write_threshold_seconds{mountpoint=\"/m\"} 0.02\n") !=
              std::string::npos);
    }

    TEST_CASE("render_prometheus: label values escaped, names sanitized, one TYPE a name") {
        const StatLines l{{"weird-key.x:y", "1"}, {"weird_key_x_y", "2"}, {"cache_mode", "a\"b"}};
        const std::string p = render_prometheus(l, "/mnt/a \"q\"\\b\nc");
        const std::string mp = "{mountpoint=\"/mnt/a \\\"q\\\"\\\\b\\nc\"";
        CHECK(p.find("overcache_weird_key_x_y" + mp + "} 1\n") != std::string::npos);
        CHECK(p.find("} 2\n") == std::string::npos); // the same series twice: the first wins
        std::size_t types = 0;
        for (std::size_t at = 0;
             (at = p.find("# TYPE overcache_weird_key_x_y ", at)) != std::string::npos; ++at)
            ++types;
        CHECK(types == 1);
        CHECK(p.find(",cache_mode=\"a\\\"b\"} 1\n") != std::string::npos);
        for (const char c : p)
            CHECK(c != '\0');
    }

    TEST_CASE("render_json and render_prometheus: text that is not UTF-8 becomes U+FFFD") {
        const std::string bad = "a\xff\xc3(\xed\xa0\x80z\xc3\xa9\xf0\x9f\x98\x80";
        const std::string fixed = "a\xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD"
                                  "\xEF\xBF\xBDz\xc3\xa9\xf0\x9f\x98\x80";
        CHECK(render_json({{"k", bad}}) == "{\"k\": \"" + fixed + "\"}\n");
        const std::string p = render_prometheus({{"cache_hits", "1"}}, bad);
        CHECK(p.find("{mountpoint=\"" + fixed + "\"} 1\n") != std::string::npos);
        CHECK(render_json({{"k", "\xf4\x90\x80\x80"}}).find("\xf4") == std::string::npos);
    }

    TEST_CASE("render_prometheus: nothing numeric, nothing but the info") {
        CHECK(render_prometheus({}, "/m").empty());
        CHECK(render_prometheus({{"last_error", "-"}}, "/m").empty());
    }

    TEST_CASE("render_prometheus: promtool accepts every kind of key and an awkward mountpoint") {
        // promtool (Debian package prometheus; contrib/install-deps.sh
        // installs it) is the real parser: missing, the test fails.
        REQUIRE_MESSAGE(std::system("command -v promtool >/dev/null 2>&1") == 0,
                        "promtool is missing (Debian package prometheus)");
        const StatLines l{{"cache_mode", "write\"back\\"},
                          {"cache_state", "running"},
                          {"cache_hits", "7"},
                          {"cache_misses", "123456789012345678"},
                          {"cache_hit_ratio", "75"},
                          {"buckets_total", "64"},
                          {"foreground_wait_max_ms", "1500"},
                          {"writeback_rate", "max"},
                          {"last_error", "set x: no"},
                          {"weird-key.x:y", "1"},
                          {"five_minute.cache_hits", "3"},
                          {"day.cache_hits", "5"},
                          {"hour.cache_hit_ratio", "50"}};
        const std::string text = render_prometheus(l, "/mnt/a \"q\"\\b\nc\xff");
        char path[] = "/tmp/oc-prom-XXXXXX";
        const int fd = ::mkstemp(path);
        REQUIRE(fd >= 0);
        ::close(fd);
        std::ofstream(path) << text;
        const std::string cmd = std::string("promtool check metrics < ") + path + " 2>&1";
        FILE* p = ::popen(cmd.c_str(), "r");
        REQUIRE(p != nullptr);
        std::string out;
        char buf[512];
        while (std::fgets(buf, sizeof buf, p) != nullptr)
            out += buf;
        const int status = ::pclose(p);
        ::unlink(path);
        INFO("text:\n" << text << "promtool:\n" << out);
        CHECK(status == 0);
        CHECK(out.empty());
    }
}
