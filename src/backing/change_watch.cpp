// DOC: the backing's changes read from fanotify (see change_watch.hpp).
#include "backing/change_watch.hpp"

#include "util/log.hpp"
#include "util/wall_clock.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

namespace overcache::backing {
namespace {

// Every report that a name, a file's bytes or its attributes changed. A
// rename also changes the moved inode's ctime (it comes as a move of the
// name, reported for the inode too).
constexpr std::uint64_t kChanges = FAN_MODIFY | FAN_ATTRIB | FAN_CLOSE_WRITE | FAN_CREATE |
                                   FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_DELETE_SELF |
                                   FAN_MOVE_SELF | FAN_ONDIR;
// Reports in which the directory's record names a directory that changed:
// its names, or itself (a report on a directory names it in that record
// alone). In the others it only says where the file is.
constexpr std::uint64_t kDirChanges =
    FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_ONDIR;

// More inodes remembered than this: forget them all (and what was seen
// before), so that a tree rewritten behind the mount costs no more memory.
constexpr std::size_t kMaxRemembered = std::size_t{1} << 18;

std::string errno_text(const char* what, int err) {
    return std::string(what) + ": " + std::strerror(err);
}

} // namespace

ChangeWatch::ChangeWatch(int root_fd, bool wanted, const char* fs_name) {
    if (!wanted)
        return;
    state_ = State::unavailable;
    if (fs_name == nullptr) {
        why_ = "not a local filesystem: changes made elsewhere would not be seen";
        return;
    }
    // Not O_PATH: neither fanotify_mark nor open_by_handle_at takes one.
    root_.reset(::openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root_) {
        why_ = errno_text("open of the backing's root", errno);
    } else {
        notify_.reset(::fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK |
                                          FAN_REPORT_FID | FAN_REPORT_DIR_FID,
                                      O_RDONLY | O_CLOEXEC | O_LARGEFILE));
        if (!notify_)
            why_ = errno_text("fanotify_init", errno);
        else if (::fanotify_mark(notify_.get(), FAN_MARK_ADD | FAN_MARK_FILESYSTEM, kChanges,
                                 root_.get(), nullptr) != 0)
            why_ = errno_text("fanotify_mark", errno);
    }
    struct stat root_st {};
    if (why_.empty() && ::fstat(root_.get(), &root_st) != 0)
        why_ = errno_text("fstat", errno);
    if (why_.empty()) {
        wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!wake_)
            why_ = errno_text("eventfd", errno);
    }
    if (!why_.empty()) {
        log::info("backing: not watched for changes (", why_,
                  "): every open under coherency=cto asks the backing");
        notify_.reset();
        return;
    }
    ino_first_ = std::string_view(fs_name) == "ext2/3/4";
    dev_ = root_st.st_dev;
    // Reports of changes made from here on are read: what is asked for
    // from now on can be vouched for.
    floor_ns_ = wall_ns();
    last_read_ns_ = floor_ns_;
    state_ = State::watching;
    log::info("backing: ", fs_name,
              ", watched for changes: kept names and attributes "
              "unchanged since they were seen are used without asking it");
    reader_ = std::thread([this] { run(); });
}

ChangeWatch::~ChangeWatch() {
    if (reader_.joinable()) {
        const std::uint64_t one = 1;
        (void)!::write(wake_.get(), &one, sizeof one);
        reader_.join();
    }
}

std::string_view ChangeWatch::name(State s) noexcept {
    switch (s) {
    case State::off:
        return "off";
    case State::unavailable:
        return "unavailable";
    case State::watching:
        return "watching";
    case State::lost:
        return "lost";
    }
    return "?";
}

std::string ChangeWatch::why() const {
    std::lock_guard lk(mu_);
    return why_;
}

void ChangeWatch::run() {
    pollfd fds[2] = {{notify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    for (;;) {
        // A wake-up at least every quarter second: a step back of the wall
        // clock is noticed by the next read (read_reports_locked).
        const int n = ::poll(fds, 2, 250);
        if (n < 0 && errno != EINTR) {
            std::lock_guard lk(mu_);
            lose_locked(errno_text("poll", errno));
            return;
        }
        if (n > 0 && (fds[1].revents & POLLIN) != 0)
            return;
        {
            std::lock_guard lk(mu_);
            read_reports_locked();
            if (state_.load() != State::watching)
                return;
        }
        // Then a pause, so that a stream of writes to the filesystem (the
        // cache's own, when it shares it; writeback's) is read in batches,
        // not a wake-up each: questions read what is waiting themselves.
        pollfd wake = {wake_.get(), POLLIN, 0};
        if (::poll(&wake, 1, 20) > 0)
            return;
    }
}

void ChangeWatch::lose_locked(const std::string& why) {
    if (state_.load() != State::watching)
        return;
    why_ = why;
    state_ = State::lost;
    changed_.clear();
    log::warn("backing: the watch for changes stopped (", why,
              "): kept names and attributes are asked of the backing again");
}

void ChangeWatch::forget_all_locked(std::int64_t now) {
    changed_.clear();
    floor_ns_ = now;
}

void ChangeWatch::read_reports_locked() {
    if (state_.load() != State::watching)
        return;
    alignas(fanotify_event_metadata) unsigned char buf[16384];
    for (;;) {
        const ssize_t got = ::read(notify_.get(), buf, sizeof buf);
        const int err = errno;
        const std::int64_t now = wall_ns();
        if (now < last_read_ns_)
            return lose_locked("the wall clock stepped back");
        last_read_ns_ = now;
        if (got < 0) {
            if (err == EINTR)
                continue;
            if (err != EAGAIN)
                lose_locked(errno_text("read", err));
            return;
        }
        // Reports are packed at 4-byte steps (a handle's length is any
        // multiple of 4): each header is copied out, never read in place.
        const auto len = static_cast<std::size_t>(got);
        std::size_t at = 0;
        while (len - at >= sizeof(fanotify_event_metadata)) {
            fanotify_event_metadata m{};
            std::memcpy(&m, buf + at, sizeof m);
            if (m.vers != FANOTIFY_METADATA_VERSION)
                return lose_locked("unknown fanotify report version");
            if (m.event_len < sizeof m || m.event_len > len - at || m.metadata_len < sizeof m ||
                m.metadata_len > m.event_len)
                return lose_locked("malformed fanotify report");
            reports_.fetch_add(1, std::memory_order_relaxed);
            if ((m.mask & FAN_Q_OVERFLOW) != 0) {
                overflows_.fetch_add(1, std::memory_order_relaxed);
                forget_all_locked(now);
            } else {
                note_locked(buf + at + m.metadata_len, m.event_len - m.metadata_len, m.mask, now);
                if (state_.load() != State::watching)
                    return;
            }
            at += m.event_len;
        }
        if (changed_.size() > kMaxRemembered)
            forget_all_locked(now);
    }
}

void ChangeWatch::note_locked(const unsigned char* info, std::size_t len, std::uint64_t mask,
                              std::int64_t now) {
    while (len >= sizeof(fanotify_event_info_header)) {
        fanotify_event_info_header hdr{};
        std::memcpy(&hdr, info, sizeof hdr);
        if (hdr.len < sizeof hdr || hdr.len > len)
            return lose_locked("malformed fanotify report");
        const bool object = hdr.info_type == FAN_EVENT_INFO_TYPE_FID;
        const bool dir = hdr.info_type == FAN_EVENT_INFO_TYPE_DFID ||
                         hdr.info_type == FAN_EVENT_INFO_TYPE_DFID_NAME;
        if ((object || (dir && (mask & kDirChanges) != 0)) &&
            hdr.len >= sizeof(fanotify_event_info_fid) + sizeof(file_handle)) {
            const unsigned char* h = info + sizeof(fanotify_event_info_fid);
            file_handle fh{};
            std::memcpy(&fh, h, sizeof fh);
            const std::size_t room = hdr.len - sizeof(fanotify_event_info_fid) - sizeof fh;
            if (fh.handle_bytes > room)
                return lose_locked("malformed file handle in a fanotify report");
            std::uint64_t ino = 0;
            bool known = false;
            if (ino_first_ && (fh.handle_type == 1 || fh.handle_type == 2) &&
                fh.handle_bytes >= 4) {
                // ext4's handles: the 32-bit inode number, then its generation.
                std::uint32_t i32 = 0;
                std::memcpy(&i32, h + sizeof fh, sizeof i32);
                ino = i32;
                known = true;
            } else {
                // Any other layout: ask the filesystem which inode it is.
                alignas(file_handle) unsigned char whole[sizeof(file_handle) + MAX_HANDLE_SZ];
                if (fh.handle_bytes > MAX_HANDLE_SZ)
                    return lose_locked("file handle too long in a fanotify report");
                std::memcpy(whole, h, sizeof fh + fh.handle_bytes);
                const int fd = ::open_by_handle_at(
                    root_.get(), reinterpret_cast<file_handle*>(whole), O_PATH | O_CLOEXEC);
                struct stat st {};
                if (fd >= 0 && ::fstat(fd, &st) == 0) {
                    ino = st.st_ino;
                    known = true;
                }
                const int err = errno;
                if (fd >= 0)
                    ::close(fd);
                // Gone (ESTALE): nothing of it is asked again but through
                // its directory, whose names changed with it.
                if (!known && err != ESTALE)
                    return lose_locked(errno_text("open_by_handle_at", err));
            }
            if (known)
                changed_[ino] = now;
        }
        info += hdr.len;
        len -= hdr.len;
    }
}

bool ChangeWatch::unchanged_since(dev_t dev, std::uint64_t ino, std::int64_t asked_ns) {
    if (state_.load() != State::watching || dev != dev_)
        return false;
    std::lock_guard lk(mu_);
    read_reports_locked();
    if (state_.load() != State::watching)
        return false;
    // Asked before the watch (or before what it forgot), or at a time the
    // clock has not reached again: not vouched for.
    if (asked_ns < floor_ns_ || asked_ns > last_read_ns_)
        return false;
    auto it = changed_.find(ino);
    return it == changed_.end() || it->second < asked_ns;
}

void ChangeWatch::read_reports() {
    if (state_.load() != State::watching)
        return;
    std::lock_guard lk(mu_);
    read_reports_locked();
}

std::int64_t ChangeWatch::changed_at(std::uint64_t ino) {
    if (state_.load() != State::watching)
        return 0;
    std::lock_guard lk(mu_);
    read_reports_locked();
    auto it = changed_.find(ino);
    return it == changed_.end() ? 0 : it->second;
}

} // namespace overcache::backing
