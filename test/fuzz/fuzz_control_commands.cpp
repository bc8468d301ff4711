// Fuzz target: control::parse_commands, the lines written to .overcache.
// Properties: a refusal is BadValue with a short printable one-line message;
// an accepted write is one command a line, each a row of the command table
// with an argument count in its bounds and words without blanks, and the
// commands rendered back as text ("verb arg ...\n" a line) parse to the same.
#include "control/command.hpp"
#include "fuzz_check.hpp"

#include <string>

using namespace overcache;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text = fuzz::as_text(data, size);
    fuzz::current_input = text;
    auto r = control::parse_commands(text);
    if (!r) {
        const std::string& msg = r.error().message;
        FUZZ_CHECK(r.error().code == Errc::BadValue, msg);
        FUZZ_CHECK(fuzz::one_line(msg), msg);
        // quote() keeps what was written printable and short.
        bool printable = true;
        for (unsigned char c : msg)
            printable = printable && c >= 0x20 && c < 0x7f;
        FUZZ_CHECK(printable, msg);
        FUZZ_CHECK(msg.size() <= 400, msg);
        return 0;
    }
    std::string rendered;
    for (const auto& cmd : *r) {
        const auto& spec = control::spec_of(cmd.verb);
        FUZZ_CHECK(cmd.args.size() >= spec.min_args && cmd.args.size() <= spec.max_args, spec.name);
        rendered += spec.name;
        for (const auto& a : cmd.args) {
            FUZZ_CHECK(!a.empty() && a.find_first_of(" \t\n") == std::string::npos, a);
            rendered += ' ' + a;
        }
        rendered += '\n';
    }
    auto again = control::parse_commands(rendered);
    FUZZ_CHECK(again.has_value(), rendered);
    FUZZ_CHECK(again->size() == r->size(), rendered);
    for (std::size_t i = 0; i < r->size(); ++i) {
        FUZZ_CHECK((*again)[i].verb == (*r)[i].verb, rendered);
        FUZZ_CHECK((*again)[i].args == (*r)[i].args, rendered);
    }
    return 0;
}
