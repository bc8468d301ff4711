// DOC: `overcache get MOUNTPOINT [KEY]` and `overcache set MOUNTPOINT KEY
// VALUE`. get reads the control file and prints the settings a mounted
// cache takes (`key value` lines, or KEY's value alone, for scripts); set
// writes a `set KEY VALUE` line and returns once the mount runs with it
// (after a flush when it leaves writeback). Names are checked here against
// the option table so a typo is a usage error (exit 2) before the mount is
// asked; the value is checked by the mount, which refuses a bad one with
// the reason (exit 1) and changes nothing.
#include "cli/control_client.hpp"
#include "cli/subcommands.hpp"
#include "overcache/config/config.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace overcache::cli {
namespace {

std::string canonical(std::string name) {
    std::replace(name.begin(), name.end(), '-', '_');
    return name;
}

// 0, or prints why `name` is not a setting of a mounted cache and returns 2.
int check_name(const char* verb, const std::string& name) {
    if (config::find_option(name) == nullptr) {
        std::fprintf(stderr,
                     "overcache %s: unknown setting '%s' (overcache get MOUNTPOINT lists them)\n",
                     verb, name.c_str());
        return 2;
    }
    if (!config::is_live(name)) {
        std::fprintf(stderr,
                     "overcache %s: %s is fixed at mount; give it as -o %s=... when mounting\n",
                     verb, name.c_str(), name.c_str());
        return 2;
    }
    return 0;
}

void print_failure(const char* verb, const std::string& mountpoint, const Error& e) {
    std::string reason = e.code == Errc::Sys ? std::strerror(to_errno(e)) : e.message;
    if (e.code == Errc::Sys && !e.message.empty())
        reason += " (" + e.message + ")";
    std::fprintf(stderr, "overcache: %s on %s failed: %s\n", verb, mountpoint.c_str(),
                 reason.c_str());
}

} // namespace

int get_main(const Args& args) {
    const std::string& mountpoint = args.positional[0];
    std::string key;
    if (args.positional.size() > 1) {
        key = canonical(args.positional[1]);
        if (const int rc = check_name("get", key); rc != 0)
            return rc;
    }
    auto control = ControlClient::open(mountpoint);
    Result<std::string> text = control ? control->read_text() : fail(control.error());
    if (!text) {
        print_failure("get", mountpoint, text.error());
        return 1;
    }
    if (!key.empty()) {
        auto v = value_of(*text, key);
        if (!v) {
            std::fprintf(stderr, "overcache: get on %s failed: the mount does not show %s\n",
                         mountpoint.c_str(), key.c_str());
            return 1;
        }
        std::printf("%s\n", v->c_str());
        return std::fflush(stdout) == 0 ? 0 : 1;
    }
    for (const auto& o : config::option_table()) {
        if (!config::is_live(o.name))
            continue;
        if (auto v = value_of(*text, o.name))
            std::printf("%s %s\n", o.name, v->c_str());
    }
    return std::fflush(stdout) == 0 ? 0 : 1;
}

int set_main(const Args& args) {
    const std::string& mountpoint = args.positional[0];
    const std::string key = canonical(args.positional[1]);
    const std::string& value = args.positional[2];
    if (const int rc = check_name("set", key); rc != 0)
        return rc;
    if (value.empty() || value.find_first_of(" \t\r\n") != std::string::npos) {
        std::fprintf(stderr, "overcache set: a value is one word: '%s'\n", value.c_str());
        return 2;
    }
    auto control = ControlClient::open(mountpoint);
    if (!control) {
        print_failure("set", mountpoint, control.error());
        return 1;
    }
    if (auto r = control->run("set " + key + " " + value); !r) {
        print_failure(("set " + key).c_str(), mountpoint, r.error());
        return 1;
    }
    return 0;
}

} // namespace overcache::cli
