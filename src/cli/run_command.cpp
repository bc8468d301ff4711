// DOC: `overcache flush MOUNTPOINT` and `overcache gc MOUNTPOINT`: one
// command line written to the mount's control file, with one write(2) that
// returns when the mount has run it (DESIGN.md, control surface). A flush
// may take long: on a terminal a progress line shows the `dirty_data` left
// (read from the control file by a second reader, which the mount answers
// while the flush runs) or, where the mount has no such stat, the time.
// A flush first syncs the mount (syncfs): with the kernel's writeback cache
// the kernel may still hold writes that the mount has not seen.
// Failure: "overcache: flush of MOUNTPOINT failed: <errno text> (<the
// control file's last_error>)" and exit 1.
#include "cli/control_client.hpp"
#include "cli/progress.hpp"
#include "cli/subcommands.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <string>
#include <unistd.h>

namespace overcache::cli {
namespace {

// The progress line of a flush: what is left to write back, if the mount
// says, and how long it has been.
std::string flush_progress(const ControlClient& control, const std::string& mountpoint,
                           std::chrono::seconds elapsed) {
    std::string line = "overcache: flushing " + mountpoint + ": ";
    std::optional<std::uint64_t> dirty;
    if (auto text = control.read_text(); text) {
        if (auto v = value_of(*text, "dirty_data"); v && !v->empty()) {
            char* end = nullptr;
            const unsigned long long n = std::strtoull(v->c_str(), &end, 10);
            if (end != v->c_str() && *end == '\0')
                dirty = n;
        }
    }
    if (dirty)
        line += human_bytes(*dirty) + " dirty, ";
    line += std::to_string(elapsed.count()) + " s";
    return line;
}

// The writes the kernel still holds for the mount go to it (and fail here
// if the mount refuses them). 0 or an errno.
int sync_mount(const std::string& mountpoint) {
    const int fd = ::open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    const int err = ::syncfs(fd) == 0 ? 0 : errno;
    ::close(fd);
    return err;
}

// `prepare`, when given, runs once the mount is known to be ours and
// before the command: 0 or an errno; `fails` says what failed.
struct Prepare {
    int (*run)(const std::string& mountpoint) = nullptr;
    const char* fails = "";
};

int run_command(const char* verb, const std::string& mountpoint, bool progress,
                Prepare prepare = {}) {
    auto control = ControlClient::open(mountpoint);
    if (!control) {
        std::fprintf(stderr, "overcache: %s of %s failed: %s\n", verb, mountpoint.c_str(),
                     control.error().code == Errc::Sys ? to_string(control.error()).c_str()
                                                       : control.error().message.c_str());
        return 1;
    }
    if (prepare.run != nullptr)
        if (const int err = prepare.run(mountpoint); err != 0) {
            std::fprintf(stderr, "overcache: %s of %s failed: %s (%s)\n", verb, mountpoint.c_str(),
                         std::strerror(err), prepare.fails);
            return 1;
        }
    Result<void> r;
    {
        std::optional<Progress> shown;
        if (progress)
            shown.emplace([&](std::chrono::seconds elapsed) {
                return flush_progress(*control, mountpoint, elapsed);
            });
        r = control->run(verb);
    }
    if (r)
        return 0;
    const Error& e = r.error();
    std::string reason = std::strerror(to_errno(e));
    if (!e.message.empty())
        reason += " (" + e.message + ")";
    std::fprintf(stderr, "overcache: %s of %s failed: %s\n", verb, mountpoint.c_str(),
                 reason.c_str());
    return 1;
}

} // namespace

int flush_main(const Args& args) {
    return run_command("flush", args.positional[0], true,
                       {sync_mount, "the kernel could not hand the mount the writes it held"});
}

int gc_main(const Args& args) {
    return run_command("gc", args.positional[0], false);
}

int reset_stats_main(const Args& args) {
    return run_command("reset_stats", args.positional[0], false);
}

} // namespace overcache::cli
