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
// A writeback batch (up to 64 MiB) shows as progress only when it is done:
// the grant covers one at a slow backing's pace.
constexpr auto kStopGrant = std::chrono::microseconds(std::chrono::seconds(120));

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
        sd::notify("STOPPING=1\nSTATUS=" + status_line("stopping"));
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
        sd::notify("READY=1\nSTATUS=" + status_line("serving"));
    while (!cv_.wait_for(lk, kStatusEvery, [this] { return phase_ != Phase::serving; }))
        sd::notify("STATUS=" + status_line("serving"));
    // Stopping: while a flush writes dirty data back, each step of progress
    // buys time; a flush that stalls gets none and the manager's stop
    // timeout ends it (the dirty data stays in the cache for the next mount).
    Progress last = progress();
    while (!cv_.wait_for(lk, kStopEvery, [this] { return phase_ == Phase::stopped; })) {
        const Progress now = progress();
        if (now.dirty == 0 && last.dirty == 0)
            continue;
        std::string msg =
            "STATUS=stopping: " + cli::human_bytes(now.dirty) + " dirty left to flush";
        if (now.dirty < last.dirty || now.written > last.written)
            msg += "\nEXTEND_TIMEOUT_USEC=" + std::to_string(kStopGrant.count());
        sd::notify(msg);
        last = now;
    }
}

ServiceStatus::Progress ServiceStatus::progress() const {
    Progress p;
    for (const auto& [k, v] : data_.stats()) {
        if (k == "dirty_data")
            p.dirty = std::strtoull(v.c_str(), nullptr, 10);
        else if (k == "writeback_bytes")
            p.written = std::strtoull(v.c_str(), nullptr, 10);
    }
    return p;
}

// "serving /mnt/fast (writeback), cache hits 93%, 12.0 MiB dirty": what the
// DataPath reports.
std::string ServiceStatus::status_line(const char* doing) const {
    const std::string mode = config::to_string(data_.mode());
    std::string ratio, dirty;
    for (const auto& [k, v] : data_.stats()) {
        if (k == "cache_hit_ratio")
            ratio = v;
        else if (k == "dirty_data")
            dirty = v;
    }
    std::string line = std::string(doing) + " " + mountpoint_;
    line += " (" + mode + ")";
    if (!ratio.empty())
        line += ", cache hits " + ratio + "%";
    if (!dirty.empty())
        line += ", " + cli::human_bytes(std::strtoull(dirty.c_str(), nullptr, 10)) + " dirty";
    return line;
}

} // namespace overcache
