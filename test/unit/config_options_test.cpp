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

TEST_CASE("parse_options applies overcache options and passes mount options through") {
    auto r = parse_options({"rw,nosuid,nodev,cache=/var/cache/x,cache_size=1G", "fill_size=512K"});
    REQUIRE(r.has_value());
    CHECK(r->config.cache_dir == "/var/cache/x");
    CHECK(r->config.cache_size == 1ull << 30);
    CHECK(r->config.fill_size == 512u * 1024);
    CHECK(r->fuse_options == std::vector<std::string>{"rw", "nosuid", "nodev"});
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
        {"cache_mode=writeback", "not yet supported"},
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
    CHECK(to_errno(parse_options({"cache_mode=writeback"}).error()) == ENOTSUP);
}

TEST_CASE("every option has help and a default") {
    for (const auto& o : option_table()) {
        CAPTURE(o.name);
        CHECK(std::string(o.help).size() > 10);
        CHECK(std::string(o.default_text).size() > 0);
    }
}
}
