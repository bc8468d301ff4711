// control::render_stats: the control file's `key value` lines.
#include "control/stats_text.hpp"

#include <doctest/doctest.h>

using overcache::control::render_stats;
using overcache::control::StatLines;

TEST_SUITE("control") {
    TEST_CASE("render_stats: one line a pair, in order") {
        const StatLines lines{{"cache_mode", "writethrough"}, {"inodes", "12"}, {"a", "1 2 3"}};
        CHECK(render_stats(lines) == "cache_mode writethrough\ninodes 12\na 1 2 3\n");
    }

    TEST_CASE("render_stats: nothing renders as nothing") {
        CHECK(render_stats({}).empty());
    }

    TEST_CASE("render_stats: keys are one word, values one line") {
        const StatLines lines{{"two words", "x\ny"}, {"", ""}, {"tab\tkey", "a\tb\r"}};
        CHECK(render_stats(lines) == "two_words x y\n- -\ntab_key a b \n");
    }
}
