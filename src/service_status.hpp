// What a service manager (systemd, Type=notify) is told about the mount:
// READY=1 once the mount answers requests, a STATUS= line with the hit
// ratio and the dirty data every 10 seconds, and STOPPING=1 when it stops.
// While a stop flushes dirty data (flush_on_unmount) and the flush makes
// progress, it asks for more time (EXTEND_TIMEOUT_USEC), so a unit's stop
// timeout need only fit a flush that has stalled, not a long one.
// Does nothing unless $NOTIFY_SOCKET names a socket.
#pragma once

#include "overcache/cache/data_path.hpp"

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace overcache {

class ServiceStatus {
public:
    ServiceStatus(std::string mountpoint, const cache::DataPath& data);
    ~ServiceStatus(); // stopping(), if not called yet
    ServiceStatus(const ServiceStatus&) = delete;
    ServiceStatus& operator=(const ServiceStatus&) = delete;

    // Call right before the request loop runs: a thread stats the
    // mountpoint (which waits for the loop to answer), then says READY=1.
    void start();
    // The request loop has ended (the mount is gone): says STOPPING=1; the
    // cache's stop (perhaps a flush) follows.
    void stopping();
    // The cache has stopped: ends the thread (stopping() first if not yet).
    void stopped();

private:
    void run();
    // "serving /mnt/fast (writeback), cache hits 93%, 12.0 MiB dirty"
    std::string status_line(const char* doing) const;
    struct Progress {
        std::uint64_t dirty = 0;   // bytes not yet on the backing
        std::uint64_t written = 0; // bytes written back so far
    };
    Progress progress() const;

    const std::string mountpoint_;
    const cache::DataPath& data_;
    const bool wanted_;
    std::mutex mu_;
    std::condition_variable cv_;
    enum class Phase { serving, stopping, stopped };
    Phase phase_ = Phase::serving; // guarded by mu_
    std::thread thread_;
};

} // namespace overcache
