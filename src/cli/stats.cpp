// DOC: `overcache stats [--json | --prometheus] [--watch [--interval=S]]
// MOUNTPOINT`: the mount's control file, after checking it is one, as a
// table (the default), one JSON object, or Prometheus text for
// node_exporter's textfile collector (mountpoint label: the mountpoint's
// real path). --watch prints it again every interval (default 2 s) until
// interrupted, clearing the screen first on a terminal. Scripts that want
// the raw `key value` lines read MOUNTPOINT/.overcache itself.
// Exit status: 0, 1 when the control file cannot be read (a message says
// why), 2 for a usage error.
#include "cli/control_client.hpp"
#include "cli/stats_table.hpp"
#include "cli/subcommands.hpp"
#include "control/stats_export.hpp"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <unistd.h>

namespace overcache::cli {
namespace {

enum class Format { table, json, prometheus };

std::string render(Format f, const std::string& text, const std::string& mountpoint,
                   const std::string& label) {
    const control::StatLines lines = control::parse_stats(text);
    switch (f) {
    case Format::json:
        return control::render_json(lines);
    case Format::prometheus:
        return control::render_prometheus(lines, label);
    case Format::table:
        break;
    }
    return render_table(lines, mountpoint);
}

// The mountpoint as Prometheus should label it: its real path, so that
// "/mnt/fast/" and "/mnt/fast" are one series.
std::string real_path(const std::string& path) {
    char buf[PATH_MAX];
    return ::realpath(path.c_str(), buf) != nullptr ? std::string(buf) : path;
}

void sleep_for(double seconds) {
    struct timespec ts {};
    ts.tv_sec = static_cast<time_t>(seconds);
    ts.tv_nsec = static_cast<long>((seconds - static_cast<double>(ts.tv_sec)) * 1e9);
    while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

} // namespace

int stats_main(const Args& args) {
    const Subcommand& sc = *find_subcommand("stats");
    const std::string& mountpoint = args.positional[0];
    if (args.has("--json") && args.has("--prometheus"))
        return usage_error(sc, "--json and --prometheus exclude each other");
    const Format format = args.has("--json")         ? Format::json
                          : args.has("--prometheus") ? Format::prometheus
                                                     : Format::table;
    const bool watch = args.has("--watch");
    double interval = 2;
    if (auto v = args.value("--interval")) {
        if (!watch)
            return usage_error(sc, "--interval needs --watch");
        char* end = nullptr;
        interval = std::strtod(v->c_str(), &end);
        if (v->empty() || *end != '\0' || !std::isfinite(interval) || interval < 0.1 ||
            interval > 86400)
            return usage_error(sc, "--interval takes seconds from 0.1 to 86400, not '" + *v + "'");
    }

    auto control = ControlClient::open(mountpoint);
    const std::string label = format == Format::prometheus ? real_path(mountpoint) : mountpoint;
    const bool clear = watch && ::isatty(STDOUT_FILENO) == 1;
    for (;;) {
        Result<std::string> text = control ? control->read_text() : fail(control.error());
        if (!text) {
            const Error& e = text.error();
            std::fprintf(stderr, "overcache: stats of %s failed: %s\n", mountpoint.c_str(),
                         e.code == Errc::Sys ? to_string(e).c_str() : e.message.c_str());
            return 1;
        }
        std::string out = render(format, *text, mountpoint, label);
        if (clear)
            out = "\033[H\033[2J" + out;
        std::fwrite(out.data(), 1, out.size(), stdout);
        if (std::fflush(stdout) != 0)
            return 1;
        if (!watch)
            return 0;
        sleep_for(interval);
    }
}

} // namespace overcache::cli
