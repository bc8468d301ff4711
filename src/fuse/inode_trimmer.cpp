// DOC: the inode trimmer (see inode_trimmer.hpp). It runs on its own thread
// because the kernel takes the directory's lock to drop a name: a request
// handler may hold it, and must never wait for the trimmer. A round asks
// for enough names to bring the table to nine tenths of the limit, so a
// walk does not trim one entry at every lookup; FORGETs arrive afterwards,
// so the next round waits a little and looks again.
#include "fuse/inode_trimmer.hpp"

#include "util/log.hpp"

#include <cstdio>
#include <malloc.h>
#include <pthread.h>

namespace overcache::fuse {
namespace {

// Names asked per table scan: the table's mutex is held for one scan.
constexpr std::size_t kBatch = 1024;
constexpr auto kIdleWait = std::chrono::seconds(1);
constexpr auto kRoundWait = std::chrono::milliseconds(200);
// Memory freed by forgotten entries goes back to the system (malloc_trim)
// at most this often.
constexpr auto kReleaseEvery = std::chrono::seconds(10);

// A mountinfo path with its octal escapes (\040 for a space) decoded.
std::string unescape(const char* s) {
    std::string out;
    for (; *s != '\0'; ++s) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            out.push_back(static_cast<char>((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0')));
            s += 3;
        } else {
            out.push_back(*s);
        }
    }
    return out;
}

} // namespace

void InodeTrimmer::start(fuse_session* se, std::string mountpoint) {
    std::lock_guard lk(mu_);
    if (max_ == 0 || thread_.joinable())
        return;
    se_ = se;
    mountpoint_ = std::move(mountpoint);
    while (mountpoint_.size() > 1 && mountpoint_.back() == '/')
        mountpoint_.pop_back();
    stopping_ = false;
    thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "oc-trim");
        run();
    });
}

void InodeTrimmer::stop() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable())
        thread_.join();
}

void InodeTrimmer::note_size(std::size_t entries) {
    if (max_ == 0 || entries <= max_)
        return;
    {
        std::lock_guard lk(mu_);
        if (kicked_ || !thread_.joinable())
            return;
        kicked_ = true;
    }
    cv_.notify_one();
}

std::uint64_t InodeTrimmer::dropped() const {
    std::lock_guard lk(mu_);
    return dropped_;
}

void InodeTrimmer::run() {
    std::unique_lock lk(mu_);
    for (;;) {
        cv_.wait_for(lk, kIdleWait, [this] { return stopping_ || kicked_; });
        if (stopping_)
            return;
        lk.unlock();
        trim();
        lk.lock();
        // Kicks that came during the round are answered by the next one,
        // after the FORGETs of this one had time to arrive.
        if (kicked_ && !stopping_) {
            cv_.wait_for(lk, kRoundWait, [this] { return stopping_; });
            kicked_ = false;
            if (table_.size() > max_)
                kicked_ = true;
        }
    }
}

void InodeTrimmer::trim() {
    const std::size_t size = table_.size();
    if (size <= max_) {
        // Entries forgotten since the last release: give their memory back.
        const auto now = std::chrono::steady_clock::now();
        const std::uint64_t d = dropped();
        if (d != released_at_ && now - last_release_ >= kReleaseEvery) {
            last_release_ = now;
            released_at_ = d;
            ::malloc_trim(0);
        }
        return;
    }
    if (mounts_below()) {
        if (!said_mounts_)
            log::info("inodes: ", size, " entries, past max_inodes=", max_,
                      ", but something is mounted below ", mountpoint_,
                      ": the kernel is not asked to drop any (it would detach such mounts)");
        said_mounts_ = true;
        return;
    }
    said_mounts_ = false;
    std::size_t want = size - (max_ - max_ / 10);
    // Entries just looked up are all marked used: the first pass over them
    // only takes the marks off. Two passes find every unused one.
    const std::size_t visit_max = 2 * size + kBatch;
    std::size_t visited = 0;
    while (want > 0 && visited < visit_max) {
        {
            std::lock_guard lk(mu_);
            if (stopping_)
                return;
        }
        const std::size_t ask = std::min(want, kBatch);
        const std::size_t before = visited;
        auto names = table_.pick_unused(ask, 4 * kBatch, &visited);
        if (names.empty()) {
            if (visited == before)
                break; // nothing left to visit
            continue; // all used since the last pass: on round the clock
        }
        // Counted before the kernel is asked: its forgets (which bring the
        // table's size down) may come before the last notification returns,
        // and whoever sees the size down must see what was asked.
        {
            std::lock_guard lk(mu_);
            dropped_ += names.size();
        }
        for (const auto& n : names) {
            // -ENOENT: the kernel no longer has that name; nothing to do.
            (void)fuse_lowlevel_notify_inval_entry(se_, n.parent, n.name.data(), n.name.size());
        }
        want -= std::min(want, names.size());
    }
}

bool InodeTrimmer::mounts_below() const {
    std::FILE* f = std::fopen("/proc/self/mountinfo", "re");
    if (f == nullptr)
        return true; // cannot tell: drop nothing
    const std::string below = mountpoint_ == "/" ? "/" : mountpoint_ + "/";
    char* line = nullptr;
    std::size_t cap = 0;
    bool found = false;
    while (!found && ::getline(&line, &cap, f) > 0) {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT ...
        char point[4096];
        if (std::sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1) {
            const std::string p = unescape(point);
            found = p.size() > below.size() && p.compare(0, below.size(), below) == 0;
        }
    }
    std::free(line);
    std::fclose(f);
    return found;
}

} // namespace overcache::fuse
