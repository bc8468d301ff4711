#include "util/log.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <unordered_map>
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
// Warnings and errors come per request when something keeps failing (a
// backing that returns EIO for every read): each kind may log kBurst lines
// a window, then is counted and summed up with its next line after the
// window. A kind is the message's fixed part: what comes before its first
// path, number or quote ("cache: fill failed: " of "cache: fill failed:
// /data/x: EIO"), at most kKeyChars characters.
constexpr std::size_t kKeyChars = 40;

std::string_view kind_of(std::string_view msg) {
    const std::size_t end = std::min(msg.find_first_of("/0123456789'\"["), kKeyChars);
    return msg.substr(0, end);
}
constexpr std::size_t kMaxKinds = 256;
struct RateLimit {
    using Clock = std::chrono::steady_clock;
    struct Window {
        Clock::time_point start;
        unsigned logged = 0;
        unsigned long suppressed = 0;
    };
    std::mutex mu;
    unsigned burst = 10;
    Clock::duration window = std::chrono::seconds(60);
    std::unordered_map<std::string, Window> kinds;

    // Whether `msg` may be logged; `suppressed`: how many of its kind were
    // not, in the window that just ended, and `note` says so.
    bool admit(std::string_view msg, std::string& note) {
        const auto now = Clock::now();
        std::lock_guard lk(mu);
        if (kinds.size() >= kMaxKinds)
            kinds.clear();
        auto [it, fresh] = kinds.try_emplace(std::string(kind_of(msg)));
        Window& w = it->second;
        if (fresh || now - w.start >= window) {
            if (w.suppressed > 0)
                note = std::to_string(w.suppressed) +
                       " more messages like the next one were left out (at most " +
                       std::to_string(burst) + " of a kind every " +
                       std::to_string(std::chrono::duration_cast<std::chrono::seconds>(window)
                                          .count()) +
                       " s)";
            w = Window{now, 0, 0};
        }
        if (w.logged < burst) {
            ++w.logged;
            return true;
        }
        ++w.suppressed;
        return false;
    }
};
RateLimit g_limit;

void emit(Level l, std::string_view msg) noexcept;

} // namespace

void set_rate_limit(unsigned burst, std::chrono::milliseconds window) noexcept {
    std::lock_guard lk(g_limit.mu);
    g_limit.burst = burst;
    g_limit.window = window;
    g_limit.kinds.clear();
}

void write(Level l, std::string_view msg) noexcept {
    if (l >= Level::warn) {
        std::string note;
        bool ok = true;
        try {
            ok = g_limit.admit(msg, note);
        } catch (...) { // no memory for the table: log rather than lose it
        }
        if (!ok)
            return;
        if (!note.empty())
            emit(l, note);
    }
    emit(l, msg);
}

void set_level(Level l) noexcept { g_level.store(l, std::memory_order_relaxed); }
Level level() noexcept { return g_level.load(std::memory_order_relaxed); }

void use_syslog(bool on) noexcept {
    if (on)
        openlog("overcache", LOG_PID, LOG_DAEMON);
    g_syslog.store(on);
}

namespace {
void emit(Level l, std::string_view msg) noexcept {
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
} // namespace

void assert_failed(const char* cond, const char* file, int line) noexcept {
    char buf[512];
    std::snprintf(buf, sizeof buf, "assertion failed: %s at %s:%d", cond, file, line);
    write(Level::error, buf);
    std::abort();
}

} // namespace overcache::log
