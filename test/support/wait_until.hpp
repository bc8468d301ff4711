// Test support: waiting on the state a test needs, never on time alone.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace overcache::test {

// Polls `done` (every `every`) until it holds or `timeout` passes; returns
// whether it held.
inline bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                       std::chrono::milliseconds every = std::chrono::milliseconds(50)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(every);
    }
    return true;
}

} // namespace overcache::test
