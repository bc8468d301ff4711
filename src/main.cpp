// overcache BACKING MOUNTPOINT [-o OPTIONS]... [-f] [-d] [-s]
// Also what mount.fuse3 runs for `mount -t fuse.overcache` and fstab lines.
// overcache COMMAND MOUNTPOINT (flush, gc, stats): talks to a running mount.
#include "cli/subcommands.hpp"
#include "daemon.hpp"

#include <cstdio>

int main(int argc, char** argv) {
    // A subcommand's name is never a backing directory (that is ./NAME).
    if (argc >= 2) {
        if (const auto* sc = overcache::cli::find_subcommand(argv[1]))
            return overcache::cli::run_subcommand(*sc, {argv + 2, argv + argc});
    }
    overcache::CommandLine cl;
    std::string error;
    if (!overcache::parse_command_line(argc, argv, cl, error)) {
        std::fprintf(stderr, "overcache: %s\nTry 'overcache --help' for more information.\n",
                     error.c_str());
        return 2;
    }
    if (cl.help) {
        overcache::print_help(argv[0]);
        overcache::cli::print_subcommands(stdout);
        return 0;
    }
    if (cl.version) {
        overcache::print_version();
        return 0;
    }
    return overcache::run_daemon(cl);
}
