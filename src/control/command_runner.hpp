// Runs the commands of one control-file write, in order, against a
// CommandTarget, and keeps `last_error` for the control file's text. A
// command may finish later on another thread (flush waits for writeback);
// the write's completion is called once every command has finished or the
// first one failed. No libfuse here: the FUSE adapter turns the completion
// into the write's reply.
#pragma once

#include "control/command.hpp"
#include "control/stats_text.hpp"
#include "overcache/util/result.hpp"

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace overcache::control {

// Completion of a command or of a whole write; called exactly once, from
// any thread, possibly before the call that started the work returns.
using CommandDone = std::function<void(Result<void>)>;

// What commands act on; the FUSE adapter implements it over the mount's
// DataPath. One member a verb.
class CommandTarget {
public:
    virtual ~CommandTarget() = default;
    virtual void flush(CommandDone done) = 0;
    virtual void gc(CommandDone done) = 0;
    // `set KEY VALUE`: see control/settings.hpp. Done once the new value is
    // in force (a switch away from writeback: once the flush is done).
    virtual void set(const std::string& key, const std::string& value, CommandDone done) = 0;
    // `invalidate PATH`: `rel_path` (decoded) names a regular file below
    // the mount's root. Done once its clean cached data is dropped (dirty
    // data is written back first, never dropped).
    virtual void invalidate(const std::string& rel_path, CommandDone done) = 0;
    // `prefetch PATH`: `rel_path` (decoded) names a regular file below the
    // mount's root. Done once all of its data is in the cache, or with why
    // not (the cache is full: how much was fetched).
    virtual void prefetch(const std::string& rel_path, CommandDone done) = 0;
    // `reset_stats`: the counters, their windows and the working set start
    // from zero; settings and the cache's contents are untouched.
    virtual void reset_stats(CommandDone done) = 0;
};

class CommandRunner {
public:
    // Runs in flight keep the target alive (they may outlive the runner's
    // owner by the time a long flush completes).
    explicit CommandRunner(std::shared_ptr<CommandTarget> target);

    // Parses `text`, one write's bytes, then runs its commands one after
    // the other; `done` gets success, the parse error (nothing ran) or the
    // first command's error (the commands after it do not run). Every
    // failure is recorded as last_error.
    void run(std::string_view text, CommandDone done);

    // Records a refusal decided before parsing (a write too large).
    void record_error(std::string text);

    // The most recent failure as one line, "" when none: a success clears
    // nothing, so a failure stays readable until a later one replaces it.
    std::string last_error() const;

    // The control file's lines of the command machinery.
    void add_stats(StatLines& out) const;

private:
    struct Shared;
    class Run;
    std::shared_ptr<Shared> shared_;
    std::shared_ptr<CommandTarget> target_;
};

} // namespace overcache::control
