// An execution context with threads of its own: an io_context kept alive by
// a work guard and run by `n` named threads. Each executor of DESIGN.md
// (foreground fills, GC, later writeback) is one IoPool, so work that frees
// a resource never queues behind work that waits for it.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <string>
#include <thread>
#include <vector>

namespace overcache::bg {

using Executor = boost::asio::io_context::executor_type;
using Strand = boost::asio::strand<Executor>;

class IoPool {
public:
    // `name` becomes the threads' names (at most 15 characters, with "-N").
    explicit IoPool(std::string name);
    ~IoPool(); // stop()s
    IoPool(const IoPool&) = delete;
    IoPool& operator=(const IoPool&) = delete;

    void start(unsigned threads = 1);
    // Lets queued work finish, then joins the threads. Idempotent.
    void stop();

    Executor executor() { return ctx_.get_executor(); }
    Strand make_strand() { return boost::asio::make_strand(ctx_); }
    boost::asio::io_context& context() { return ctx_; }

private:
    std::string name_;
    boost::asio::io_context ctx_;
    boost::asio::executor_work_guard<Executor> guard_;
    std::vector<std::thread> threads_;
};

} // namespace overcache::bg
