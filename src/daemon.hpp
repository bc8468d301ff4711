// Start-up and shut-down of one mount: command line, checks, daemonizing,
// the DataPath, the FUSE session. main() only calls run_daemon().
#pragma once

#include <string>
#include <vector>

namespace overcache {

struct CommandLine {
    std::string backing;
    std::string mountpoint;
    std::vector<std::string> option_lists; // each -o argument
    // --config FILE: BACKING, MOUNTPOINT and options come from FILE (the
    // service's way, service_config.hpp); the mountpoint is created if
    // missing and a dead mount on it is removed.
    std::string config_file;
    // --cleanup: only remove a dead mount at MOUNTPOINT, then exit.
    bool cleanup = false;
    bool foreground = false;
    bool debug = false;
    bool single_thread = false;
    bool help = false;
    bool version = false;
};

// Parses argv. On a usage error returns false with `error` set.
bool parse_command_line(int argc, char** argv, CommandLine& out, std::string& error);

void print_help(const char* prog);
void print_version();

// Mounts and serves until unmounted or signalled. The exit status for main.
int run_daemon(const CommandLine& cl);

} // namespace overcache
