// DOC: see stop_watchdog.hpp.
#include "stop_watchdog.hpp"

#include "util/log.hpp"

#include <algorithm>
#include <cstdlib>
#include <future>
#include <memory>
#include <thread>

namespace overcache {

std::chrono::milliseconds stop_stall_limit(double backing_timeout_s) {
    const auto six = std::chrono::milliseconds(static_cast<long long>(backing_timeout_s * 6000));
    return std::max(six, std::chrono::milliseconds(10000));
}

void stop_or_exit(cache::DataPath& data, bg::Executors& executors, std::chrono::milliseconds limit,
                  int exit_code) {
    // Shared with the stopping thread, which may outlive this frame: it is
    // left running when the process ends.
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    std::thread stopper([&data, &executors, done] {
        data.stop();
        executors.stop();
        done->set_value();
    });
    std::uint64_t seen = data.stop_progress();
    auto last_move = std::chrono::steady_clock::now();
    const auto tick = std::min(limit, std::chrono::milliseconds(1000));
    for (;;) {
        if (finished.wait_for(tick) == std::future_status::ready) {
            stopper.join();
            return;
        }
        const auto now = std::chrono::steady_clock::now();
        if (const std::uint64_t p = data.stop_progress(); p != seen) {
            seen = p;
            last_move = now;
            continue;
        }
        if (now - last_move >= limit)
            break;
    }
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(limit).count();
    log::error("stopping: the cache's background work has not moved for ", secs,
               " s: a call into the backing does not return (it stopped answering). The cache "
               "is synced and the daemon exits without it; dirty data stays in the cache and is "
               "written back after the next mount");
    if (auto r = data.sync_for_exit(); !r)
        log::error("stopping: syncing the cache failed: ", to_string(r.error()),
                   "; the next mount recovers what the device holds");
    stopper.detach();
    std::_Exit(exit_code);
}

} // namespace overcache
