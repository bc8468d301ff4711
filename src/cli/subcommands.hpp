// The subcommands of the overcache binary (`overcache flush MOUNTPOINT`,
// `overcache stats --json MOUNTPOINT`, ...). main() looks its first
// argument up here before it reads a mount command line, so a subcommand's
// name is never taken for a backing directory (mount a directory of that
// name as ./NAME).
#pragma once

#include <cstdio>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace overcache::cli {

// One option a subcommand takes: "--json", or "--interval" with a value
// (given as "--interval=2" or "--interval 2").
struct Flag {
    const char* name;
    const char* value_name; // nullptr: takes no value
    const char* help;
};

// A subcommand's arguments after the common parsing: options by name (a
// flag without a value maps to ""), the rest in order.
struct Args {
    std::vector<std::string> positional;
    std::map<std::string, std::string, std::less<>> flags;

    bool has(std::string_view flag) const { return flags.find(flag) != flags.end(); }
    std::optional<std::string> value(std::string_view flag) const {
        auto it = flags.find(flag);
        return it == flags.end() ? std::nullopt : std::optional<std::string>(it->second);
    }
};

inline constexpr unsigned kManyArgs = ~0u;

struct Subcommand {
    const char* name;
    const char* usage; // after the name, e.g. "MOUNTPOINT"
    const char* help;  // one line
    std::span<const Flag> flags;
    unsigned min_args; // positional arguments
    unsigned max_args; // kManyArgs: no limit
    // Gets the arguments checked against `flags` and the counts; returns
    // the exit status.
    int (*run)(const Args& args);
};

std::span<const Subcommand> subcommands() noexcept;
const Subcommand* find_subcommand(std::string_view name) noexcept;

// The subcommand list for `overcache --help`.
void print_subcommands(std::FILE* out);

// Parses `args` (after the name: -h/--help, the subcommand's flags, "--",
// positional arguments) and runs it. Exit status: 0 done, 1 failed (message
// on stderr), 2 usage error (message and usage on stderr).
int run_subcommand(const Subcommand& sc, const std::vector<std::string>& args);

// Prints "overcache NAME: WHAT" and the usage line to stderr; returns 2.
int usage_error(const Subcommand& sc, const std::string& what);

// The subcommands themselves.
int flush_main(const Args& args);      // run_command.cpp
int gc_main(const Args& args);         // run_command.cpp
int reset_stats_main(const Args& args); // run_command.cpp
int stats_main(const Args& args);      // stats.cpp
int get_main(const Args& args);        // settings_cmd.cpp
int set_main(const Args& args);        // settings_cmd.cpp
int status_main(const Args& args);     // status.cpp
int invalidate_main(const Args& args); // invalidate.cpp
int prefetch_main(const Args& args);   // prefetch.cpp
int pin_main(const Args& args);        // pin.cpp
int unpin_main(const Args& args);      // pin.cpp
int show_super_main(const Args& args); // show_super.cpp
int resize_main(const Args& args);     // cache_admin.cpp
int format_main(const Args& args);     // cache_admin.cpp
int fsck_main(const Args& args);       // fsck.cpp

} // namespace overcache::cli
