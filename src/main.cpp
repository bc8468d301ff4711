// overcache BACKING MOUNTPOINT [-o OPTIONS]... [-f] [-d] [-s]
// Also what mount.fuse3 runs for `mount -t fuse.overcache` and fstab lines.
#include "daemon.hpp"

#include <cstdio>

int main(int argc, char** argv) {
    overcache::CommandLine cl;
    std::string error;
    if (!overcache::parse_command_line(argc, argv, cl, error)) {
        std::fprintf(stderr, "overcache: %s\nTry 'overcache --help' for more information.\n",
                     error.c_str());
        return 2;
    }
    if (cl.help) {
        overcache::print_help(argv[0]);
        return 0;
    }
    if (cl.version) {
        overcache::print_version();
        return 0;
    }
    return overcache::run_daemon(cl);
}
