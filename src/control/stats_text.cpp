// DOC: renders the control file's text. Readers (the CLI, scripts, tests)
// split each line at its first space, so rendering guarantees one word for a
// key and one line for a value whatever a DataPath puts in its stats.
#include "control/stats_text.hpp"

namespace overcache::control {

std::string render_stats(const StatLines& lines) {
    std::string out;
    for (const auto& [key, value] : lines) {
        if (key.empty()) {
            out += '-';
        } else {
            for (const char c : key)
                out += (c == ' ' || c == '\t' || c == '\n' || c == '\r') ? '_' : c;
        }
        out += ' ';
        if (value.empty()) {
            out += '-';
        } else {
            for (const char c : value)
                out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
        }
        out += '\n';
    }
    return out;
}

} // namespace overcache::control
