// The settings registry: a change is checked, stored and applied whole, or
// not at all; stored values come back under the mount's own options.
#include "control/settings.hpp"

#include <doctest/doctest.h>

#include <map>

using namespace overcache;
using control::Settings;

namespace {

// Records what reaches the mount; can refuse the check or fail the save.
struct FakeSink final : control::SettingsSink {
    Result<void> check(const config::Config& next) override {
        if (refuse_mode && next.cache_mode == *refuse_mode)
            return fail(Errc::BadValue, "no cache here");
        return {};
    }
    void apply(const config::Config& c) override {
        ++applied;
        last = c;
    }
    Result<void> save(const std::string& name, const std::string& value) override {
        if (fail_save)
            return fail_sys(EIO, "writing the index");
        stored[name] = value;
        return {};
    }

    std::optional<config::CacheMode> refuse_mode;
    bool fail_save = false;
    int applied = 0;
    config::Config last;
    std::map<std::string, std::string> stored;
};

std::string get(const Settings& s, const char* name) {
    auto r = s.get(name);
    REQUIRE(r.has_value());
    return *r;
}

} // namespace

TEST_SUITE("control") {
    TEST_CASE("settings: a good value is stored, applied and shown as an option says it") {
        Settings s{config::Config{}};
        FakeSink sink;
        auto r = s.set("sequential-cutoff", "8388608", sink); // '-' for '_', bytes
        REQUIRE(r.has_value());
        CHECK(r->name == "sequential_cutoff");
        CHECK(r->value == "8M");
        CHECK_FALSE(r->left_writeback);
        CHECK(sink.stored.at("sequential_cutoff") == "8M");
        CHECK(sink.applied == 1);
        CHECK(sink.last.sequential_cutoff == 8u << 20);
        CHECK(get(s, "sequential_cutoff") == "8M");
        CHECK(s.current().sequential_cutoff == 8u << 20);

        REQUIRE(s.set("writeback_delay", "0.5", sink).has_value());
        CHECK(get(s, "writeback_delay") == "0.5");
        REQUIRE(s.set("writeback_running", "off", sink).has_value());
        CHECK(get(s, "writeback_running") == "0");
        CHECK(sink.stored.at("writeback_running") == "0");
    }

    TEST_CASE("settings: a refused change changes nothing anywhere") {
        config::Config start;
        Settings s{start};
        FakeSink sink;
        auto refused = [&](const char* name, const char* value, const char* says) {
            CAPTURE(name);
            CAPTURE(value);
            auto r = s.set(name, value, sink);
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().message.find(says) != std::string::npos);
            CHECK(sink.applied == 0);
            CHECK(sink.stored.empty());
        };
        refused("sequential_cutoff", "lots", "not a size");
        refused("cache_mode", "fast", "not one of");
        refused("writeback_percent", "101", "not in 0..100");
        refused("no_such_thing", "1", "unknown setting 'no_such_thing'");
        refused("bucket_size", "2M", "fixed at mount");
        refused("cache", "/tmp", "fixed at mount");
        refused("gc_low_percent", "10", "must be below gc_high_percent");
        refused("gc_high_percent", "5", "must be below gc_high_percent");
        sink.refuse_mode = config::CacheMode::writeback;
        refused("cache_mode", "writeback", "no cache here");
        sink.refuse_mode.reset();
        sink.fail_save = true;
        refused("sequential_cutoff", "1M", "storing it failed");
        CHECK(s.current().sequential_cutoff == start.sequential_cutoff);
        CHECK(s.current().cache_mode == start.cache_mode);
        CHECK(s.current().gc_low_percent == start.gc_low_percent);
    }

    TEST_CASE("settings: related settings are checked against each other's new values") {
        Settings s{config::Config{}}; // gc 5..10
        FakeSink sink;
        REQUIRE(s.set("gc_high_percent", "40", sink).has_value());
        REQUIRE(s.set("gc_low_percent", "30", sink).has_value());
        CHECK(sink.last.gc_low_percent == 30);
        CHECK(sink.last.gc_high_percent == 40);
        CHECK_FALSE(s.set("gc_high_percent", "30", sink).has_value());
    }

    TEST_CASE("settings: leaving writeback is reported so the caller flushes") {
        config::Config c;
        c.cache_mode = config::CacheMode::writeback;
        Settings s{c};
        FakeSink sink;
        auto same = s.set("cache_mode", "writeback", sink);
        REQUIRE(same.has_value());
        CHECK_FALSE(same->left_writeback);
        auto r = s.set("cache_mode", "writethrough", sink);
        REQUIRE(r.has_value());
        CHECK(r->left_writeback);
        auto again = s.set("cache_mode", "writearound", sink);
        REQUIRE(again.has_value());
        CHECK_FALSE(again->left_writeback);
    }

    TEST_CASE("settings: stored values come back under the options given at mount") {
        config::Config c;
        c.sequential_cutoff = 1u << 20; // as if -o sequential_cutoff=1M
        Settings s{c};
        const auto warnings = s.adopt_saved(
            {
                {"sequential_cutoff", "16M"},  // given at mount: the option wins
                {"writeback_percent", "40"},   // taken
                {"writeback_delay", "soon"},   // bad: warned, ignored
                {"bucket_size", "4M"},         // fixed at mount: warned, ignored
                {"from_a_newer_version", "1"}, // unknown: warned, ignored
            },
            {"sequential_cutoff"});
        CHECK(s.current().sequential_cutoff == 1u << 20);
        CHECK(s.current().writeback_percent == 40);
        CHECK(s.current().writeback_delay_s == config::Config{}.writeback_delay_s);
        REQUIRE(warnings.size() == 3);
        CHECK(warnings[0].find("writeback_delay=soon") != std::string::npos);
        CHECK(warnings[1].find("bucket_size=4M") != std::string::npos);
        CHECK(warnings[2].find("from_a_newer_version") != std::string::npos);
    }

    TEST_CASE("settings: the control file lists every live setting, and only those") {
        // As a mount starts it: cache_size is the cache's own size (the
        // default rule's 0 is never shown).
        config::Config initial;
        initial.cache_size = 64u << 20;
        Settings s{initial};
        control::StatLines lines;
        s.add_lines(lines);
        std::size_t live = 0;
        for (const auto& o : config::option_table())
            live += config::is_live(o.name) ? 1 : 0;
        CHECK(lines.size() == live);
        for (const auto& [k, v] : lines) {
            CAPTURE(k);
            CHECK(config::is_live(k));
            CHECK_FALSE(v.empty());
            // What is shown is what set takes back.
            config::Config c;
            CHECK(config::set_option(c, k, v).has_value());
            CHECK(config::option_value(c, k) == v);
        }
        CHECK(lines.front().first == "cache_mode");
    }
}
