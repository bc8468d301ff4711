// The subcommands of the overcache binary that talk to a running mount
// (`overcache flush MOUNTPOINT`, ...). main() looks its first argument up
// here before it reads a mount command line, so a subcommand's name is
// never taken for a backing directory (mount a directory of that name as
// ./NAME).
#pragma once

#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace overcache::cli {

struct Subcommand {
    const char* name;
    const char* usage; // after the name, e.g. "MOUNTPOINT"
    const char* help;  // one line
    // Gets the arguments after the name (options and MOUNTPOINT already
    // checked by run_subcommand); returns the exit status.
    int (*run)(const std::string& mountpoint);
};

std::span<const Subcommand> subcommands() noexcept;
const Subcommand* find_subcommand(std::string_view name) noexcept;

// The subcommand list for `overcache --help`.
void print_subcommands(std::FILE* out);

// Parses `args` (after the name: -h/--help, MOUNTPOINT) and runs it. Exit
// status: 0 done, 1 failed (message on stderr), 2 usage error.
int run_subcommand(const Subcommand& sc, const std::vector<std::string>& args);

// The subcommands themselves.
int flush_main(const std::string& mountpoint); // run_command.cpp
int gc_main(const std::string& mountpoint);    // run_command.cpp
int stats_main(const std::string& mountpoint); // stats.cpp

} // namespace overcache::cli
