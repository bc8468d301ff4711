// Leveled logging. To stderr in the foreground, to syslog once daemonized.
// Usage: OC_LOG(warn, "cannot open {}: {}", path, err) is not available in
// g++ 12 (no <format>), so messages are built with log_line(level, parts...).
#pragma once

#include <chrono>
#include <sstream>
#include <string>
#include <string_view>

namespace overcache::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

void set_level(Level l) noexcept;
Level level() noexcept;
// After daemonizing: send lines to syslog(3) under the ident "overcache".
void use_syslog(bool on) noexcept;
// Warnings and errors are rate-limited by kind (the text before their first
// path, number or quote):
// 10 lines a minute each, then a count of what was left out comes with the
// next line after the minute.
void write(Level l, std::string_view msg) noexcept;
// Test seam: another burst and window (clears what was counted).
void set_rate_limit(unsigned burst, std::chrono::milliseconds window) noexcept;

template <typename... Parts> void line(Level l, const Parts&... parts) {
    if (l < level())
        return;
    std::ostringstream os;
    (os << ... << parts);
    write(l, os.str());
}

template <typename... P> void debug(const P&... p) { line(Level::debug, p...); }
template <typename... P> void info(const P&... p) { line(Level::info, p...); }
template <typename... P> void warn(const P&... p) { line(Level::warn, p...); }
template <typename... P> void error(const P&... p) { line(Level::error, p...); }

} // namespace overcache::log

// Invariant check: logs and aborts. Stays on in release builds because a
// broken invariant in a cache means data could be served wrong.
#define OC_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ::overcache::log::assert_failed(#cond, __FILE__, __LINE__);                            \
    } while (0)

namespace overcache::log {
[[noreturn]] void assert_failed(const char* cond, const char* file, int line) noexcept;
}
