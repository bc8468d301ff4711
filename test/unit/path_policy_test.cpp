// Per-path policy: the `policy` record's encoding (strict, big-endian, a
// layout byte) and the resolution of a file's settings along its path.
#include "cache/path_policy.hpp"
#include "overcache/cache/path_settings.hpp"
#include "overcache/meta/schema.hpp"

#include <doctest/doctest.h>
#include <string>
#include <vector>

using namespace overcache;
using config::CacheMode;

TEST_SUITE("path_policy") {
    TEST_CASE("meta::PolicyRecord: encode and decode") {
        meta::PolicyRecord r;
        r.mode = meta::kPolicyModeWriteback;
        r.sequential_cutoff = 8u << 20;
        r.promote_after_hits = 3;
        const std::string bytes = meta::encode(r);
        REQUIRE(bytes.size() == 15);
        CHECK(bytes[0] == 1); // layout
        CHECK(bytes[1] == 4); // writeback's code
        CHECK(bytes[2] == 3); // both numbers present
        // Big-endian: 8 MiB = 0x00800000.
        CHECK(bytes.substr(3, 8) == std::string("\0\0\0\0\0\x80\0\0", 8));
        CHECK(bytes.substr(11, 4) == std::string("\0\0\0\x03", 4));
        auto back = meta::decode_policy(bytes);
        REQUIRE(back);
        CHECK(*back == r);

        SUBCASE("unset fields stay unset") {
            meta::PolicyRecord only_mode;
            only_mode.mode = meta::kPolicyModeNone;
            auto d = meta::decode_policy(meta::encode(only_mode));
            REQUIRE(d);
            CHECK(*d == only_mode);
            CHECK(!d->sequential_cutoff);
            CHECK(!d->promote_after_hits);
        }
        SUBCASE("damage is refused, never guessed at") {
            CHECK(!meta::decode_policy(""));
            CHECK(!meta::decode_policy(bytes.substr(0, 14)));
            CHECK(!meta::decode_policy(bytes + "x"));
            std::string bad = bytes;
            bad[0] = 2; // unknown layout
            CHECK(!meta::decode_policy(bad));
            bad = bytes;
            bad[1] = 9; // unknown mode
            CHECK(!meta::decode_policy(bad));
            bad = bytes;
            bad[2] = 4; // unknown present bit
            CHECK(!meta::decode_policy(bad));
            bad = bytes;
            bad[2] = 2; // cutoff absent but not zero
            CHECK(!meta::decode_policy(bad));
        }
    }

    TEST_CASE("cache::PathSettings: to and from the record") {
        for (CacheMode m : {CacheMode::writethrough, CacheMode::writearound, CacheMode::none,
                            CacheMode::writeback}) {
            cache::PathSettings s;
            s.mode = m;
            s.promote_after_hits = 2;
            auto back = cache::from_record(cache::to_record(s));
            REQUIRE(back);
            CHECK(*back == s);
        }
        CHECK(cache::to_record(cache::PathSettings{}).mode == 0);
        CHECK(cache::from_record(meta::PolicyRecord{})->empty());
    }

    TEST_CASE("cache::resolve: the nearest setting wins, inherit falls through") {
        cache::PathSettings file;
        cache::PathSettings dir;
        dir.mode = CacheMode::writeback;
        dir.sequential_cutoff = 1u << 20;
        cache::PathSettings root;
        root.mode = CacheMode::none;
        root.promote_after_hits = 4;

        SUBCASE("a file with nothing set inherits each field from the nearest directory") {
            const std::vector<cache::PathSettings> chain{file, dir, root};
            const cache::FilePolicy p = cache::resolve(chain);
            CHECK(p.mode == CacheMode::writeback);
            CHECK(p.sequential_cutoff == (1u << 20));
            CHECK(p.promote_after_hits == 4u);
        }
        SUBCASE("the child overrides its parent") {
            file.mode = CacheMode::writethrough;
            const std::vector<cache::PathSettings> chain{file, dir, root};
            CHECK(cache::resolve(chain).mode == CacheMode::writethrough);
        }
        SUBCASE("nothing set anywhere: the mount's values (unset)") {
            const std::vector<cache::PathSettings> chain{file, cache::PathSettings{}};
            CHECK(cache::resolve(chain).empty());
            CHECK(cache::resolve({}).empty());
        }
    }
}
