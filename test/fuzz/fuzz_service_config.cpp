// Fuzz target: parse_service_config, the text of /etc/overcache/NAME.conf.
// Properties: a refusal is one line that names the file; an accepted file
// has absolute BACKING and MOUNTPOINT (and CACHE when given), and rendered
// back (each value double-quoted) it parses to the same four values.
#include "fuzz_check.hpp"
#include "service_config.hpp"

#include <string>

using namespace overcache;

namespace {

const std::string kFile = "/etc/overcache/fuzz.conf";

bool same(const ServiceConfig& a, const ServiceConfig& b) {
    return a.backing == b.backing && a.mountpoint == b.mountpoint && a.cache == b.cache &&
           a.options == b.options;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text = fuzz::as_text(data, size);
    fuzz::current_input = text;
    ServiceConfig cfg;
    std::string error;
    if (!parse_service_config(text, kFile, cfg, error)) {
        FUZZ_CHECK(fuzz::one_line(error), error);
        FUZZ_CHECK(error.rfind(kFile + ":", 0) == 0, error);
        return 0;
    }
    FUZZ_CHECK(error.empty(), error);
    FUZZ_CHECK(!cfg.backing.empty() && cfg.backing[0] == '/', cfg.backing);
    FUZZ_CHECK(!cfg.mountpoint.empty() && cfg.mountpoint[0] == '/', cfg.mountpoint);
    FUZZ_CHECK(cfg.cache.empty() || cfg.cache[0] == '/', cfg.cache);
    std::string shown = "BACKING=\"" + cfg.backing + "\"\nMOUNTPOINT=\"" + cfg.mountpoint + "\"\n";
    if (!cfg.cache.empty())
        shown += "CACHE=\"" + cfg.cache + "\"\n";
    if (!cfg.options.empty())
        shown += "OPTIONS=\"" + cfg.options + "\"\n";
    ServiceConfig again;
    FUZZ_CHECK(parse_service_config(shown, kFile, again, error), shown + " -> " + error);
    FUZZ_CHECK(same(again, cfg), shown);
    return 0;
}
