// The execution contexts of DESIGN.md ("Executors and independent
// progress"). IoPool is one context: an io_context kept alive by a work
// guard and run by named threads of its own. Executors is the set the daemon
// owns — fill, writeback, gc — each an IoPool, so work that frees a resource
// never queues behind work that waits for it. Services receive an executor
// or strand by constructor; nothing starts a pool of its own or posts to a
// global one.
#pragma once

#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace overcache::bg {

using Executor = boost::asio::io_context::executor_type;
using Strand = boost::asio::strand<Executor>;
// A steady timer typed on the strand, not on any_io_executor: its handlers
// run on the strand, and Asio's type-erased executor comparison (a g++ 14
// -Wnull-dereference false positive in boost 1.74's any_executor) stays
// out of the build.
using StrandTimer =
    boost::asio::basic_waitable_timer<std::chrono::steady_clock,
                                      boost::asio::wait_traits<std::chrono::steady_clock>, Strand>;

class IoPool {
public:
    // `name` becomes the threads' names (at most 15 characters, with "-N").
    explicit IoPool(std::string name);
    ~IoPool(); // stop()s
    IoPool(const IoPool&) = delete;
    IoPool& operator=(const IoPool&) = delete;

    // Starts `threads` threads named "<name>-0", "<name>-1", ... After a
    // stop(), start() runs the pool again.
    void start(unsigned threads = 1);
    // Lets queued work finish (including work it posts to this pool), then
    // joins the threads. Idempotent. Work posted afterwards is not run
    // (it is destroyed with the pool) unless the pool is started again.
    // Cancel timers first: a pending timer is queued work. Never call it
    // from one of the pool's own threads.
    void stop();

    // Manual driving, for tests: with no threads started, run on the
    // calling thread. run_until_idle() runs every ready handler, including
    // those the handlers post, until none is ready; poll_one() runs at most
    // one. Both return how many handlers the io_context ran (a strand runs
    // several of its own handlers as one). Timers that have not expired do
    // not run. Must not be called while the pool's threads run.
    std::size_t run_until_idle();
    std::size_t poll_one();

    bool running() const noexcept { return !threads_.empty(); }
    const std::string& name() const noexcept { return name_; }

    Executor executor() { return ctx_.get_executor(); }
    Strand make_strand() { return boost::asio::make_strand(ctx_); }
    boost::asio::io_context& context() { return ctx_; }

private:
    std::string name_;
    boost::asio::io_context ctx_;
    std::optional<boost::asio::executor_work_guard<Executor>> guard_;
    std::vector<std::thread> threads_;
};

// How many threads each context gets in threaded mode.
struct ExecutorThreads {
    unsigned fill = 1;
    unsigned writeback = 1;
    unsigned gc = 1;
    unsigned meta = 1;
};

class Executors {
public:
    enum class Mode {
        threaded, // start() runs each pool on its own named threads
        manual,   // no thread ever runs; tests drive each pool themselves
    };

    explicit Executors(Mode mode = Mode::threaded, ExecutorThreads threads = {});
    ~Executors(); // stop()s
    Executors(const Executors&) = delete;
    Executors& operator=(const Executors&) = delete;

    // Threaded mode: starts the pools in dependency order, meta, gc,
    // writeback, fill (oc-meta-N, oc-gc-N, oc-wb-N, oc-fill-N); a second
    // start() does nothing.
    // Manual mode: does nothing.
    void start();
    // Stops the pools in reverse dependency order, each letting its queued
    // work finish before the next stops: fill first (queued fills may still
    // need GC to free buckets and may kick writeback), then writeback (its
    // copies may hand buckets to GC), then gc, which waits for nobody, then
    // meta, which nobody waits for. In
    // manual mode the queued work runs on the calling thread, in the same
    // order. Stop the services (timers cancelled, no new posts) before this.
    // Idempotent until the next start(). start() and stop() are for the
    // owning thread only.
    void stop();

    Mode mode() const noexcept { return mode_; }
    IoPool& fill() noexcept { return fill_; }
    IoPool& writeback() noexcept { return writeback_; }
    IoPool& gc() noexcept { return gc_; }
    // Upkeep of the index that may take long (trimming the kept names and
    // attributes): on threads of its own, so it never holds up GC.
    IoPool& meta() noexcept { return meta_; }

private:
    const Mode mode_;
    const ExecutorThreads threads_;
    bool stopped_ = false; // owning thread only
    // Declared in start order: destroyed (already stopped) in reverse.
    IoPool meta_{"oc-meta"};
    IoPool gc_{"oc-gc"};
    IoPool writeback_{"oc-wb"};
    IoPool fill_{"oc-fill"};
};

} // namespace overcache::bg
