// control::CommandRunner: one write's commands run in order against a fake
// target; a bad line runs nothing; the first failure ends the write and
// becomes last_error, which a success does not clear; a command that
// completes later, from another thread, continues the write from there; a
// long write of commands that complete inline does not recurse per line.
#include "control/command_runner.hpp"

#include <atomic>
#include <doctest/doctest.h>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace overcache;
using namespace overcache::control;

namespace {

// Records the verbs it is asked to run; completes them inline with `result`
// unless `hold_flush` is set, in which case a flush's completion is kept for
// the test to call.
class FakeTarget final : public CommandTarget {
public:
    void flush(CommandDone done) override {
        std::lock_guard lk(mu);
        log.emplace_back("flush");
        if (hold_flush) {
            held = std::move(done);
            return;
        }
        done(flush_result);
    }
    void gc(CommandDone done) override {
        {
            std::lock_guard lk(mu);
            log.emplace_back("gc");
        }
        done({});
    }
    void set(const std::string& key, const std::string& value, CommandDone done) override {
        {
            std::lock_guard lk(mu);
            log.emplace_back("set " + key + " " + value);
        }
        done({});
    }
    void invalidate(const std::string& rel_path, CommandDone done) override {
        {
            std::lock_guard lk(mu);
            log.emplace_back("invalidate " + rel_path);
        }
        done({});
    }
    void prefetch(const std::string& rel_path, CommandDone done) override {
        {
            std::lock_guard lk(mu);
            log.emplace_back("prefetch " + rel_path);
        }
        done({});
    }
    void reset_stats(CommandDone done) override {
        {
            std::lock_guard lk(mu);
            log.emplace_back("reset_stats");
        }
        done({});
    }

    std::mutex mu;
    std::vector<std::string> log;
    bool hold_flush = false;
    Result<void> flush_result;
    CommandDone held;
};

struct Outcome {
    std::optional<Result<void>> result;
    int calls = 0;
};

CommandDone record(Outcome& o) {
    return [&o](Result<void> r) {
        ++o.calls;
        o.result = std::move(r);
    };
}

} // namespace

TEST_SUITE("control") {
    TEST_CASE("CommandRunner: commands run in order and the write succeeds") {
        auto target = std::make_shared<FakeTarget>();
        CommandRunner runner(target);
        Outcome o;
        runner.run("flush\ngc\nflush", record(o));
        CHECK(o.calls == 1);
        REQUIRE(o.result.has_value());
        CHECK(o.result->has_value());
        CHECK(target->log == std::vector<std::string>{"flush", "gc", "flush"});
        CHECK(runner.last_error().empty());
        StatLines lines;
        runner.add_stats(lines);
        CHECK(lines == StatLines{{"last_error", ""}});
    }

    TEST_CASE("CommandRunner: prefetch gets its path decoded; a bad escape runs nothing") {
        auto target = std::make_shared<FakeTarget>();
        CommandRunner runner(target);
        Outcome o;
        runner.run("prefetch data/set%201/x", record(o));
        REQUIRE(o.result.has_value());
        CHECK(o.result->has_value());
        CHECK(target->log == std::vector<std::string>{"prefetch data/set 1/x"});
        Outcome bad;
        runner.run("prefetch x%zz", record(bad));
        REQUIRE(bad.result.has_value());
        CHECK_FALSE(bad.result->has_value());
        CHECK(target->log.size() == 1);
    }

    TEST_CASE("CommandRunner: invalidate gets its path decoded; a bad escape runs nothing") {
        auto target = std::make_shared<FakeTarget>();
        CommandRunner runner(target);
        Outcome o;
        runner.run("invalidate dir/a%20b%25.txt", record(o));
        REQUIRE(o.result.has_value());
        CHECK(o.result->has_value());
        CHECK(target->log == std::vector<std::string>{"invalidate dir/a b%.txt"});
        Outcome bad;
        runner.run("invalidate a%2", record(bad));
        REQUIRE(bad.result.has_value());
        REQUIRE_FALSE(bad.result->has_value());
        CHECK(to_errno(bad.result->error()) == EINVAL);
        CHECK(target->log.size() == 1);
    }

    TEST_CASE("CommandRunner: a bad line runs nothing and is kept as last_error") {
        auto target = std::make_shared<FakeTarget>();
        CommandRunner runner(target);
        Outcome o;
        runner.run("flush\nfrob\n", record(o));
        CHECK(o.calls == 1);
        REQUIRE(o.result.has_value());
        REQUIRE_FALSE(o.result->has_value());
        CHECK(to_errno(o.result->error()) == EINVAL);
        CHECK(target->log.empty());
        CHECK(runner.last_error() == "line 2: unknown command 'frob'");

        // A later success leaves it there; a later failure replaces it.
        Outcome ok;
        runner.run("gc\n", record(ok));
        CHECK(ok.result->has_value());
        CHECK(runner.last_error() == "line 2: unknown command 'frob'");
        Outcome bad;
        runner.run("\n", record(bad));
        CHECK(runner.last_error() == "empty command line");
    }

    TEST_CASE("CommandRunner: the first failing command ends the write with its errno") {
        auto target = std::make_shared<FakeTarget>();
        target->flush_result = fail_sys(EIO, "backing write failed");
        CommandRunner runner(target);
        Outcome o;
        runner.run("gc\nflush\ngc\n", record(o));
        CHECK(o.calls == 1);
        REQUIRE_FALSE(o.result->has_value());
        CHECK(to_errno(o.result->error()) == EIO);
        CHECK(target->log == std::vector<std::string>{"gc", "flush"}); // the last gc did not run
        CHECK(runner.last_error() == "flush: backing write failed: Input/output error");
    }

    TEST_CASE("CommandRunner: a write of no bytes succeeds and runs nothing") {
        auto target = std::make_shared<FakeTarget>();
        CommandRunner runner(target);
        Outcome o;
        runner.run("", record(o));
        CHECK(o.calls == 1);
        CHECK(o.result->has_value());
        CHECK(target->log.empty());
    }

    TEST_CASE("CommandRunner: a flush that completes later, on another thread, continues the "
              "write there" *
              doctest::timeout(10)) {
        auto target = std::make_shared<FakeTarget>();
        target->hold_flush = true;
        CommandRunner runner(target);
        std::promise<Result<void>> finished;
        auto future = finished.get_future();
        runner.run("flush\ngc\n", [&](Result<void> r) { finished.set_value(std::move(r)); });
        // Nothing answered yet, and last_error readable meanwhile (no lock
        // held across the flush).
        CHECK(future.wait_for(std::chrono::seconds(0)) == std::future_status::timeout);
        CHECK(runner.last_error().empty());
        CommandDone held;
        {
            std::lock_guard lk(target->mu);
            REQUIRE(target->held);
            held = std::move(target->held);
            CHECK(target->log == std::vector<std::string>{"flush"});
        }
        std::thread completer([&] { held({}); });
        completer.join();
        const Result<void> r = future.get();
        CHECK(r.has_value());
        std::lock_guard lk(target->mu);
        CHECK(target->log == std::vector<std::string>{"flush", "gc"});
    }

    TEST_CASE("CommandRunner: the runner may be gone when a held flush completes" *
              doctest::timeout(10)) {
        auto target = std::make_shared<FakeTarget>();
        target->hold_flush = true;
        Outcome o;
        {
            CommandRunner runner(target);
            runner.run("flush\n", record(o));
        }
        CommandDone held = std::move(target->held);
        REQUIRE(held);
        held(fail_sys(ESHUTDOWN, "the mount is shutting down"));
        CHECK(o.calls == 1);
        CHECK(to_errno(o.result->error()) == ESHUTDOWN);
    }

    TEST_CASE("CommandRunner: thousands of lines that complete inline do not recurse" *
              doctest::timeout(30)) {
        auto target = std::make_shared<FakeTarget>();
        CommandRunner runner(target);
        std::string text;
        constexpr int kLines = 100000;
        for (int i = 0; i < kLines; ++i)
            text += i % 2 == 0 ? "flush\n" : "gc\n";
        Outcome o;
        // A recursion per line would need tens of MiB of stack here.
        runner.run(text, record(o));
        CHECK(o.calls == 1);
        CHECK(o.result->has_value());
        CHECK(target->log.size() == static_cast<std::size_t>(kLines));
    }
}
