// DOC: the table of subcommands and their common argument handling: every
// one takes a MOUNTPOINT and -h/--help; a usage error exits 2 with a hint,
// as the mount command line does, so scripts can tell it from a failure
// (exit 1).
#include "cli/subcommands.hpp"

#include <array>
#include <cctype>

namespace overcache::cli {
namespace {

constexpr std::array<Subcommand, 3> kSubcommands{{
    {"flush", "MOUNTPOINT",
     "write all dirty data back to the backing and sync it; waits until done", flush_main},
    {"gc", "MOUNTPOINT", "run a garbage collection pass of the cache now", gc_main},
    {"stats", "MOUNTPOINT", "print the mount's statistics and settings", stats_main},
}};

int usage_error(const Subcommand& sc, const std::string& what) {
    std::fprintf(stderr, "overcache %s: %s\nusage: overcache %s %s\n", sc.name, what.c_str(),
                 sc.name, sc.usage);
    return 2;
}

} // namespace

std::span<const Subcommand> subcommands() noexcept {
    return kSubcommands;
}

const Subcommand* find_subcommand(std::string_view name) noexcept {
    for (const auto& sc : kSubcommands)
        if (name == sc.name)
            return &sc;
    return nullptr;
}

void print_subcommands(std::FILE* out) {
    std::fprintf(out, "\nCommands for a mounted overcache (overcache COMMAND --help):\n");
    for (const auto& sc : kSubcommands) {
        const std::string head = std::string(sc.name) + " " + sc.usage;
        std::fprintf(out, "  %-24s %s\n", head.c_str(), sc.help);
    }
    std::fprintf(out, "A backing directory named like a command is mounted as ./NAME.\n");
}

int run_subcommand(const Subcommand& sc, const std::vector<std::string>& args) {
    std::vector<std::string> positional;
    bool options_done = false;
    for (const auto& a : args) {
        if (!options_done && (a == "-h" || a == "--help")) {
            std::string help = sc.help;
            help[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(help[0])));
            std::printf("usage: overcache %s %s\n\n%s.\n", sc.name, sc.usage, help.c_str());
            return 0;
        }
        if (!options_done && a == "--") {
            options_done = true;
        } else if (!options_done && a.size() > 1 && a[0] == '-') {
            return usage_error(sc, "unknown argument '" + a + "'");
        } else {
            positional.push_back(a);
        }
    }
    if (positional.empty())
        return usage_error(sc, "missing MOUNTPOINT");
    if (positional.size() > 1)
        return usage_error(sc, "unexpected argument '" + positional[1] + "'");
    return sc.run(positional[0]);
}

} // namespace overcache::cli
