#include "util/log.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

namespace overcache::log {
namespace {
std::atomic<Level> g_level{Level::info};
std::atomic<bool> g_syslog{false};
std::mutex g_stderr_mutex; // keeps lines from different threads whole
constexpr int kPrio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR}; // by Level

// Whether stderr is the journal's stream ($JOURNAL_STREAM is "DEV:INO" of
// it, set by systemd for a service's stdout/stderr): lines then start with
// a "<N>" syslog priority, which journald takes as the line's priority.
bool stderr_is_journal() noexcept {
    const char* js = std::getenv("JOURNAL_STREAM");
    if (js == nullptr)
        return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2)
        return false;
    struct stat st {};
    return ::fstat(STDERR_FILENO, &st) == 0 && static_cast<unsigned long long>(st.st_dev) == dev &&
           static_cast<unsigned long long>(st.st_ino) == ino;
}
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
        syslog(kPrio[idx], "%.*s", static_cast<int>(msg.size()), msg.data());
        return;
    }
    static const bool journal = stderr_is_journal();
    std::lock_guard lock(g_stderr_mutex);
    if (journal) {
        // The journal records who wrote the line; the level is its priority.
        std::fprintf(stderr, "<%d>%.*s\n", kPrio[idx], static_cast<int>(msg.size()), msg.data());
        return;
    }
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
