// The config file of one mount run as a service (overcache@NAME.service
// reads /etc/overcache/NAME.conf through `overcache --config FILE`):
//
//   # comment
//   BACKING=/srv/slow
//   MOUNTPOINT=/mnt/fast
//   CACHE=/var/cache/overcache/fast      (optional: cache=)
//   OPTIONS=cache_size=20G,flush_on_unmount   (optional: the -o list)
//
// One KEY=VALUE a line, each key once; a value may be quoted ("..." or
// '...'); paths are absolute. Anything else is refused with the file and
// line named, before anything is mounted. See overcache.conf(5).
#pragma once

#include <string>
#include <string_view>

namespace overcache {

struct ServiceConfig {
    std::string backing;
    std::string mountpoint;
    std::string cache;   // empty: not given
    std::string options; // empty: not given
};

// Reads and checks `file`. false with `error` set ("FILE:LINE: what").
bool read_service_config(const std::string& file, ServiceConfig& out, std::string& error);
// The same for the file's bytes, `file` naming it in messages: pure, so it
// is fuzzed (test/fuzz/fuzz_service_config.cpp).
bool parse_service_config(std::string_view text, const std::string& file, ServiceConfig& out,
                          std::string& error);

} // namespace overcache
