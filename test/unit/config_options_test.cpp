#include <doctest/doctest.h>

#include "overcache/config/config.hpp"

using namespace overcache;
using namespace overcache::config;

TEST_SUITE("config") {
TEST_CASE("parse_size takes binary suffixes") {
    CHECK(parse_size("4096").value() == 4096);
    CHECK(parse_size("512K").value() == 512u * 1024);
    CHECK(parse_size("4M").value() == 4u << 20);
    CHECK(parse_size("4MiB").value() == 4u << 20);
    CHECK(parse_size("1G").value() == 1ull << 30);
    CHECK(parse_size("2T").value() == 2ull << 40);
    CHECK_FALSE(parse_size("").has_value());
    CHECK_FALSE(parse_size("M").has_value());
    CHECK_FALSE(parse_size("4X").has_value());
    CHECK_FALSE(parse_size("-4").has_value());
    CHECK_FALSE(parse_size("99999999999999999999").has_value());
    CHECK_FALSE(parse_size("17179869184T").has_value());
}

TEST_CASE("parse_size takes a decimal fraction with a suffix; format_size shows sizes short") {
    CHECK(parse_size("0.5G").value() == 512ull << 20);
    CHECK(parse_size("1.25T").value() == (5ull << 40) / 4);
    CHECK(parse_size("1.5MiB").value() == 3u << 19);
    CHECK(parse_size("0.1K").value() == 102); // rounded down to a whole byte
    CHECK(parse_size("2.0M").value() == 2u << 20);
    auto bare = parse_size("1.5");
    REQUIRE_FALSE(bare.has_value());
    CHECK(bare.error().message.find("a byte count has no fraction") != std::string::npos);
    CHECK_FALSE(parse_size("1.G").has_value());
    CHECK_FALSE(parse_size("1..5G").has_value());
    CHECK_FALSE(parse_size(".5G").has_value());
    CHECK(format_size(64u << 20) == "64M");
    CHECK(format_size(1536u << 10) == "1536K");
    CHECK(format_size(4097) == "4097");
    CHECK(format_size(0) == "0");
    CHECK(format_size(1ull << 40) == "1T");
    CHECK(format_size((1ull << 30) + 1) == "1073741825 (1.0 GiB)");
    auto r = parse_options({"bucket_size=1K"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message == "option bucket_size: 1K is out of range (64K to 64M)");
}

TEST_CASE("a value that is not printable is shown escaped: messages stay one line") {
    auto s = parse_size("4\nM");
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().message == "'4\\x0aM' has an unknown suffix (use K, M, G or T)");
    auto r = parse_options({"cache_mode=\x1b[2J"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message == "option cache_mode: '\\x1b[2J' is not one of writethrough, "
                               "writearound, writeback, none");
    r = parse_options({"backing_calls=sometimes"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message ==
          "option backing_calls: 'sometimes' is not one of auto, gated, inline");
    r = parse_options({"coherency=sometimes"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message == "option coherency: 'sometimes' is not one of cto, timeout, none");
    r = parse_options({"acregmin=5,acregmax=1"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message == "option acregmin must not exceed acregmax");
    r = parse_options({"acdirmin=90"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message == "option acdirmin must not exceed acdirmax");
    r = parse_options({"acregmax=100000"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message == "option acregmax must be from 0 to 86400 seconds");
    r = parse_options({"coherency=timeout,acregmin=1,acregmax=10,acdirmin=2,acdirmax=20"});
    REQUIRE(r.has_value());
    CHECK(r->config.coherency == Coherency::timeout);
    CHECK(r->config.acregmax_s == 10);
    CHECK(r->config.acdirmin_s == 2);
    CHECK(r->config.watch_backing); // on unless turned off
    r = parse_options({"watch_backing=off"});
    REQUIRE(r.has_value());
    CHECK_FALSE(r->config.watch_backing);
    r = parse_options({"watch_backing=sometimes"});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("watch_backing") != std::string::npos);
    r = parse_options({"log_level=" + std::string(300, 'x')});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find(std::string(256, 'x') + "...'") != std::string::npos);
}

TEST_CASE("parse_options applies overcache options and passes mount options through") {
    auto r = parse_options({"rw,nosuid,nodev,cache=/var/cache/x,cache_size=1G", "fill_size=512K"});
    REQUIRE(r.has_value());
    CHECK(r->config.cache_dir == "/var/cache/x");
    CHECK(r->config.cache_size == 1ull << 30);
    CHECK(r->config.fill_size == 512u * 1024);
    CHECK(r->fuse_options == std::vector<std::string>{"rw", "nosuid", "nodev"});
}

TEST_CASE("cache_min_free: a size, 1G by default, 0 turns it off") {
    auto d = parse_options(std::vector<std::string>{});
    REQUIRE(d.has_value());
    CHECK(d->config.cache_min_free == 1ull << 30);
    auto r = parse_options({"cache_min_free=512M"});
    REQUIRE(r.has_value());
    CHECK(r->config.cache_min_free == 512ull << 20);
    auto z = parse_options({"cache_min_free=0"});
    REQUIRE(z.has_value());
    CHECK(z->config.cache_min_free == 0);
    auto bad = parse_options({"cache_min_free=lots"});
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().message.find("cache_min_free") != std::string::npos);
}

TEST_CASE("parse_options keeps mount(8)-only options away from libfuse") {
    auto r = parse_options({"defaults,_netdev,nofail,x-systemd.automount,noauto,ro"});
    REQUIRE(r.has_value());
    CHECK(r->fuse_options == std::vector<std::string>{"ro"});
}

TEST_CASE("later options win and booleans negate") {
    auto r = parse_options({"allow_other,noallow_other,attr_timeout=5,attr_timeout=0.5"});
    REQUIRE(r.has_value());
    CHECK_FALSE(r->config.allow_other);
    CHECK(r->config.allow_other_given);
    CHECK(r->config.attr_timeout == doctest::Approx(0.5));
    auto d = parse_options({"default_permissions=no"});
    REQUIRE(d.has_value());
    CHECK_FALSE(d->config.default_permissions);
}

TEST_CASE("bad input names the option") {
    struct Case {
        const char* opts;
        const char* expect;
    };
    const Case cases[] = {
        {"frobnicate", "frobnicate"},
        {"cache_size=lots", "cache_size"},
        {"cache_size=1K", "cache_size"},
        {"bucket_size=3M", "power of two"},
        {"fill_size", "fill_size needs a value"},
        {"cache_mode=fast", "cache_mode"},
        {"attr_timeout=-1", "attr_timeout"},
        {"attr_timeout=abc", "attr_timeout"},
        {"gc_low_percent=20,gc_high_percent=10", "gc_low_percent"},
        {"fill_size=2M,bucket_size=1M", "fill_size"},
        {"max_threads=0", "max_threads"},
        {"reformat=maybe", "reformat"},
        {"cache=", "cache"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.opts);
        auto r = parse_options({c.opts});
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().message.find(c.expect) != std::string::npos);
        CHECK(to_errno(r.error()) != 0);
    }
    REQUIRE(parse_options({"cache_mode=writeback"}).has_value());
    CHECK(parse_options({"cache_mode=writeback"})->config.cache_mode ==
          overcache::config::CacheMode::writeback);
}

TEST_CASE("writeback options: defaults") {
    auto r = parse_options({""});
    REQUIRE(r.has_value());
    const Config& c = r->config;
    CHECK(c.writeback_percent == 10);
    CHECK(c.writeback_delay_s == doctest::Approx(30));
    CHECK(c.writeback_rate_minimum == 1u << 20);
    CHECK(c.writeback_running);
    CHECK_FALSE(c.fsync_to_backing);
    CHECK_FALSE(c.flush_on_unmount);
    CHECK(c.writeback_wait_max_s == doctest::Approx(10));
    CHECK_FALSE(c.discard_dirty);
    CHECK(c.log_level == LogLevel::info);
    // A fresh Config and the parser agree: the table's default texts are
    // what Config holds before any option is applied.
    const Config fresh;
    CHECK(fresh.writeback_percent == c.writeback_percent);
    CHECK(fresh.writeback_rate_minimum == c.writeback_rate_minimum);
}

TEST_CASE("writeback options: good values") {
    auto r = parse_options({"writeback_percent=40,writeback_delay=2.5,writeback_rate_minimum=4M",
                            "writeback_running=0,fsync_to_backing,flush_on_unmount=yes",
                            "writeback_wait_max=0.5,discard_dirty,log_level=warning"});
    REQUIRE(r.has_value());
    const Config& c = r->config;
    CHECK(c.writeback_percent == 40);
    CHECK(c.writeback_delay_s == doctest::Approx(2.5));
    CHECK(c.writeback_rate_minimum == 4u << 20);
    CHECK_FALSE(c.writeback_running);
    CHECK(c.fsync_to_backing);
    CHECK(c.flush_on_unmount);
    CHECK(c.writeback_wait_max_s == doctest::Approx(0.5));
    CHECK(c.discard_dirty);
    CHECK(c.log_level == LogLevel::warning);
    CHECK(r->fuse_options.empty()); // none of them leaks to libfuse

    SUBCASE("the ends of the ranges") {
        auto e = parse_options({"writeback_percent=0,writeback_delay=0,writeback_wait_max=0",
                                "writeback_rate_minimum=4K"});
        REQUIRE(e.has_value());
        CHECK(e->config.writeback_percent == 0);
        CHECK(e->config.writeback_delay_s == 0);
        CHECK(e->config.writeback_wait_max_s == 0);
        CHECK(e->config.writeback_rate_minimum == 4096);
        auto f = parse_options({"writeback_percent=100,writeback_rate_minimum=1T"});
        REQUIRE(f.has_value());
        CHECK(f->config.writeback_percent == 100);
        CHECK(f->config.writeback_rate_minimum == 1ull << 40);
    }
    SUBCASE("negated and dashed spellings") {
        auto n = parse_options({"nowriteback_running,writeback-percent=5,fsync_to_backing",
                                "nofsync_to_backing,discard-dirty=0"});
        REQUIRE(n.has_value());
        CHECK_FALSE(n->config.writeback_running);
        CHECK(n->config.writeback_percent == 5);
        CHECK_FALSE(n->config.fsync_to_backing);
        CHECK_FALSE(n->config.discard_dirty);
    }
}

TEST_CASE("writeback options: bad values are refused, naming the option and the value") {
    struct Case {
        const char* opts;
        const char* option;
        const char* value;
    };
    const Case cases[] = {
        {"writeback_percent=101", "writeback_percent", "101"},
        {"writeback_percent=-1", "writeback_percent", "-1"},
        {"writeback_percent=ten", "writeback_percent", "ten"},
        {"writeback_percent", "writeback_percent", "needs a value"},
        {"writeback_delay=-3", "writeback_delay", "-3"},
        {"writeback_delay=soon", "writeback_delay", "soon"},
        {"writeback_delay=inf", "writeback_delay", "inf"},
        {"writeback_rate_minimum=1K", "writeback_rate_minimum", "1K"},
        {"writeback_rate_minimum=0", "writeback_rate_minimum", "0"},
        {"writeback_rate_minimum=2T", "writeback_rate_minimum", "2T"},
        {"writeback_rate_minimum=fast", "writeback_rate_minimum", "fast"},
        {"writeback_running=sometimes", "writeback_running", "sometimes"},
        {"fsync_to_backing=2", "fsync_to_backing", "2"},
        {"flush_on_unmount=maybe", "flush_on_unmount", "maybe"},
        {"writeback_wait_max=-0.1", "writeback_wait_max", "-0.1"},
        {"writeback_wait_max=", "writeback_wait_max", "''"},
        {"log_level=verbose", "log_level", "verbose"},
        {"log_level=INFO", "log_level", "INFO"},
        {"discard_dirty=perhaps", "discard_dirty", "perhaps"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.opts);
        auto r = parse_options({c.opts});
        REQUIRE_FALSE(r.has_value());
        const std::string& msg = r.error().message;
        CAPTURE(msg);
        CHECK(msg.find(std::string("option ") + c.option) != std::string::npos);
        CHECK(msg.find(c.value) != std::string::npos);
        CHECK(to_errno(r.error()) == EINVAL);
    }
}

TEST_CASE("every option has help and a default") {
    for (const auto& o : option_table()) {
        CAPTURE(o.name);
        CHECK(std::string(o.help).size() > 10);
        CHECK(std::string(o.default_text).size() > 0);
    }
}
}
