// The service's config file (/etc/overcache/NAME.conf, read through
// `overcache --config`): what it accepts, and that every mistake is refused
// with the file, the line and the problem named.
#include "file_bytes.hpp"
#include "service_config.hpp"
#include "tmp_dir.hpp"

#include <doctest/doctest.h>

using overcache::read_service_config;
using overcache::ServiceConfig;
using overcache::test::TmpDir;
using overcache::test::write_file;

namespace {

// Parses `text`; returns the error ("" when it was accepted).
std::string parse(const std::string& text, ServiceConfig& out) {
    TmpDir t;
    const std::string f = t / "m.conf";
    write_file(f, text);
    std::string error;
    if (read_service_config(f, out, error)) {
        CHECK(error.empty());
        return "";
    }
    CHECK_FALSE(error.empty());
    // Every message names the file.
    CHECK_MESSAGE(error.find(f) != std::string::npos, error);
    return error.substr(f.size());
}

} // namespace

TEST_SUITE("unit") {

    TEST_CASE("a service config: keys, comments, quotes") {
        ServiceConfig c;
        REQUIRE(parse("# the home directories\n"
                      "\n"
                      "BACKING=/net/home\n"
                      "  MOUNTPOINT = \"/home/with space\"  \n"
                      "CACHE='/ssd/cache'\n"
                      "OPTIONS=cache_size=20G,attr_timeout=1\n",
                      c) == "");
        CHECK(c.backing == "/net/home");
        CHECK(c.mountpoint == "/home/with space");
        CHECK(c.cache == "/ssd/cache");
        CHECK(c.options == "cache_size=20G,attr_timeout=1");

        ServiceConfig minimal;
        REQUIRE(parse("BACKING=/a\nMOUNTPOINT=/b\n", minimal) == "");
        CHECK(minimal.cache.empty());
        CHECK(minimal.options.empty());
        // An empty OPTIONS= is allowed (no options).
        REQUIRE(parse("BACKING=/a\nMOUNTPOINT=/b\nOPTIONS=\n", minimal) == "");
    }

    TEST_CASE("a service config: mistakes are named with their line") {
        ServiceConfig c;
        c.backing = "unchanged";
        CHECK(parse("BACKING=/a\nMOUNTPONT=/b\n", c) ==
              ":2: unknown key 'MOUNTPONT' (known: BACKING, MOUNTPOINT, CACHE, OPTIONS)");
        CHECK(parse("BACKING=/a\nBACKING=/c\nMOUNTPOINT=/b\n", c) == ":2: BACKING= is given twice");
        CHECK(parse("BACKING=srv/slow\nMOUNTPOINT=/b\n", c) ==
              ":1: BACKING=srv/slow is not an absolute path");
        CHECK(parse("BACKING=/a\nMOUNTPOINT=\n", c) == ":2: MOUNTPOINT= is empty");
        CHECK(parse("BACKING=/a\nMOUNTPOINT=\"/b\n", c) ==
              ":2: MOUNTPOINT= has an unterminated quote");
        CHECK(parse("BACKING=/a\n/mnt/fast\n", c) == ":2: expected KEY=VALUE, found '/mnt/fast'");
        // What is not printable is escaped: a message stays one line.
        CHECK(parse("BACKING=/a\nMOUNT\rPOINT=/b\n", c) ==
              ":2: unknown key 'MOUNT\\x0dPOINT' (known: BACKING, MOUNTPOINT, CACHE, OPTIONS)");
        CHECK(parse("MOUNTPOINT=/b\n", c) == ": BACKING= is missing (the directory to cache)");
        CHECK(parse("BACKING=/a\n", c) == ": MOUNTPOINT= is missing (the path to mount on)");
        // A refused file changes nothing.
        CHECK(c.backing == "unchanged");
    }

    TEST_CASE("a service config that cannot be read says so") {
        TmpDir t;
        ServiceConfig c;
        std::string error;
        CHECK_FALSE(read_service_config(t / "absent.conf", c, error));
        CHECK_MESSAGE(error.find("cannot read " + (t / "absent.conf") +
                                 ": No such file or directory") != std::string::npos,
                      error);
    }
}
