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
// While stopping: how often the flush's progress is looked at, and how much
// more time each step of progress asks for.
constexpr auto kStopEvery = std::chrono::seconds(5);
constexpr auto kStopGrant = std::chrono::microseconds(std::chrono::seconds(30));

} // namespace

ServiceStatus::ServiceStatus(std::string mountpoint, const cache::DataPath& data)
    : mountpoint_(std::move(mountpoint)), data_(data), wanted_(sd::notify_wanted()) {}

ServiceStatus::~ServiceStatus() {
    stopped();
}

void ServiceStatus::start() {
    if (!wanted_ || thread_.joinable())
        return;
    thread_ = std::thread([this] { run(); });
}

void ServiceStatus::stopping() {
    {
        std::lock_guard lk(mu_);
        if (phase_ != Phase::serving)
            return;
        phase_ = Phase::stopping;
    }
    cv_.notify_all();
    if (wanted_)
        sd::notify("STOPPING=1\nSTATUS=stopping: " + status_line());
}

void ServiceStatus::stopped() {
    stopping();
    {
        std::lock_guard lk(mu_);
        phase_ = Phase::stopped;
    }
    cv_.notify_all();
    // The mount is gone: a stat still in flight has returned (or returns
    // now, from the directory underneath).
    if (thread_.joinable())
        thread_.join();
}

void ServiceStatus::run() {
    // Served by the request loop: once it answers, so does the mount.
    struct stat st {};
    if (::stat(mountpoint_.c_str(), &st) != 0) {
        log::warn("cannot stat the mountpoint ", mountpoint_, " to report readiness");
        return;
    }
    std::unique_lock lk(mu_);
    if (phase_ == Phase::serving)
        sd::notify("READY=1\nSTATUS=" + status_line());
    while (!cv_.wait_for(lk, kStatusEvery, [this] { return phase_ != Phase::serving; }))
        sd::notify("STATUS=" + status_line());
    // Stopping: while a flush writes dirty data back, each step of progress
    // buys time; a flush that stalls gets none and the manager's stop
    // timeout ends it (the dirty data stays in the cache for the next mount).
    std::uint64_t last = dirty_bytes();
    while (!cv_.wait_for(lk, kStopEvery, [this] { return phase_ == Phase::stopped; })) {
        const std::uint64_t now = dirty_bytes();
        if (now == 0 && last == 0)
            continue;
        std::string msg = "STATUS=stopping: " + cli::human_bytes(now) + " dirty left to flush";
        if (now < last)
            msg += "\nEXTEND_TIMEOUT_USEC=" + std::to_string(kStopGrant.count());
        sd::notify(msg);
        last = now;
    }
}

std::uint64_t ServiceStatus::dirty_bytes() const {
    for (const auto& [k, v] : data_.stats())
        if (k == "dirty_data")
            return std::strtoull(v.c_str(), nullptr, 10);
    return 0;
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
