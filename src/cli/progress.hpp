// A one-line status on standard error, redrawn about every second while a
// long command runs, then erased. Only on a terminal: in a script or a log
// it prints nothing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace overcache::cli {

class Progress {
public:
    // `text` runs on the progress thread, once a second from the first
    // second on, and returns the line to show (without newline).
    using TextFn = std::function<std::string(std::chrono::seconds elapsed)>;
    explicit Progress(TextFn text);
    ~Progress() { stop(); }
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    // Ends the redraws and erases the line; idempotent.
    void stop();

private:
    void loop();

    TextFn text_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false; // guarded by mu_
    bool drawn_ = false;    // only the progress thread touches it until join
    std::thread thread_;
};

// 1536 -> "1.5 KiB"; below 1 KiB in bytes ("512 B").
std::string human_bytes(std::uint64_t bytes);

} // namespace overcache::cli
