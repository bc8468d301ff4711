// DOC: runs one write's commands in order. A command completes through a
// callback that may come inline (nothing to flush) or later from another
// thread (writeback's); a Run steps through its commands with a trampoline
// so that a write of thousands of inline-completing lines does not recurse
// once per line, and so that no thread waits for a command: the thread that
// completes one starts the next. No lock is held while a command runs, so a
// read of the control file (last_error, stats) never waits for a flush.
// last_error lives in Shared, owned jointly by the runner and every Run in
// flight, because a flush may complete after the mount began to shut down.
#include "control/command_runner.hpp"

#include "util/log.hpp"

#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

namespace overcache::control {

struct CommandRunner::Shared {
    mutable std::mutex mu;
    std::string last_error; // guarded by mu

    void record(std::string text) {
        log::warn("control: ", text);
        std::lock_guard lk(mu);
        last_error = std::move(text);
    }
};

class CommandRunner::Run : public std::enable_shared_from_this<Run> {
public:
    Run(std::shared_ptr<Shared> shared, std::shared_ptr<CommandTarget> target,
        std::vector<Command> cmds, CommandDone done)
        : shared_(std::move(shared)), target_(std::move(target)), cmds_(std::move(cmds)),
          done_(std::move(done)) {}

    // Starts commands until one completes later (its completion goes on)
    // or all have run.
    void step() {
        for (;;) {
            if (failed_ || next_ == cmds_.size()) {
                finish();
                return;
            }
            phase_.store(kStarted);
            start(cmds_[next_]);
            int expect = kStarted;
            if (phase_.compare_exchange_strong(expect, kWaiting))
                return; // completed() runs later and continues from there
            // Completed inside start(): loop instead of recursing.
        }
    }

private:
    // kStarted: start() is running. kWaiting: start() returned first, the
    // completion continues. kInline: the completion came first, step()
    // continues. The compare-exchanges order the two hand-overs.
    static constexpr int kStarted = 0, kWaiting = 1, kInline = 2;

    void start(const Command& c) {
        auto self = shared_from_this();
        CommandDone done = [self](Result<void> r) { self->completed(std::move(r)); };
        const char* name = spec_of(c.verb).name;
        log::debug("control: ", name);
        switch (c.verb) {
        case Verb::flush:
            target_->flush(std::move(done));
            return;
        case Verb::gc:
            target_->gc(std::move(done));
            return;
        case Verb::set:
            target_->set(c.args[0], c.args[1], std::move(done));
            return;
        case Verb::reset_stats:
            target_->reset_stats(std::move(done));
            return;
        case Verb::invalidate: {
            auto path = decode_path_arg(c.args[0]);
            if (!path)
                return done(fail(path.error()));
            target_->invalidate(*path, std::move(done));
            return;
        }
        case Verb::prefetch: {
            auto path = decode_path_arg(c.args[0]);
            if (!path)
                return done(fail(path.error()));
            target_->prefetch(*path, std::move(done));
            return;
        }
        }
        done(fail(Errc::NotSupported, std::string(name) + ": not implemented"));
    }

    void completed(Result<void> r) {
        if (!r) {
            // A refused value's message says it all; a system error adds
            // its errno's text.
            const Error& e = r.error();
            shared_->record(std::string(spec_of(cmds_[next_].verb).name) + ": " +
                            (e.code == Errc::Sys || e.message.empty() ? to_string(e)
                                                                       : e.message));
            error_ = std::move(r).error();
            failed_ = true;
        }
        ++next_;
        int expect = kStarted;
        if (phase_.compare_exchange_strong(expect, kInline))
            return;
        step();
    }

    void finish() {
        CommandDone done = std::move(done_);
        if (failed_)
            done(fail(std::move(error_)));
        else
            done({});
    }

    std::shared_ptr<Shared> shared_;
    std::shared_ptr<CommandTarget> target_;
    std::vector<Command> cmds_;
    CommandDone done_;
    std::atomic<int> phase_{kStarted};
    // Written by one command's completion, read by whoever steps next; the
    // phase_ exchange between them orders the accesses.
    std::size_t next_ = 0;
    bool failed_ = false;
    Error error_;
};

CommandRunner::CommandRunner(std::shared_ptr<CommandTarget> target)
    : shared_(std::make_shared<Shared>()), target_(std::move(target)) {}

void CommandRunner::run(std::string_view text, CommandDone done) {
    auto cmds = parse_commands(text);
    if (!cmds) {
        Error e = std::move(cmds).error();
        shared_->record(e.message);
        done(fail(std::move(e)));
        return;
    }
    std::make_shared<Run>(shared_, target_, std::move(*cmds), std::move(done))->step();
}

void CommandRunner::record_error(std::string text) {
    shared_->record(std::move(text));
}

std::string CommandRunner::last_error() const {
    std::lock_guard lk(shared_->mu);
    return shared_->last_error;
}

void CommandRunner::add_stats(StatLines& out) const {
    out.emplace_back("last_error", last_error());
}

} // namespace overcache::control
