// Text someone typed, made fit for a one-line message: bytes outside
// printable ASCII become \xNN and anything past `max` bytes is cut to "...".
// Printable text of up to `max` bytes comes back unchanged, so a message
// reads as before; a value with a newline or a terminal escape in it cannot
// break the line a log, stderr or the control file's last_error shows.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace overcache {

inline std::string printable(std::string_view s, std::size_t max = 256) {
    std::string out;
    out.reserve(s.size() < max ? s.size() : max);
    for (std::size_t i = 0; i < s.size() && i < max; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        }
    }
    if (s.size() > max)
        out += "...";
    return out;
}

} // namespace overcache
