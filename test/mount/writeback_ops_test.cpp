// Randomized operations in a cache mode, against a twin plain directory,
// aimed at what writeback makes hard: the mount must answer from data the
// backing does not have yet, and metadata operations on such files must end
// with the backing holding what a direct user would have. Written for
// cache_mode=writeback and run in every mode cache_modes.hpp chooses
// (writethrough until writeback lands), over a small cache so GC runs.
//
// Each step runs on the mount and on the twin (test/support/lockstep.hpp)
// and their results must agree (return value, errno, bytes read):
//  - pwrite at random offsets (holes, past EOF), write at the fd's position
//    (appends on O_APPEND opens), pread, truncate up and down, fallocate
//    (allocate, keep-size, punch, zero, zero keep-size), copy_file_range,
//    MAP_SHARED reads and writes with msync, fsync/fdatasync;
//  - rename, link and unlink of a file right after writing to it (fresh,
//    dirty data), then more writes through the open fd; mkdir, rmdir;
//  - chmod, chown, utimensat/futimens with explicit times;
//  - stat: mode, nlink, owner and size agree; mtime agrees wherever it was
//    set explicitly (an mtime before 2015 on the twin: nothing has written
//    the file since); st_blocks is nonzero on the mount when the twin's file
//    has a nonzero byte below its size (only that: the kernel does not promise
//    st_blocks * 512 >= the bytes written);
//  - now and then a clean unmount and mount again, or kill -9 and mount
//    again. Before a kill every file and directory is fsynced (after kill -9
//    only fsynced state is guaranteed) and the open files are closed on both
//    sides; after either, the whole trees must agree (names, types, modes,
//    sizes, nlink, contents, explicit mtimes).
// No daemon may reject its own cached data (cache_read_errors: the index
// pointing at space that was reused), and GC must have reclaimed buckets.
// At the end the files are closed, the mount flushed, and the backing
// directory itself must agree with the twin the same way.
//
// Knobs: OVERCACHE_RANDOM_SEED (printed), OVERCACHE_RANDOM_OPS (default
// 3000), OVERCACHE_TEST_CACHE_MODE (cache_modes.hpp). A failure prints the
// seed and the last steps.
#include "cache_modes.hpp"
#include "fuse_mount.hpp"
#include "lockstep.hpp"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <random>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace overcache::test;

namespace {

// The offset of the first nonzero byte of the file at `path`, or -1.
off_t first_nonzero_byte(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    std::vector<char> buf(1 << 16);
    off_t found = -1;
    for (off_t off = 0; found < 0;) {
        const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
        if (n <= 0)
            break;
        for (ssize_t k = 0; k < n; ++k)
            if (buf[static_cast<std::size_t>(k)] != 0) {
                found = off + k;
                break;
            }
        off += n;
    }
    ::close(fd);
    return found;
}

using Clock = std::chrono::steady_clock;

// Explicit times are drawn from 2001..2014; a twin file whose mtime is
// before kExplicitBefore has not been written since its utimens.
constexpr time_t kExplicitFrom = 978307200;    // 2001-01-01
constexpr time_t kExplicitBefore = 1420070400; // 2015-01-01

std::uint64_t env_or(const char* name, std::uint64_t dflt) {
    const char* s = std::getenv(name);
    return s && *s ? std::strtoull(s, nullptr, 0) : dflt;
}

// Relative paths of every entry under `root` (directories before what they
// hold), from a walk of the twin.
void walk(const std::string& root, const std::string& rel, std::vector<std::string>& files,
          std::vector<std::string>& dirs) {
    DIR* d = ::opendir((rel.empty() ? root : root + "/" + rel).c_str());
    if (!d)
        return;
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..")
            names.push_back(n);
    }
    ::closedir(d);
    for (const auto& n : names) {
        const std::string r = rel.empty() ? n : rel + "/" + n;
        struct stat st {};
        if (::lstat((root + "/" + r).c_str(), &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            dirs.push_back(r);
            walk(root, r, files, dirs);
        } else if (S_ISREG(st.st_mode)) {
            files.push_back(r);
        }
    }
}

// For every regular file of the twin whose mtime was set explicitly (and
// not changed since), `tree`'s file has the same mtime. "" or the first few
// differences.
std::string explicit_mtimes_diff(const std::string& tree, const std::string& twin) {
    std::vector<std::string> files, dirs;
    walk(twin, "", files, dirs);
    std::ostringstream os;
    int shown = 0;
    for (const auto& f : files) {
        struct stat t {
        }, s{};
        if (::lstat((twin + "/" + f).c_str(), &t) != 0 || t.st_mtim.tv_sec >= kExplicitBefore)
            continue;
        if (::lstat((tree + "/" + f).c_str(), &s) != 0) {
            os << f << ": " << std::strerror(errno) << "; ";
            ++shown;
        } else if (const std::string d = stat_diff(s, t, kMtime); !d.empty()) {
            os << f << ": " << d;
            ++shown;
        }
        if (shown >= 5)
            break;
    }
    return os.str();
}

class Runner : public Lockstep {
public:
    Runner(Mount& m, std::uint64_t seed) : Lockstep(m, seed), mount_(m) {}

    // One random step; "" when both trees agreed.
    std::string step(unsigned long i);
    // Mount and twin agree, as trees and in explicit mtimes.
    std::string compare_all() const {
        std::string d = compare_trees();
        if (d.empty())
            d = explicit_mtimes_diff(m_.mountpoint(), m_.twin());
        return d;
    }
    unsigned remounts() const { return remounts_; }
    unsigned kills() const { return kills_; }
    // GC's reclaimed buckets, and cached data the daemon rejected (checksum
    // or I/O: the index pointing at reused space), summed over the daemons
    // so far (each counts its own): read before each unmount or kill, and by
    // the caller at the end.
    std::uint64_t reclaimed() const { return reclaimed_; }
    std::uint64_t read_errors() const { return read_errors_; }
    void count_gc() {
        const auto s = m_.stats();
        if (auto it = s.find("gc_buckets_reclaimed"); it != s.end())
            reclaimed_ += std::stoull(it->second);
        if (auto it = s.find("cache_read_errors"); it != s.end())
            read_errors_ += std::stoull(it->second);
    }

private:
    std::string op_write_at_position(unsigned long i);
    std::string op_fallocate_wb(unsigned long i);
    std::string op_copy_file_range(unsigned long i);
    std::string op_dirty_namespace(unsigned long i);
    std::string op_chmod_chown(unsigned long i);
    std::string op_utimens(unsigned long i);
    std::string op_stat_wb(unsigned long i);
    std::string op_remount(unsigned long i);
    std::string op_kill(unsigned long i);
    std::string op_open_wb(unsigned long i);
    std::string op_namespace(unsigned long i);
    // After a rename of `from` to `to`: the open files follow it, and so do
    // the names their slots show (the log, reopens).
    void retarget(const std::string& from, const std::string& to);
    // A path of an open writable slot (fresh data, likely), else any path.
    std::string pick_fresh_path();
    Slot* pick_writable_slot();
    // An existing regular file of the twin ("" if none), an existing
    // directory ("" is the root), a new-ish name in an existing directory.
    std::string pick_file();
    std::string pick_dir();
    std::string pick_name_in_dir();

    Mount& mount_;
    unsigned remounts_ = 0, kills_ = 0;
    std::uint64_t reclaimed_ = 0, read_errors_ = 0;
};

Slot* Runner::pick_writable_slot() {
    std::vector<Slot*> w;
    for (auto& s : slots_)
        if (s.open() && s.writable)
            w.push_back(&s);
    return w.empty() ? nullptr : w[uniform(w.size())];
}

void Runner::retarget(const std::string& from, const std::string& to) {
    struct stat st {};
    if (from == to || ::lstat(m_.twin(from).c_str(), &st) == 0 ||
        ::lstat(m_.twin(to).c_str(), &st) != 0 || !S_ISREG(st.st_mode))
        return; // the rename did not happen (or not to a file)
    for (auto& s : slots_)
        if (s.path == from)
            s.path = to;
}

std::string Runner::pick_file() {
    std::vector<std::string> files, dirs;
    walk(m_.twin(), "", files, dirs);
    return files.empty() ? "" : files[uniform(files.size())];
}

std::string Runner::pick_dir() {
    std::vector<std::string> files, dirs;
    walk(m_.twin(), "", files, dirs);
    const std::size_t k = uniform(dirs.size() + 2); // the root more often
    return k < dirs.size() ? dirs[k] : "";
}

std::string Runner::pick_name_in_dir() {
    const std::string dir = pick_dir();
    const std::string name = "n" + std::to_string(uniform(12));
    return dir.empty() ? name : dir + "/" + name;
}

std::string Runner::op_open_wb(unsigned long i) {
    Slot& s = *pick_slot(false);
    s.close();
    std::string p = chance(75) ? pick_file() : "";
    if (p.empty())
        p = pick_name_in_dir();
    static constexpr int kFlags[] = {
        O_RDWR | O_CREAT, O_RDWR,   O_RDWR | O_APPEND,        O_WRONLY | O_APPEND | O_CREAT,
        O_RDWR | O_TRUNC, O_RDONLY, O_RDWR | O_CREAT | O_EXCL};
    const int flags = kFlags[uniform(std::size(kFlags))];
    int fds[2] = {-1, -1};
    std::ostringstream what;
    what << "#" << i << " open " << p << " flags 0" << std::oct << flags;
    std::string r = both(what.str(), [&](const std::string& root, bool mnt) {
        const int fd = ::open((root + "/" + p).c_str(), flags | O_CLOEXEC, 0644);
        fds[mnt ? 0 : 1] = fd;
        return fd < 0 ? -1 : 0;
    });
    s.mnt = fds[0];
    s.twin = fds[1];
    s.path = p;
    s.writable = (flags & O_ACCMODE) != O_RDONLY;
    if (s.open())
        remember(p);
    else
        s.close();
    return r;
}

std::string Runner::op_namespace(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    const std::string from = pick_fresh_path();
    switch (uniform(4)) {
    case 0:
    case 1: {
        std::string to = chance(30) ? pick_file() : "";
        if (to.empty()) // no file yet: never the root (EXDEV from the VFS)
            to = pick_name_in_dir();
        std::string r =
            both(n + "rename " + from + " -> " + to, [&](const std::string& root, bool) {
                return ::rename((root + "/" + from).c_str(), (root + "/" + to).c_str());
            });
        retarget(from, to);
        remember(to);
        return r;
    }
    case 2: {
        const std::string to = pick_name_in_dir();
        std::string r = both(n + "link " + from + " -> " + to, [&](const std::string& root, bool) {
            return ::link((root + "/" + from).c_str(), (root + "/" + to).c_str());
        });
        remember(to);
        return r;
    }
    default:
        return both(n + "unlink " + from, [&](const std::string& root, bool) {
            return ::unlink((root + "/" + from).c_str());
        });
    }
}

std::string Runner::pick_fresh_path() {
    if (Slot* s = pick_writable_slot(); s && chance(60))
        return s->path;
    if (std::string f = pick_file(); !f.empty() && chance(80))
        return f;
    return pick_path();
}

std::string Runner::op_write_at_position(unsigned long i) {
    Slot* s = pick_slot(true);
    if (!s)
        return op_open(i);
    const std::size_t len = pick_len();
    const std::string data = pattern(len, static_cast<unsigned>(i) * 7919u);
    return both_fd(*s, "#" + std::to_string(i) + " write " + std::to_string(len),
                   [&](int fd, bool) { return ::write(fd, data.data(), len); });
}

std::string Runner::op_fallocate_wb(unsigned long i) {
    Slot* s = pick_slot(true);
    if (!s)
        return "";
    static constexpr int kModes[] = {
        0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE,
        FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE};
    const int mode = kModes[uniform(std::size(kModes))];
    // Mostly inside what the file holds, where its fresh data is.
    struct stat st {};
    ::fstat(s->twin, &st);
    const off_t off = st.st_size > 0 && chance(70)
                          ? static_cast<off_t>(uniform(static_cast<std::size_t>(st.st_size)))
                          : pick_off();
    const off_t len = static_cast<off_t>(1 + uniform(chance(50) ? 65536 : (2 << 20)));
    return both_fd(*s,
                   "#" + std::to_string(i) + " fallocate mode " + std::to_string(mode) + " " +
                       std::to_string(off) + "+" + std::to_string(len),
                   [&](int fd, bool) { return ::fallocate(fd, mode, off, len); });
}

std::string Runner::op_copy_file_range(unsigned long i) {
    Slot* in = pick_slot(true);
    Slot* out = pick_slot(true);
    if (!in || !out)
        return "";
    struct stat st {};
    ::fstat(in->twin, &st);
    const off_t off_in = st.st_size > 0 && chance(80)
                             ? static_cast<off_t>(uniform(static_cast<std::size_t>(st.st_size)))
                             : pick_off();
    const off_t off_out = pick_off();
    const std::size_t len = pick_len();
    const Slot& src = *in;
    std::ostringstream what;
    what << "#" << i << " copy_file_range [" << in->path << "] " << off_in << "+" << len << " -> "
         << off_out;
    return both_fd(*out, what.str(), [&](int fd, bool mnt) {
        loff_t a = off_in, b = off_out;
        return ::copy_file_range(mnt ? src.mnt : src.twin, &a, fd, &b, len, 0);
    });
}

std::string Runner::op_dirty_namespace(unsigned long i) {
    Slot* s = pick_writable_slot();
    if (!s)
        return op_open(i);
    const std::string n = "#" + std::to_string(i) + " ";
    const off_t off = pick_off();
    const std::size_t len = 1 + uniform(65536);
    const std::string data = pattern(len, static_cast<unsigned>(i), static_cast<std::size_t>(off));
    std::string r = both_fd(*s, n + "pwrite " + std::to_string(off) + "+" + std::to_string(len),
                            [&](int fd, bool) { return ::pwrite(fd, data.data(), len, off); });
    if (!r.empty())
        return r;
    const std::string from = s->path;
    std::string to = chance(20) ? pick_file() : "";
    if (to.empty()) // no file yet: never the root (EXDEV from the VFS)
        to = pick_name_in_dir();
    switch (uniform(3)) {
    case 0:
        r = both(n + "rename " + from + " -> " + to, [&](const std::string& root, bool) {
            return ::rename((root + "/" + from).c_str(), (root + "/" + to).c_str());
        });
        retarget(from, to);
        remember(to);
        break;
    case 1:
        r = both(n + "link " + from + " -> " + to, [&](const std::string& root, bool) {
            return ::link((root + "/" + from).c_str(), (root + "/" + to).c_str());
        });
        remember(to);
        break;
    default:
        r = both(n + "unlink " + from, [&](const std::string& root, bool) {
            return ::unlink((root + "/" + from).c_str());
        });
    }
    if (!r.empty() || !chance(50))
        return r;
    // More data through the fd, after the name changed (or went away).
    const off_t off2 = pick_off();
    const std::string more =
        pattern(len, static_cast<unsigned>(i) + 1, static_cast<std::size_t>(off2));
    return both_fd(*s, n + "pwrite after " + std::to_string(off2) + "+" + std::to_string(len),
                   [&](int fd, bool) { return ::pwrite(fd, more.data(), len, off2); });
}

std::string Runner::op_chmod_chown(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    static constexpr mode_t kModes[] = {0600, 0644, 0664, 0755, 0444, 0700, 0640, 0000};
    const mode_t mode = kModes[uniform(std::size(kModes))];
    const uid_t uid = chance(50) ? 0 : static_cast<uid_t>(1000 + uniform(3));
    const gid_t gid = chance(50) ? 0 : static_cast<gid_t>(1000 + uniform(3));
    Slot* s = pick_slot(true);
    std::ostringstream m;
    m << std::oct << mode;
    switch (uniform(4)) {
    case 0:
        if (s)
            return both_fd(*s, n + "fchmod " + m.str(),
                           [&](int fd, bool) { return ::fchmod(fd, mode); });
        [[fallthrough]];
    case 1: {
        const std::string p = pick_fresh_path();
        return both(n + "chmod " + p + " " + m.str(), [&](const std::string& root, bool) {
            return ::chmod((root + "/" + p).c_str(), mode);
        });
    }
    case 2:
        if (s)
            return both_fd(*s, n + "fchown " + std::to_string(uid) + ":" + std::to_string(gid),
                           [&](int fd, bool) { return ::fchown(fd, uid, gid); });
        [[fallthrough]];
    default: {
        const std::string p = pick_fresh_path();
        return both(n + "lchown " + p + " " + std::to_string(uid) + ":" + std::to_string(gid),
                    [&](const std::string& root, bool) {
                        return ::lchown((root + "/" + p).c_str(), uid, gid);
                    });
    }
    }
}

std::string Runner::op_utimens(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    auto pick_time = [&] {
        timespec t{};
        t.tv_sec =
            kExplicitFrom +
            static_cast<time_t>(uniform(static_cast<std::size_t>(kExplicitBefore - kExplicitFrom)));
        t.tv_nsec = static_cast<long>(uniform(1000000000));
        return t;
    };
    timespec times[2] = {pick_time(), pick_time()};
    if (chance(15))
        times[0].tv_nsec = UTIME_OMIT;
    else if (chance(15))
        times[1].tv_nsec = UTIME_NOW; // then the mtime is not compared
    std::ostringstream what;
    what << "utimens " << times[0].tv_sec << "." << times[0].tv_nsec << " " << times[1].tv_sec
         << "." << times[1].tv_nsec;
    std::string target;
    std::string r;
    Slot* s = pick_slot(true);
    if (s && chance(40)) {
        target = "";
        r = both_fd(*s, n + "f" + what.str(), [&](int fd, bool) { return ::futimens(fd, times); });
    } else {
        target = pick_fresh_path();
        r = both(n + what.str() + " " + target, [&](const std::string& root, bool) {
            return ::utimensat(AT_FDCWD, (root + "/" + target).c_str(), times, AT_SYMLINK_NOFOLLOW);
        });
    }
    if (!r.empty())
        return r;
    // The mount shows the mtime just set.
    struct stat a {
    }, b{};
    const bool by_fd = target.empty();
    const int ra = by_fd ? ::fstat(s->mnt, &a) : ::lstat(m_.mnt(target).c_str(), &a);
    const int rb = by_fd ? ::fstat(s->twin, &b) : ::lstat(m_.twin(target).c_str(), &b);
    if (ra == 0 && rb == 0 && times[1].tv_nsec != UTIME_NOW && times[1].tv_nsec != UTIME_OMIT) {
        if (const std::string d = stat_diff(a, b, kMtime); !d.empty())
            return n + "after " + what.str() + ": " + d;
    }
    return "";
}

std::string Runner::op_stat_wb(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    const std::string p = pick_fresh_path();
    struct stat st[2]{};
    std::string r = both(n + "lstat " + p, [&](const std::string& root, bool mnt) {
        return ::lstat((root + "/" + p).c_str(), &st[mnt ? 0 : 1]);
    });
    if (!r.empty())
        return r;
    if (!S_ISREG(st[1].st_mode))
        return "";
    unsigned fields = kMode | kNlink | kOwner | kSize;
    if (st[1].st_mtim.tv_sec < kExplicitBefore)
        fields |= kMtime;
    if (const std::string d = stat_diff(st[0], st[1], fields); !d.empty())
        return n + "lstat " + p + ": " + d;
    if (st[1].st_size > 0 && st[0].st_blocks == 0) {
        // Zero blocks is right only if the twin holds nothing but zeros: an
        // allocated block of the twin's may hold only zeros (a write past
        // what a truncate then cut off leaves the twin's block allocated,
        // while the mount rightly keeps nothing for it).
        const off_t data = first_nonzero_byte(m_.twin(p));
        if (data >= 0 && data < st[1].st_size)
            return n + "lstat " + p + ": st_blocks 0 on the mount for " +
                   std::to_string(st[1].st_size) + " bytes with a nonzero byte at " +
                   std::to_string(data) + " (twin: " + std::to_string(st[1].st_blocks) +
                   " blocks)";
    }
    return "";
}

std::string Runner::op_remount(unsigned long i) {
    close_slots();
    count_gc();
    note("#" + std::to_string(i) + " clean unmount, mount again");
    if (const int status = mount_.unmount(); status != 0)
        return "#" + std::to_string(i) + " clean unmount: the daemon ended with wait status " +
               std::to_string(status);
    mount_.remount();
    ++remounts_;
    const std::string d = compare_all();
    return d.empty() ? "" : "after a clean unmount and mount: " + d;
}

std::string Runner::op_kill(unsigned long i) {
    // Only fsynced state is promised after kill -9: sync everything first.
    std::vector<std::string> files, dirs;
    walk(m_.twin(), "", files, dirs);
    dirs.emplace_back("");
    for (const auto& rel : files) {
        const int fd = ::open(m_.mnt(rel).c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return "#" + std::to_string(i) + " open " + rel +
                   " to fsync it: " + std::strerror(errno);
        const int rc = ::fsync(fd);
        const int err = errno;
        ::close(fd);
        if (rc != 0)
            return "#" + std::to_string(i) + " fsync " + rel + ": " + std::strerror(err);
    }
    for (const auto& rel : dirs) {
        const int fd = ::open(m_.mnt(rel).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            ::fsync(fd);
            ::close(fd);
        }
    }
    // The open files die with the daemon; the twin's are closed with them.
    close_slots();
    count_gc();
    note("#" + std::to_string(i) + " fsync all, kill -9, mount again");
    mount_.kill9();
    mount_.remount();
    ++kills_;
    const std::string d = compare_all();
    return d.empty() ? "" : "after kill -9 and mount: " + d;
}

std::string Runner::step(unsigned long i) {
    const std::size_t r = uniform(1000);
    if (r < 60)
        return op_open_wb(i);
    if (r < 70)
        return op_open(i);
    if (r < 110)
        return op_close_or_reopen(i);
    if (r < 250)
        return op_pwrite(i);
    if (r < 310)
        return op_write_at_position(i);
    if (r < 390)
        return op_pread(i);
    if (r < 440)
        return op_truncate(i);
    if (r < 490)
        return op_fallocate_wb(i);
    if (r < 530)
        return op_copy_file_range(i);
    if (r < 600)
        return op_dirty_namespace(i);
    if (r < 640)
        return op_namespace(i);
    if (r < 650)
        return op_rename(i);
    if (r < 660)
        return op_link(i);
    if (r < 680)
        return op_unlink(i);
    if (r < 690) {
        const std::string d = pick_name_in_dir();
        std::string res =
            both("#" + std::to_string(i) + " mkdir " + d, [&](const std::string& root, bool) {
                return ::mkdir((root + "/" + d).c_str(), 0755);
            });
        remember(d);
        return res;
    }
    if (r < 700)
        return op_mkdir(i);
    if (r < 710)
        return op_rmdir(i);
    if (r < 740)
        return op_chmod_chown(i);
    if (r < 780)
        return op_utimens(i);
    if (r < 820)
        return op_mmap(i);
    if (r < 850)
        return op_fsync(i);
    if (r < 990)
        return op_stat_wb(i);
    if (r < 995)
        return op_remount(i);
    return op_kill(i);
}

void run_ops_test(const std::string& mode) {
    if (!cache_mode_chosen(mode)) {
        MESSAGE("cache_mode=" << mode << " not chosen (OVERCACHE_TEST_CACHE_MODE); skipped");
        return;
    }
    require_daemon();
    const std::uint64_t seed = env_or("OVERCACHE_RANDOM_SEED", std::random_device{}());
    const std::uint64_t ops = env_or("OVERCACHE_RANDOM_OPS", 3000);
    const std::uint64_t tree_every = env_or("OVERCACHE_RANDOM_TREE_EVERY", 250);
    const std::string repro = "cache_mode=" + mode +
                              " OVERCACHE_RANDOM_SEED=" + std::to_string(seed) +
                              " OVERCACHE_RANDOM_OPS=" + std::to_string(ops);
    MESSAGE(repro);
    const auto t0 = Clock::now();
    Mount m(MountOptions{.options = small_cache_options(mode)});
    Runner r(m, seed);
    bool ok = true;
    for (unsigned long i = 0; i < ops; ++i) {
        std::string bad = r.step(i);
        if (bad.empty() && (i + 1) % tree_every == 0) {
            bad = r.compare_all();
            if (!bad.empty())
                bad = "trees differ after op #" + std::to_string(i) + ": " + bad;
        }
        if (!bad.empty()) {
            FAIL_CHECK(repro << ": " << bad << "\nlast operations:\n" << r.log_tail());
            ok = false;
            break;
        }
    }
    if (ok) {
        const std::string d = r.compare_all();
        CHECK_MESSAGE(d == "", repro << ": at the end: " << d << "\nlast operations:\n"
                                     << r.log_tail());
    }
    // The backing itself, after the files are closed and the mount flushed.
    r.close_slots();
    r.count_gc();
    const bool mounted = flush_to_backing(m, mode);
    std::string d = tree_diff(m.backing(), m.twin(), true);
    if (d.empty())
        d = explicit_mtimes_diff(m.backing(), m.twin());
    CHECK_MESSAGE(d == "", repro << ": the backing after the flush: " << d << "\nlast operations:\n"
                                 << r.log_tail());
    if (mounted) {
        const std::string dm = r.compare_all();
        CHECK_MESSAGE(dm == "", repro << ": the mount after the flush: " << dm);
    }
    CHECK_MESSAGE(r.reclaimed() > 0, "GC reclaimed no bucket: the cache is not small enough");
    CHECK_MESSAGE(r.read_errors() == 0,
                  repro << ": the daemons rejected cached data " << r.read_errors() << " times");
    const auto secs =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count() / 1000.0;
    MESSAGE("cache_mode=" << mode << ": " << ops << " ops, " << r.remounts() << " remounts, "
                          << r.kills() << " kill -9, GC reclaimed " << r.reclaimed() << " buckets, "
                          << secs << " s");
}

} // namespace

TEST_SUITE("mount") {
    TEST_CASE("writeback ops agree with a plain directory [writethrough]" * doctest::timeout(300)) {
        run_ops_test("writethrough");
    }
    TEST_CASE("writeback ops agree with a plain directory [writeback]" * doctest::timeout(300)) {
        run_ops_test("writeback");
    }
}
