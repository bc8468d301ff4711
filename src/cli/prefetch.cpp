// DOC: `overcache prefetch PATH...`: reads files on a mount into its cache
// now (rclone's vfs/refresh, cachefs' prefetch), so later reads are hits.
// PATHs are found as mount_files.hpp says (a directory is walked here);
// each regular file is one `prefetch REL` line, written when the one
// before it is done (the mount fetches one file at a time anyway). On a
// terminal a progress line shows the bytes cached of all the files (their
// user.overcache.cached_bytes) against their sizes, the share and the rate
// of this run, about once a second. Exit 0 when every file is all in the
// cache, 1 when any PATH or file failed (each reported with its reason, the
// rest still fetched).
#include "cli/fetch.hpp"
#include "cli/mount_files.hpp"
#include "cli/progress.hpp"
#include "cli/subcommands.hpp"
#include "control/command.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <utility>
#include <vector>

namespace overcache::cli {
namespace {

// The file's user.overcache.cached_bytes; nullopt when it cannot be read.
std::optional<std::uint64_t> cached_bytes(const std::string& path) {
    char buf[32];
    const ssize_t n = ::getxattr(path.c_str(), "user.overcache.cached_bytes", buf, sizeof buf - 1);
    if (n < 0)
        return std::nullopt;
    buf[n] = '\0';
    char* end = nullptr;
    const unsigned long long v = std::strtoull(buf, &end, 10);
    if (end == buf || *end != '\0')
        return std::nullopt;
    return v;
}

struct Item {
    std::string path;
    std::size_t mount; // index into the mounts
    std::uint64_t size = 0;
};

// What the progress line reads while the main thread runs the commands.
class Tally {
public:
    Tally(const std::vector<Item>& items, std::string verb)
        : items_(items), verb_(std::move(verb)), cached_(items.size(), 0) {
        for (std::size_t i = 0; i < items.size(); ++i) {
            total_ += items[i].size;
            cached_[i] = std::min(items[i].size, cached_bytes(items[i].path).value_or(0));
        }
        start_ = sum(items.size());
    }
    void begin(std::size_t i) { current_.store(i); }
    void end(std::size_t i) {
        const auto v = std::min(items_[i].size, cached_bytes(items_[i].path).value_or(0));
        std::lock_guard lk(mu_);
        cached_[i] = v;
    }
    std::string line(std::chrono::seconds elapsed) {
        const std::size_t cur = current_.load();
        const std::uint64_t done = sum(cur);
        const std::uint64_t pct = total_ == 0 ? 100 : done * 100 / total_;
        const std::uint64_t secs = std::max<std::uint64_t>(1, elapsed.count());
        const std::uint64_t rate = done > start_ ? (done - start_) / secs : 0;
        return "overcache: " + verb_ + ": " + human_bytes(done) + " of " + human_bytes(total_) +
               " (" + std::to_string(pct) + "%), " + human_bytes(rate) + "/s, file " +
               std::to_string(std::min(cur + 1, items_.size())) + " of " +
               std::to_string(items_.size());
    }

private:
    // The files' cached bytes, the one being fetched (`live`) read now.
    std::uint64_t sum(std::size_t live) {
        std::optional<std::uint64_t> now;
        if (live < items_.size())
            if (auto v = cached_bytes(items_[live].path))
                now = std::min(items_[live].size, *v);
        std::lock_guard lk(mu_);
        std::uint64_t s = 0;
        for (std::size_t i = 0; i < cached_.size(); ++i)
            s += i == live && now ? *now : cached_[i];
        return s;
    }

    const std::vector<Item>& items_;
    const std::string verb_; // "prefetching", "pinning"
    std::uint64_t total_ = 0;
    std::uint64_t start_ = 0; // cached when the run began: the rate is this run's
    std::atomic<std::size_t> current_{~std::size_t{0}};
    std::mutex mu_;                     // a leaf
    std::vector<std::uint64_t> cached_; // guarded by mu_
};

} // namespace

int fetch_files(const char* cmd, const char* verb, const std::vector<std::string>& paths, int rc) {
    std::vector<MountFiles> mounts;
    std::vector<Item> items;
    for (const auto& path : paths) {
        auto mount = files_on_mount(path);
        if (!mount) {
            std::fprintf(stderr, "overcache %s: %s: %s\n", cmd, path.c_str(),
                         mount.error().message.c_str());
            rc = 1;
            continue;
        }
        mounts.push_back(std::move(*mount));
        for (const auto& file : mounts.back().files) {
            struct stat st {};
            if (::stat(file.c_str(), &st) != 0) {
                std::fprintf(stderr, "overcache %s: %s: %s\n", cmd, file.c_str(),
                             std::strerror(errno));
                rc = 1;
                continue;
            }
            items.push_back(Item{file, mounts.size() - 1, static_cast<std::uint64_t>(st.st_size)});
        }
    }
    // Failures wait until the progress line is gone, so they stay readable.
    std::vector<std::string> failures;
    {
        Tally tally(items, verb);
        Progress shown([&](std::chrono::seconds elapsed) { return tally.line(elapsed); });
        for (std::size_t i = 0; i < items.size(); ++i) {
            const Item& it = items[i];
            const MountFiles& m = mounts[it.mount];
            tally.begin(i);
            auto r = m.control.run("prefetch " + control::encode_path_arg(m.rel(it.path)));
            tally.end(i);
            if (!r)
                failures.push_back("overcache " + std::string(cmd) + ": " + it.path + ": " +
                                   reason_of(r.error()));
        }
    }
    for (const auto& f : failures)
        std::fprintf(stderr, "%s\n", f.c_str());
    return failures.empty() ? rc : 1;
}

int prefetch_main(const Args& args) {
    return fetch_files("prefetch", "prefetching", args.positional, 0);
}

} // namespace overcache::cli
