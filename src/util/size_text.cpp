#include "util/size_text.hpp"

#include <cstdio>

namespace overcache {

std::string size_text(std::uint64_t bytes) {
    static const char* const kUnits[] = {"", "K", "M", "G", "T"};
    std::uint64_t n = bytes;
    int u = 0;
    while (u < 4 && n >= 1024 && n % 1024 == 0) {
        n /= 1024;
        ++u;
    }
    std::string out = std::to_string(n) + kUnits[u];
    if (u == 0 && bytes >= 10 * 1024) {
        static const char* const kNames[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
        double v = static_cast<double>(bytes) / 1024;
        int i = 0;
        while (i < 4 && v >= 1024) {
            v /= 1024;
            ++i;
        }
        char buf[32];
        std::snprintf(buf, sizeof buf, " (%.1f %s)", v, kNames[i]);
        out += buf;
    }
    return out;
}

} // namespace overcache
