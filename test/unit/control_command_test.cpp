// control::parse_command(s): the control file's command lines. Exact
// acceptance (nothing guessed), all-or-nothing batches, and messages that
// name the bad command and stay one short printable line whatever was
// written (a mutated corpus checks that last part).
#include "control/command.hpp"

#include <doctest/doctest.h>
#include <random>
#include <set>
#include <string>

using namespace overcache;
using namespace overcache::control;

namespace {

std::string error_of(std::string_view text) {
    auto r = parse_commands(text);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::BadValue);
    CHECK(to_errno(r.error()) == EINVAL);
    return r.error().message;
}

bool has(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

} // namespace

TEST_SUITE("control") {
    TEST_CASE("parse_command: the verbs, with blanks and a CR around them") {
        for (const char* line :
             {"flush", " flush", "flush ", "\tflush\t", "flush\r", "  flush \r"}) {
            CAPTURE(line);
            auto c = parse_command(line);
            REQUIRE(c.has_value());
            CHECK(c->verb == Verb::flush);
            CHECK(c->args.empty());
        }
        auto g = parse_command("gc");
        REQUIRE(g.has_value());
        CHECK(g->verb == Verb::gc);
    }

    TEST_CASE("parse_command: every row of the table parses by its name, names are unique") {
        std::set<std::string> names;
        for (const auto& spec : command_table()) {
            CAPTURE(spec.name);
            CHECK(names.insert(spec.name).second);
            CHECK(&spec_of(spec.verb) == &spec);
            if (spec.min_args == 0) {
                auto c = parse_command(spec.name);
                REQUIRE(c.has_value());
                CHECK(c->verb == spec.verb);
            }
        }
    }

    TEST_CASE("parse_command: refusals name what was written") {
        SUBCASE("empty") {
            CHECK(error_of("\n") == "empty command line");
            CHECK(error_of("  \t\r\n") == "empty command line");
        }
        SUBCASE("unknown") {
            CHECK(error_of("frob\n") == "unknown command 'frob'");
            CHECK(error_of("FLUSH") == "unknown command 'FLUSH'"); // no case folding
            CHECK(error_of("flush-all") == "unknown command 'flush-all'");
            CHECK(error_of("get cache_mode") == "unknown command 'get'");
        }
        SUBCASE("extra arguments") {
            const std::string m = error_of("flush now\n");
            CHECK(has(m, "'flush' takes no arguments"));
            CHECK(has(m, "'flush now'"));
            CHECK(has(error_of("gc 1 2"), "'gc' takes no arguments"));
            CHECK(has(error_of("set cache_mode"), "'set' takes 2 arguments"));
            CHECK(has(error_of("set a b c"), "'set' takes 2 arguments"));
        }
        SUBCASE("unprintable bytes are escaped, long words cut") {
            CHECK(error_of(std::string("fl\0sh", 5)) == "unknown command 'fl\\x00sh'");
            CHECK(error_of("\x1b[31mred") == "unknown command '\\x1b[31mred'");
            CHECK(error_of("it's") == "unknown command 'it\\x27s'");
            const std::string m = error_of(std::string(1000, 'x'));
            CHECK(m == "unknown command '" + std::string(64, 'x') + "...'");
        }
    }

    TEST_CASE("parse_commands: lines, the last one with or without a newline") {
        auto none = parse_commands("");
        REQUIRE(none.has_value());
        CHECK(none->empty());

        auto two = parse_commands("flush\ngc\n");
        REQUIRE(two.has_value());
        REQUIRE(two->size() == 2);
        CHECK((*two)[0].verb == Verb::flush);
        CHECK((*two)[1].verb == Verb::gc);

        auto unterminated = parse_commands("gc\nflush");
        REQUIRE(unterminated.has_value());
        REQUIRE(unterminated->size() == 2);
        CHECK((*unterminated)[1].verb == Verb::flush);

        auto crlf = parse_commands("flush\r\ngc\r\n");
        REQUIRE(crlf.has_value());
        CHECK(crlf->size() == 2);
    }

    TEST_CASE("parse_commands: one bad line refuses the whole write, naming its line") {
        CHECK(error_of("flush\nfrob\n") == "line 2: unknown command 'frob'");
        CHECK(error_of("flush\n\ngc\n") == "line 2: empty command line");
        CHECK(error_of("frob\nflush\n") == "line 1: unknown command 'frob'");
        CHECK(error_of("frob\n") == "unknown command 'frob'"); // one line: no number
    }

    TEST_CASE("encode_path_arg/decode_path_arg: one blank-free word, and back") {
        const std::string odd = std::string("dir/a b\t%c\xff\x01.txt");
        const std::string word = encode_path_arg(odd);
        CHECK(word == "dir/a%20b%09%25c%FF%01.txt");
        CHECK(word.find_first_of(" \t\r\n") == std::string::npos);
        auto back = decode_path_arg(word);
        REQUIRE(back.has_value());
        CHECK(*back == odd);
        CHECK(decode_path_arg("plain/name").value() == "plain/name");
        CHECK(decode_path_arg("a%2f").value() == "a/");
        CHECK_FALSE(decode_path_arg("a%").has_value());
        CHECK_FALSE(decode_path_arg("a%4").has_value());
        CHECK_FALSE(decode_path_arg("a%zz").has_value());
        CHECK_FALSE(decode_path_arg("a%00b").has_value());
        auto line = parse_command("invalidate " + word);
        REQUIRE(line.has_value());
        CHECK(line->verb == Verb::invalidate);
        CHECK(line->args == std::vector<std::string>{word});
    }

    TEST_CASE("quote: short, printable, one line") {
        CHECK(quote("abc") == "'abc'");
        CHECK(quote("") == "''");
        CHECK(quote("a\nb") == "'a\\x0ab'");
        CHECK(quote("\xff") == "'\\xff'");
        CHECK(quote("a\\b") == "'a\\x5cb'");
    }

    TEST_CASE("parse_commands: random and mutated input never yields a bad message" *
              doctest::timeout(30)) {
        // Pieces of valid and near-valid lines, joined at random and then
        // mutated byte by byte: whatever comes out either parses into known
        // verbs or fails with a short message that is one printable line.
        const std::vector<std::string> pieces = {"flush", "gc",  " ",     "\t",
                                                 "\n",    "\r",  "\r\n",  "x",
                                                 "",      "fl",  "ush",   std::string(1, '\0'),
                                                 "\xff",  "set", "gc gc", std::string(80, 'a')};
        std::mt19937 rng(1234);
        for (int round = 0; round < 20000; ++round) {
            std::string text;
            const int n = static_cast<int>(rng() % 8);
            for (int i = 0; i < n; ++i)
                text += pieces[rng() % pieces.size()];
            const int flips = static_cast<int>(rng() % 3);
            for (int i = 0; i < flips && !text.empty(); ++i)
                text[rng() % text.size()] = static_cast<char>(rng());
            auto r = parse_commands(text);
            if (r.has_value())
                continue;
            const std::string& m = r.error().message;
            INFO("input: " << quote(text) << " message: " << quote(m));
            REQUIRE(!m.empty());
            REQUIRE(m.size() < 256);
            for (const char c : m)
                REQUIRE((c >= 0x20 && c < 0x7f));
        }
    }
}
