// DOC: the table of subcommands and their common argument handling:
// -h/--help, each subcommand's own flags, "--", and the count of positional
// arguments. A usage error exits 2 with a hint, as the mount command line
// does, so scripts can tell it from a failure (exit 1).
#include "cli/subcommands.hpp"

#include <array>
#include <cctype>

namespace overcache::cli {
namespace {

constexpr std::array<Flag, 0> kNoFlags{};

constexpr std::array<Flag, 4> kStatsFlags{{
    {"--json", nullptr, "one JSON object: numbers as numbers, '-' as null"},
    {"--prometheus", nullptr, "Prometheus text format (node_exporter's textfile collector)"},
    {"--watch", nullptr, "print again every interval until interrupted"},
    {"--interval", "SECONDS", "how often --watch prints (default 2)"},
}};

constexpr std::array<Flag, 3> kFormatFlags{{
    {"--size", "SIZE", "the cache's size (default: 10% of its filesystem, 64M to 64G)"},
    {"--bucket-size", "SIZE", "the bucket size, a power of two (default 1M; fixed for good)"},
    {"--discard-dirty", nullptr, "format even a cache holding dirty data, which is lost"},
}};

constexpr std::array<Flag, 1> kFsckFlags{{
    {"--repair", nullptr,
     "mend what was found: drop unusable clean data, copy unusable dirty data to "
     "CACHEDIR/lost+found before dropping it, fix the accounting"},
}};

constexpr std::array<Subcommand, 15> kSubcommands{{
    {"flush", "MOUNTPOINT",
     "write all dirty data back to the backing and sync it; waits until done", kNoFlags, 1, 1,
     flush_main},
    {"gc", "MOUNTPOINT", "run a garbage collection pass of the cache now", kNoFlags, 1, 1,
     gc_main},
    {"stats", "MOUNTPOINT",
     "print the mount's hit ratio and counters over 5 min, an hour, a day and in all", kStatsFlags,
     1, 1, stats_main},
    {"reset-stats", "MOUNTPOINT",
     "start the mount's counters, their windows and the working set from zero", kNoFlags, 1, 1,
     reset_stats_main},
    {"get", "MOUNTPOINT [KEY]",
     "print the settings a mounted cache takes, or KEY's value alone", kNoFlags, 1, 2, get_main},
    {"set", "MOUNTPOINT KEY VALUE",
     "change a setting of the mounted cache now (kept for the next mount); leaving writeback "
     "flushes first",
     kNoFlags, 3, 3, set_main},
    {"status", "PATH...",
     "show how much of each file (or of the files below a directory) is in the cache, and "
     "how much of it is dirty",
     kNoFlags, 1, kManyArgs, status_main},
    {"invalidate", "PATH...",
     "drop what the cache holds of each file (or of the files below a directory), so the "
     "next reads come from the backing; dirty data is written back first",
     kNoFlags, 1, kManyArgs, invalidate_main},
    {"prefetch", "PATH...",
     "read each file (or the files below a directory) into the cache now, with a progress "
     "line on a terminal; fails when the cache is full",
     kNoFlags, 1, kManyArgs, prefetch_main},
    {"pin", "PATH...",
     "keep each file (or everything below a directory, files added later too) in the cache: "
     "sets user.overcache.pin and fetches the files now, with a progress line on a terminal; "
     "fails when the cache or the pinned share of it (half) is full",
     kNoFlags, 1, kManyArgs, pin_main},
    {"unpin", "PATH...",
     "let the cache evict each file (or the files below a directory) again: clears "
     "user.overcache.pin (sets it to 0 where a directory above pins it); nothing is dropped",
     kNoFlags, 1, kManyArgs, unpin_main},
    {"show-super", "CACHEDIR",
     "print a cache's superblock (format, uuid, backing, sizes, dirty data); read-only, also "
     "while it is mounted",
     kNoFlags, 1, 1, show_super_main},
    {"resize", "CACHEDIR SIZE",
     "grow or shrink an unmounted cache, keeping its data (clean data past a smaller size is "
     "dropped, dirty data moved); a mounted one: overcache set MOUNTPOINT cache_size SIZE",
     kNoFlags, 2, 2, resize_main},
    {"format", "CACHEDIR",
     "start a new, empty cache in CACHEDIR (refused over dirty data without --discard-dirty)",
     kFormatFlags, 1, 1, format_main},
    {"fsck", "CACHEDIR",
     "check an unmounted cache's index against its buckets and data (exit 0 clean, 1 "
     "repaired, 4 problems left, 8 not checked); --repair mends",
     kFsckFlags, 1, 1, fsck_main},
}};

const Flag* find_flag(const Subcommand& sc, std::string_view name) {
    for (const auto& f : sc.flags)
        if (name == f.name)
            return &f;
    return nullptr;
}

// The n-th word of the usage line ("MOUNTPOINT KEY VALUE", 1 -> "KEY"),
// naming what a short command line lacks.
std::string usage_word(const Subcommand& sc, std::size_t n) {
    std::string_view u = sc.usage;
    for (;;) {
        const auto sp = u.find(' ');
        if (n == 0 || sp == std::string_view::npos)
            return std::string(u.substr(0, sp));
        u.remove_prefix(sp + 1);
        --n;
    }
}

void print_help(const Subcommand& sc) {
    std::string help = sc.help;
    help[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(help[0])));
    std::printf("usage: overcache %s %s\n\n%s.\n", sc.name, sc.usage, help.c_str());
    std::printf("\nOptions:\n");
    for (const auto& f : sc.flags) {
        std::string head = f.name;
        if (f.value_name != nullptr)
            head += std::string("=") + f.value_name;
        std::printf("  %-22s %s\n", head.c_str(), f.help);
    }
    std::printf("  %-22s %s\n", "-h, --help", "show this help");
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
    std::fprintf(out, "\nCommands (overcache COMMAND --help):\n");
    for (const auto& sc : kSubcommands) {
        const std::string head = std::string(sc.name) + " " + sc.usage;
        std::fprintf(out, "  %-32s %s\n", head.c_str(), sc.help);
    }
    std::fprintf(out, "A backing directory named like a command is mounted as ./NAME.\n");
}

int usage_error(const Subcommand& sc, const std::string& what) {
    std::fprintf(stderr, "overcache %s: %s\nusage: overcache %s %s\n", sc.name, what.c_str(),
                 sc.name, sc.usage);
    return 2;
}

int run_subcommand(const Subcommand& sc, const std::vector<std::string>& args) {
    Args parsed;
    bool options_done = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (!options_done && (a == "-h" || a == "--help")) {
            print_help(sc);
            return 0;
        }
        if (!options_done && a == "--") {
            options_done = true;
            continue;
        }
        if (options_done || a.size() < 2 || a[0] != '-') {
            parsed.positional.push_back(a);
            continue;
        }
        const auto eq = a.find('=');
        const std::string name = a.substr(0, eq);
        const Flag* f = find_flag(sc, name);
        if (f == nullptr)
            return usage_error(sc, "unknown option '" + name + "'");
        if (f->value_name == nullptr) {
            if (eq != std::string::npos)
                return usage_error(sc, "option " + name + " takes no value");
            parsed.flags[name] = "";
        } else if (eq != std::string::npos) {
            parsed.flags[name] = a.substr(eq + 1);
        } else if (i + 1 < args.size()) {
            parsed.flags[name] = args[++i];
        } else {
            return usage_error(sc, "option " + name + " needs a value (" + f->value_name + ")");
        }
    }
    const auto n = parsed.positional.size();
    if (n < sc.min_args)
        return usage_error(sc, "missing " + usage_word(sc, n));
    if (sc.max_args != kManyArgs && n > sc.max_args)
        return usage_error(sc, "unexpected argument '" + parsed.positional[sc.max_args] + "'");
    return sc.run(parsed);
}

} // namespace overcache::cli
