// DOC: the progress line of long subcommands (flush). A thread of its own
// redraws it, so the main thread can sit in the one write(2) that waits for
// the mount; whatever the text function reads (the control file) is read
// on that thread too. The line is drawn with '\r' and erased with an ANSI
// clear-to-end-of-line, which every terminal emulator in use understands.
#include "cli/progress.hpp"

#include <cstdio>
#include <unistd.h>

namespace overcache::cli {

Progress::Progress(TextFn text) : text_(std::move(text)) {
    if (::isatty(STDERR_FILENO) == 1)
        thread_ = std::thread([this] { loop(); });
}

void Progress::stop() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable())
        thread_.join();
    if (drawn_) {
        std::fputs("\r\033[K", stderr);
        std::fflush(stderr);
        drawn_ = false;
    }
}

void Progress::loop() {
    const auto start = std::chrono::steady_clock::now();
    auto next = start + std::chrono::seconds(1);
    std::unique_lock lk(mu_);
    while (!cv_.wait_until(lk, next, [this] { return stopping_; })) {
        lk.unlock();
        const auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(
            std::chrono::steady_clock::now() - start);
        const std::string line = text_(elapsed);
        std::fprintf(stderr, "\r\033[K%s", line.c_str());
        std::fflush(stderr);
        drawn_ = true;
        next += std::chrono::seconds(1);
        lk.lock();
    }
}

std::string human_bytes(std::uint64_t bytes) {
    static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024)
        return std::to_string(bytes) + " B";
    double v = static_cast<double>(bytes);
    std::size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof kUnits / sizeof kUnits[0]) {
        v /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
    return buf;
}

} // namespace overcache::cli
