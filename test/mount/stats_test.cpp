// Statistics through a real mount: the control file's windows
// (five_minute.*, hour.*, day.*) move with reads as the totals do, and
// `overcache stats` prints them as a table, as JSON that python3's json
// module parses, and as Prometheus text that promtool (Debian's prometheus
// package; contrib/install-deps.sh installs it) accepts without a lint
// complaint. A missing python3 or promtool fails the test: it is what
// checks the formats. Usage errors exit 2; --watch prints until killed.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"

#include <cstdlib>
#include <doctest/doctest.h>
#include <fstream>
#include <string>

using namespace overcache;
using test::Mount;
using test::MountOptions;
using test::run_command;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t MiB = 1024 * 1024;

std::string bin() {
    const char* b = std::getenv("OVERCACHE_BIN");
    REQUIRE_MESSAGE(b != nullptr, "OVERCACHE_BIN is not set");
    return b;
}

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

std::size_t count(const std::string& s, const std::string& part) {
    std::size_t n = 0;
    for (std::size_t at = s.find(part); at != std::string::npos; at = s.find(part, at + 1))
        ++n;
    return n;
}

bool have(const char* program) {
    return run_command({"sh", "-c", std::string("command -v ") + program}, 10s).status == 0;
}

} // namespace

TEST_SUITE("mount") {
    TEST_CASE("stats: windows move with reads; table, JSON and Prometheus output" *
              doctest::timeout(180)) {
        test::require_daemon();
        Mount m(MountOptions{.options = "cache_size=64M,sequential_cutoff=0", .twin = false});
        auto before = m.stats();
        for (const char* w : {"five_minute", "hour", "day"}) {
            CHECK(before.count(std::string(w) + ".cache_hits") == 1);
            CHECK(before.count(std::string(w) + ".cache_misses") == 1);
            CHECK(before.count(std::string(w) + ".cache_hit_ratio") == 1);
            CHECK(before.count(std::string(w) + ".gc_runs") == 1);
        }
        CHECK(before.at("five_minute.cache_hits") == "0");
        CHECK(before.at("five_minute.cache_misses") == "0");

        const auto data = test::random_bytes(4 * MiB, 7);
        test::write_file(m.backing("f"), data);
        CHECK(test::read_uncached(m.mnt("f")) == data);
        m.wait_fills();
        CHECK(test::read_uncached(m.mnt("f")) == data);

        // Reads come only through the mount, which sampled its counters at
        // zero when it started: within its first five minutes every window
        // holds all the reads, as the totals do (one read of the control
        // file: one snapshot).
        const auto after = m.stats();
        const auto n = [&](const std::string& k) {
            REQUIRE_MESSAGE(after.count(k) == 1, "no " << k);
            return std::stoull(after.at(k));
        };
        CHECK(n("cache_hits") > 0);
        CHECK(n("cache_misses") > 0);
        for (const std::string w : {"five_minute", "hour", "day"}) {
            CHECK(n(w + ".cache_hits") == n("cache_hits"));
            CHECK(n(w + ".cache_misses") == n("cache_misses"));
            CHECK(n(w + ".cache_hit_bytes") == n("cache_hit_bytes"));
            CHECK(n(w + ".cache_hit_ratio") == n("cache_hit_ratio"));
            CHECK(n(w + ".gc_runs") <= n("gc_runs"));
        }

        // The buckets, as bcache's priority_stats: every one counted once.
        CHECK(n("buckets_unused") + n("buckets_clean") + n("buckets_dirty") == n("buckets_total"));
        CHECK(n("buckets_clean") > 0); // the fills
        CHECK(n("bucket_age_min") <= n("bucket_age_median"));
        CHECK(n("bucket_age_median") <= n("bucket_age_max"));

        // The table.
        const auto table = run_command({bin(), "stats", m.mountpoint()}, 20s);
        INFO("table: " << table.out);
        CHECK(table.status == 0);
        CHECK(contains(table.out, "5 min"));
        CHECK(contains(table.out, "hit ratio"));
        CHECK(contains(table.out, "MiB"));

        // JSON: parsed by python3, numbers as numbers.
        REQUIRE_MESSAGE(have("python3"), "python3 is missing: it checks the JSON output");
        const auto json = run_command({bin(), "stats", "--json", m.mountpoint()}, 20s);
        CHECK(json.status == 0);
        const std::string json_file = m.root() + "/stats.json";
        std::ofstream(json_file) << json.out;
        const auto py =
            run_command({"python3", "-c",
                         "import json, sys\n"
                         "d = json.load(open(sys.argv[1]))\n"
                         "assert isinstance(d, dict)\n"
                         "assert type(d['cache_hits']) is int and d['cache_hits'] > 0, d\n"
                         "assert d['five_minute.cache_hits'] == d['cache_hits'], d\n"
                         "assert type(d['cache_mode']) is str, d\n"
                         "assert d['last_error'] is None, d\n",
                         json_file},
                        20s);
        INFO("json: " << json.out << "\npython3: " << py.out);
        CHECK(py.status == 0);

        // Prometheus: promtool parses and lints it, and finds nothing wrong.
        REQUIRE_MESSAGE(have("promtool"), "promtool is missing (Debian package prometheus; "
                                          "contrib/install-deps.sh installs it)");
        const auto prom = run_command({bin(), "stats", "--prometheus", m.mountpoint()}, 20s);
        CHECK(prom.status == 0);
        const std::string prom_file = m.root() + "/stats.prom";
        std::ofstream(prom_file) << prom.out;
        const auto check =
            run_command({"sh", "-c", "promtool check metrics < \"$1\"", "sh", prom_file}, 60s);
        INFO("prometheus: " << prom.out << "\npromtool: " << check.out);
        CHECK(check.status == 0);
        CHECK(check.out.empty());
        CHECK(contains(prom.out, "# TYPE overcache_cache_hits_total counter\n"));
        CHECK(contains(prom.out, "overcache_window_cache_hits{mountpoint=\""));
        CHECK(contains(prom.out, ",window=\"five_minute\"} "));
        CHECK(contains(prom.out, "# TYPE overcache_working_set_bytes gauge\n"));

        // The working set: the 4 MiB read twice is 4 MiB touched (an
        // estimate within a few percent), in every window.
        for (const std::string w : {"five_minute", "hour", "day"}) {
            const std::uint64_t ws = n(w + ".working_set_bytes");
            CHECK_MESSAGE(ws >= 4 * MiB * 95 / 100, w << " " << ws);
            CHECK_MESSAGE(ws <= 4 * MiB * 105 / 100, w << " " << ws);
        }
        CHECK(contains(table.out, "working set"));

        // reset_stats: counters, windows and the working set from zero;
        // what describes the cache now stays.
        const auto reset = run_command({bin(), "reset-stats", m.mountpoint()}, 20s);
        CHECK_MESSAGE(reset.status == 0, reset.out);
        const auto zero = m.stats();
        for (const std::string k : {"cache_hits", "cache_misses", "cache_hit_ratio", "fills",
                                    "five_minute.cache_hits", "day.cache_misses",
                                    "five_minute.working_set_bytes", "day.working_set_bytes"}) {
            REQUIRE_MESSAGE(zero.count(k) == 1, "no " << k);
            CHECK_MESSAGE(zero.at(k) == "0", k);
        }
        CHECK(zero.at("buckets_clean") != "0"); // the cached data is still there
        CHECK(test::read_uncached(m.mnt("f")) == data); // all hits now
        const auto again = m.stats();
        CHECK(again.at("cache_misses") == "0");
        CHECK(again.at("cache_hits") != "0");
        CHECK(again.at("five_minute.cache_hits") == again.at("cache_hits"));
        CHECK(again.at("cache_hit_ratio") == "100");
        CHECK(std::stoull(again.at("five_minute.working_set_bytes")) >= 4 * MiB * 95 / 100);
    }

    TEST_CASE("stats: bytes bypassed past the sequential cutoff, in the windows too" *
              doctest::timeout(120)) {
        test::require_daemon();
        Mount m(MountOptions{.options = "cache_size=64M,sequential_cutoff=1M", .twin = false});
        const auto data = test::random_bytes(8 * MiB, 9);
        test::write_file(m.backing("big"), data);
        CHECK(test::read_uncached(m.mnt("big")) == data);
        const auto s = m.stats();
        const auto n = [&](const std::string& k) {
            REQUIRE_MESSAGE(s.count(k) == 1, "no " << k);
            return std::stoull(s.at(k));
        };
        CHECK(n("cache_bypass_misses") > 0);
        // Past the first MiB the stream bypasses; the bytes it took from
        // the backing are misses too.
        CHECK(n("cache_bypass_bytes") > 0);
        CHECK(n("cache_bypass_bytes") <= 8 * MiB);
        CHECK(n("cache_bypass_bytes") <= n("cache_miss_bytes"));
        CHECK(n("five_minute.cache_bypass_bytes") == n("cache_bypass_bytes"));
        CHECK(n("day.cache_bypass_misses") == n("cache_bypass_misses"));
    }

    TEST_CASE("stats: usage errors exit 2, --watch prints again" * doctest::timeout(120)) {
        test::require_daemon();
        Mount m(MountOptions{.twin = false});
        for (const auto& args :
             std::vector<std::vector<std::string>>{{"--json", "--prometheus"},
                                                   {"--interval=1"},
                                                   {"--watch", "--interval=0"},
                                                   {"--watch", "--interval=soon"},
                                                   {"--bogus"},
                                                   {"--json=1"}}) {
            std::vector<std::string> cmd{bin(), "stats"};
            cmd.insert(cmd.end(), args.begin(), args.end());
            cmd.push_back(m.mountpoint());
            const auto r = run_command(cmd, 20s);
            INFO("args: " << args[0] << " output: " << r.out);
            CHECK(r.status == 2);
            CHECK(contains(r.out, "usage: overcache stats"));
        }
        // Not a terminal: no screen clearing, one JSON object a line. Time
        // for a sanitizer build's start and a few intervals.
        const auto w = run_command(
            {bin(), "stats", "--watch", "--interval=0.2", "--json", m.mountpoint()}, 5000ms);
        CHECK(w.timed_out);
        CHECK(count(w.out, "{\"cache_mode\"") >= 2);
        CHECK(!contains(w.out, "\033["));

        const auto gone = run_command({bin(), "stats", "--json", m.root() + "/missing"}, 20s);
        CHECK(gone.status == 1);
    }
}
