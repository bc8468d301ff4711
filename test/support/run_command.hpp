// Test support: runs a program as a child with a deadline and collects what
// it prints (stdout and stderr together). The child starts with default
// signal actions and nothing blocked, whatever the test runner inherited.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace overcache::test {

struct CommandResult {
    int status = -1; // exit status; -1 if killed by a signal or past the deadline
    bool timed_out = false;
    std::string out;
};

// `args[0]` is looked up in PATH. Past `timeout` the child is killed
// (SIGKILL) and whatever it printed so far is returned (a child that will
// not die within 5 s more is left behind, not waited for).
CommandResult run_command(const std::vector<std::string>& args, std::chrono::milliseconds timeout);

// The overcache binary under test ($OVERCACHE_BIN), made absolute so a
// test may run it from another directory; throws when it is not set.
std::string overcache_bin();
// `overcache ARGS...`, given two minutes.
CommandResult cli(const std::vector<std::string>& args);
// Whether `s` holds `part` (for messages).
inline bool has(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

} // namespace overcache::test
