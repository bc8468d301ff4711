#include "util/log.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <syslog.h>

namespace overcache::log {
namespace {
std::atomic<Level> g_level{Level::info};
std::atomic<bool> g_syslog{false};
std::mutex g_stderr_mutex; // keeps lines from different threads whole
} // namespace

void set_level(Level l) noexcept { g_level.store(l, std::memory_order_relaxed); }
Level level() noexcept { return g_level.load(std::memory_order_relaxed); }

void use_syslog(bool on) noexcept {
    if (on)
        openlog("overcache", LOG_PID, LOG_DAEMON);
    g_syslog.store(on);
}

void write(Level l, std::string_view msg) noexcept {
    static constexpr const char* kNames[] = {"debug", "info", "warning", "error"};
    const int idx = static_cast<int>(l);
    if (g_syslog.load()) {
        static constexpr int kPrio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
        syslog(kPrio[idx], "%.*s", static_cast<int>(msg.size()), msg.data());
        return;
    }
    std::lock_guard lock(g_stderr_mutex);
    std::fprintf(stderr, "overcache: %s: %.*s\n", kNames[idx], static_cast<int>(msg.size()),
                 msg.data());
}

void assert_failed(const char* cond, const char* file, int line) noexcept {
    char buf[512];
    std::snprintf(buf, sizeof buf, "assertion failed: %s at %s:%d", cond, file, line);
    write(Level::error, buf);
    std::abort();
}

} // namespace overcache::log
