// DOC: `overcache fsck CACHEDIR [--repair]`: runs store::fsck_cache_dir and
// prints one line per check (count, size of the data concerned, a few
// examples), the files it saved to lost+found, and a verdict. Exit status as
// fsck(8), so scripts can tell the outcomes apart: 0 clean, 1 problems found
// and all repaired, 4 problems left, 8 the check could not run (not a cache,
// in use by a mount, I/O), 2 usage (run_subcommand).
#include "overcache/store/fsck.hpp"

#include "cli/subcommands.hpp"
#include "util/size_text.hpp"

#include <string>

namespace overcache::cli {
namespace {

constexpr int kFsckClean = 0;
constexpr int kFsckRepaired = 1;
constexpr int kFsckProblemsLeft = 4;
constexpr int kFsckError = 8;

void print_line(store::FsckCheck c, const store::FsckFinding& f, bool repair) {
    std::string line = std::to_string(f.count);
    if (f.bytes > 0)
        line += " (" + size_text(f.bytes) + ")";
    if (repair && c != store::FsckCheck::extent_stale && f.count > 0)
        line += ", " + std::to_string(f.repaired) + " repaired";
    std::printf("%-36s %s\n", store::fsck_check_label(c), line.c_str());
    // Stale extents are normal: their examples would only be noise.
    if (c == store::FsckCheck::extent_stale)
        return;
    for (const auto& e : f.examples)
        std::printf("    %s\n", e.c_str());
    if (f.count > f.examples.size())
        std::printf("    ... and %llu more\n",
                    static_cast<unsigned long long>(f.count - f.examples.size()));
}

} // namespace

int fsck_main(const Args& args) {
    const std::string& dir = args.positional[0];
    const bool repair = args.has("--repair");
    auto r = store::fsck_cache_dir(dir, repair);
    if (!r) {
        std::fprintf(stderr, "overcache fsck: %s\n", r.error().message.c_str());
        return kFsckError;
    }
    const store::FsckReport& rep = *r;
    if (!rep.fatal.empty()) {
        std::printf("cache at %s: %s\n", dir.c_str(), rep.fatal.c_str());
        std::printf("cannot be checked further; nothing was changed\n");
        return kFsckProblemsLeft;
    }
    std::printf("cache at %s: %llu buckets of %s; %llu current extents (%s, of which %s "
                "dirty)\n",
                dir.c_str(), static_cast<unsigned long long>(rep.bucket_count),
                size_text(rep.bucket_size).c_str(), static_cast<unsigned long long>(rep.extents),
                size_text(rep.extent_bytes).c_str(), size_text(rep.dirty_bytes).c_str());
    for (std::size_t i = 0; i < store::kFsckChecks; ++i)
        print_line(static_cast<store::FsckCheck>(i), rep.found[i], repair);
    for (const auto& s : rep.saved)
        std::printf("dirty data saved: %s\n", s.c_str());
    for (const auto& n : rep.notes)
        std::printf("repair: %s\n", n.c_str());

    const std::uint64_t problems = rep.problems();
    const std::uint64_t repaired = rep.repaired();
    if (problems == 0) {
        std::printf("clean\n");
        return kFsckClean;
    }
    if (!repair) {
        std::printf("%llu problems found (run with --repair)\n",
                    static_cast<unsigned long long>(problems));
        return kFsckProblemsLeft;
    }
    if (repaired >= problems) {
        std::printf("%llu problems repaired\n", static_cast<unsigned long long>(problems));
        return kFsckRepaired;
    }
    std::printf("%llu problems found, %llu repaired, %llu left\n",
                static_cast<unsigned long long>(problems),
                static_cast<unsigned long long>(repaired),
                static_cast<unsigned long long>(problems - repaired));
    return kFsckProblemsLeft;
}

} // namespace overcache::cli
