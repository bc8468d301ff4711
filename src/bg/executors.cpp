// DOC: the execution contexts. IoPool, the one way overcache runs background
// work: an io_context of its own, a work guard so it idles instead of
// returning, and named threads (visible in top -H and gdb). stop() drops the
// guard and joins, so work already posted runs to its end. Executors owns
// the daemon's three pools: fill (foreground cache inserts), writeback
// (dirty copies to the backing) and gc (accounting, invalidation, moving
// GC). They start gc → writeback → fill and stop in reverse: a pool stops
// only after every pool that may wait on it or post to it has drained, so
// queued fills can still get buckets from GC while they finish. Manual mode
// starts no thread: tests run exactly the queued work with
// run_until_idle()/poll_one(), deterministically, instead of sleeping.
#include "overcache/bg/executors.hpp"

#include "util/log.hpp"

#include <pthread.h>

namespace overcache::bg {

IoPool::IoPool(std::string name) : name_(std::move(name)) {
    guard_.emplace(ctx_.get_executor());
}

IoPool::~IoPool() {
    stop();
}

void IoPool::start(unsigned threads) {
    if (!guard_) {
        guard_.emplace(ctx_.get_executor());
        ctx_.restart(); // it ran out of work when the last stop() drained it
    }
    const std::size_t first = threads_.size();
    for (std::size_t i = first; i < first + threads; ++i) {
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
    for (const auto& t : threads_)
        OC_ASSERT(t.get_id() != std::this_thread::get_id()); // would join itself
    guard_.reset();
    for (auto& t : threads_)
        if (t.joinable())
            t.join();
    threads_.clear();
}

std::size_t IoPool::run_until_idle() {
    OC_ASSERT(!running());
    std::size_t total = 0;
    for (;;) {
        if (ctx_.stopped())
            ctx_.restart();
        const std::size_t n = ctx_.poll();
        if (n == 0)
            return total;
        total += n;
    }
}

std::size_t IoPool::poll_one() {
    OC_ASSERT(!running());
    if (ctx_.stopped())
        ctx_.restart();
    return ctx_.poll_one();
}

Executors::Executors(Mode mode, ExecutorThreads threads) : mode_(mode), threads_(threads) {}

Executors::~Executors() {
    stop();
}

void Executors::start() {
    stopped_ = false;
    if (mode_ == Mode::manual || fill_.running())
        return; // nothing to run, or already running
    meta_.start(threads_.meta);
    gc_.start(threads_.gc);
    writeback_.start(threads_.writeback);
    fill_.start(threads_.fill);
}

void Executors::stop() {
    if (stopped_)
        return;
    stopped_ = true;
    for (IoPool* p : {&fill_, &writeback_, &gc_, &meta_}) {
        if (mode_ == Mode::manual)
            p->run_until_idle();
        p->stop();
    }
}

} // namespace overcache::bg
