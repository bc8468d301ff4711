// Fuzz target: config::parse_size, the sizes of -o options ("4M", "0.5G").
// Properties: a refusal is BadValue with a one-line message; an accepted
// size is rendered by format_size as text whose exact part (before the
// " (1.0 GiB)" approximation that sizes no unit divides get) parses back to
// the same bytes, and renders again to the same text (a fixed point).
#include "fuzz_check.hpp"
#include "overcache/config/config.hpp"

#include <string>

using namespace overcache;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(fuzz::as_text(data, size));
    fuzz::current_input = text;
    auto r = config::parse_size(text);
    if (!r) {
        FUZZ_CHECK(r.error().code == Errc::BadValue, r.error().message);
        FUZZ_CHECK(fuzz::one_line(r.error().message), r.error().message);
        return 0;
    }
    const std::string shown = config::format_size(*r);
    FUZZ_CHECK(fuzz::one_line(shown), shown);
    auto back = config::parse_size(shown.substr(0, shown.find(' ')));
    FUZZ_CHECK(back.has_value(), shown);
    FUZZ_CHECK(*back == *r, shown);
    FUZZ_CHECK(config::format_size(*back) == shown, shown);
    return 0;
}
