// DOC: `overcache stats MOUNTPOINT`: the mount's control file, as it reads,
// after checking it is one. The text is `key value` lines (scripts split at
// the first space); a table, windows and --json/--prometheus come with
// issue #8.
#include "cli/control_client.hpp"
#include "cli/subcommands.hpp"

#include <cstdio>

namespace overcache::cli {

int stats_main(const Args& args) {
    const std::string& mountpoint = args.positional[0];
    auto control = ControlClient::open(mountpoint);
    Result<std::string> text = control ? control->read_text() : fail(control.error());
    if (!text) {
        const Error& e = text.error();
        std::fprintf(stderr, "overcache: stats of %s failed: %s\n", mountpoint.c_str(),
                     e.code == Errc::Sys ? to_string(e).c_str() : e.message.c_str());
        return 1;
    }
    std::fwrite(text->data(), 1, text->size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
}

} // namespace overcache::cli
