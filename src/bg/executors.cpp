// DOC: IoPool, the one way overcache runs background work: an io_context of
// its own, a work guard so it idles instead of returning, and named threads
// (visible in top -H and gdb). stop() drops the guard and joins, so work
// already posted runs to its end; nothing posts to a global executor.
#include "overcache/bg/executors.hpp"

#include "util/log.hpp"

#include <pthread.h>

namespace overcache::bg {

IoPool::IoPool(std::string name) : name_(std::move(name)), guard_(ctx_.get_executor()) {}

IoPool::~IoPool() {
    stop();
}

void IoPool::start(unsigned threads) {
    for (unsigned i = 0; i < threads; ++i) {
        threads_.emplace_back([this, i] {
            std::string n = name_.substr(0, 12) + "-" + std::to_string(i);
            ::pthread_setname_np(::pthread_self(), n.substr(0, 15).c_str());
            try {
                ctx_.run();
            } catch (const std::exception& e) {
                log::error(name_, ": background task failed: ", e.what());
                OC_ASSERT(!"background task threw");
            }
        });
    }
}

void IoPool::stop() {
    guard_.reset();
    for (auto& t : threads_)
        if (t.joinable())
            t.join();
    threads_.clear();
}

} // namespace overcache::bg
