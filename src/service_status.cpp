#include "service_status.hpp"

#include "cli/progress.hpp"
#include "util/log.hpp"
#include "util/sd_notify.hpp"

#include <chrono>
#include <cstdlib>
#include <sys/stat.h>

namespace overcache {

namespace {

constexpr auto kStatusEvery = std::chrono::seconds(10);

} // namespace

ServiceStatus::ServiceStatus(std::string mountpoint, const cache::DataPath& data)
    : mountpoint_(std::move(mountpoint)), data_(data), wanted_(sd::notify_wanted()) {}

ServiceStatus::~ServiceStatus() {
    stopping();
}

void ServiceStatus::start() {
    if (!wanted_ || thread_.joinable())
        return;
    thread_ = std::thread([this] { run(); });
}

void ServiceStatus::stopping() {
    {
        std::lock_guard lk(mu_);
        if (stop_)
            return;
        stop_ = true;
    }
    cv_.notify_all();
    // The loop has ended and the mount is gone: a stat still in flight
    // has returned (or returns now, from the directory underneath).
    if (thread_.joinable())
        thread_.join();
    if (wanted_)
        sd::notify("STOPPING=1\nSTATUS=stopping: " + status_line());
}

void ServiceStatus::run() {
    // Served by the request loop: once it answers, so does the mount.
    struct stat st {};
    if (::stat(mountpoint_.c_str(), &st) != 0) {
        log::warn("cannot stat the mountpoint ", mountpoint_, " to report readiness");
        return;
    }
    std::unique_lock lk(mu_);
    if (stop_)
        return;
    sd::notify("READY=1\nSTATUS=" + status_line());
    while (!cv_.wait_for(lk, kStatusEvery, [this] { return stop_; }))
        sd::notify("STATUS=" + status_line());
}

// "serving /mnt/fast (writeback), cache hits 93%, 12.0 MiB dirty": what the
// DataPath reports.
std::string ServiceStatus::status_line() const {
    std::string mode, ratio, dirty;
    for (const auto& [k, v] : data_.stats()) {
        if (k == "cache_mode")
            mode = v;
        else if (k == "cache_hit_ratio")
            ratio = v;
        else if (k == "dirty_data")
            dirty = v;
    }
    std::string line = "serving " + mountpoint_;
    if (!mode.empty())
        line += " (" + mode + ")";
    if (!ratio.empty())
        line += ", cache hits " + ratio + "%";
    if (!dirty.empty())
        line += ", " + cli::human_bytes(std::strtoull(dirty.c_str(), nullptr, 10)) + " dirty";
    return line;
}

} // namespace overcache
