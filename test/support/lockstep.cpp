// DOC: the lockstep runner shared by the randomized mount tests; see
// lockstep.hpp. The operations were random_ops_test.cpp's steps, moved here
// unchanged (same draws from the generator, in the same order) so that its
// seeds still replay the same steps.
#include "lockstep.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace overcache::test {

void Slot::close() {
    if (mnt >= 0)
        ::close(mnt);
    if (twin >= 0)
        ::close(twin);
    mnt = twin = -1;
}

Lockstep::Lockstep(const Mount& m, std::uint64_t seed) : m_(m), rng_(seed) {
    known_.push_back("");
    seen_.insert("");
}

Lockstep::~Lockstep() {
    close_slots();
}

void Lockstep::close_slots() {
    for (auto& s : slots_)
        s.close();
}

std::string Lockstep::log_tail() const {
    std::ostringstream os;
    for (auto& l : log_)
        os << "  " << l << "\n";
    return os.str();
}

void Lockstep::note(const std::string& s) {
    // OVERCACHE_RANDOM_HISTORY=N keeps the last N steps for the failure
    // message (default 40): a whole run's worth finds a file's history.
    static const std::size_t keep = [] {
        const char* v = std::getenv("OVERCACHE_RANDOM_HISTORY");
        return v != nullptr ? std::strtoull(v, nullptr, 10) : 40ULL;
    }();
    log_.push_back(s);
    while (log_.size() > keep)
        log_.pop_front();
}

std::string Lockstep::outcome(const std::string& what, const Res& a, const Res& b) {
    std::ostringstream os;
    os << what << " -> " << a;
    if (!(a == b))
        os << " (twin: " << b << ")";
    note(os.str());
    return a == b ? "" : os.str();
}

std::string Lockstep::pick_path() {
    if (known_.size() > 1 && chance(70))
        return known_[1 + uniform(known_.size() - 1)];
    const std::string& dir = known_[uniform(known_.size())];
    // Never the root itself: renaming a mount's root fails with EXDEV in the
    // VFS before the filesystem is asked, unlike a plain directory.
    if (std::count(dir.begin(), dir.end(), '/') >= 3)
        return known_[1 + uniform(known_.size() - 1)];
    std::string name = std::string(1, static_cast<char>('a' + uniform(8)));
    return dir.empty() ? name : dir + "/" + name;
}

void Lockstep::remember(const std::string& p) {
    if (seen_.insert(p).second)
        known_.push_back(p);
}

std::size_t Lockstep::pick_len() {
    switch (uniform(10)) {
    case 0:
        return (1 << 20) + uniform(1 << 20);
    case 1:
    case 2:
        return uniform(256 * 1024);
    default:
        return 1 + uniform(8192);
    }
}

off_t Lockstep::pick_off() {
    switch (uniform(4)) {
    case 0:
        return 0;
    case 1:
        return static_cast<off_t>(uniform(8192));
    default:
        return static_cast<off_t>(uniform(6 << 20));
    }
}

Slot* Lockstep::pick_slot(bool need_open) {
    Slot& s = slots_[uniform(slots_.size())];
    return need_open && !s.open() ? nullptr : &s;
}

std::string Lockstep::op_open(unsigned long i) {
    Slot& s = *pick_slot(false);
    s.close();
    std::string p = pick_path();
    static constexpr int kFlags[] = {
        O_RDWR | O_CREAT, O_RDWR | O_CREAT | O_EXCL,   O_RDWR | O_TRUNC,  O_RDWR,
        O_RDONLY,         O_RDWR | O_CREAT | O_APPEND, O_WRONLY | O_CREAT};
    int flags = kFlags[uniform(std::size(kFlags))];
    int fds[2] = {-1, -1};
    std::ostringstream what;
    what << "#" << i << " open " << p << " flags 0" << std::oct << flags;
    std::string r = both(what.str(), [&](const std::string& root, bool mnt) {
        int fd = ::open((root + "/" + p).c_str(), flags | O_CLOEXEC, 0644);
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

std::string Lockstep::op_close_or_reopen(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    Slot* s = pick_slot(true);
    if (!s)
        return "";
    std::string p = s->path;
    bool reopen = chance(50);
    s->close();
    note(n + "close [" + p + "]");
    if (!reopen)
        return "";
    int fds[2] = {-1, -1};
    std::string r = both(n + "reopen " + p, [&](const std::string& root, bool mnt) {
        int fd = ::open((root + "/" + p).c_str(), O_RDWR | O_CLOEXEC);
        fds[mnt ? 0 : 1] = fd;
        return fd < 0 ? -1 : 0;
    });
    s->mnt = fds[0];
    s->twin = fds[1];
    s->path = p;
    s->writable = true;
    if (!s->open())
        s->close();
    return r;
}

std::string Lockstep::op_pwrite(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    Slot* s = pick_slot(true);
    if (!s)
        return op_open(i);
    off_t off = pick_off();
    std::size_t len = pick_len();
    std::string data = pattern(len, static_cast<unsigned>(i), static_cast<std::size_t>(off));
    return both_fd(*s, n + "pwrite " + std::to_string(off) + "+" + std::to_string(len),
                   [&](int fd, bool) { return ::pwrite(fd, data.data(), len, off); });
}

std::string Lockstep::op_pread(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    Slot* s = pick_slot(true);
    if (!s)
        return "";
    off_t off = pick_off();
    std::size_t len = pick_len();
    std::string buf[2] = {std::string(len, '\0'), std::string(len, '\0')};
    std::string r =
        both_fd(*s, n + "pread " + std::to_string(off) + "+" + std::to_string(len),
                [&](int fd, bool mnt) { return ::pread(fd, buf[mnt ? 0 : 1].data(), len, off); });
    if (r.empty() && buf[0] != buf[1]) {
        std::size_t at = 0;
        while (at < len && buf[0][at] == buf[1][at])
            ++at;
        r = n + "pread returned different bytes from offset " +
            std::to_string(off + static_cast<off_t>(at));
    }
    return r;
}

std::string Lockstep::op_truncate(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    off_t len = chance(30) ? 0 : pick_off();
    Slot* s = pick_slot(true);
    if (s && chance(50))
        return both_fd(*s, n + "ftruncate " + std::to_string(len),
                       [&](int fd, bool) { return ::ftruncate(fd, len); });
    std::string p = pick_path();
    return both(
        n + "truncate " + p + " " + std::to_string(len),
        [&](const std::string& root, bool) { return ::truncate((root + "/" + p).c_str(), len); });
}

std::string Lockstep::op_fallocate(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    Slot* s = pick_slot(true);
    if (!s)
        return "";
    static constexpr int kModes[] = {
        0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE};
    int mode = kModes[uniform(std::size(kModes))];
    off_t off = pick_off();
    off_t len = static_cast<off_t>(1 + uniform(2 << 20));
    return both_fd(*s,
                   n + "fallocate mode " + std::to_string(mode) + " " + std::to_string(off) + "+" +
                       std::to_string(len),
                   [&](int fd, bool) { return ::fallocate(fd, mode, off, len); });
}

std::string Lockstep::op_rename(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    std::string a = pick_path(), b = pick_path();
    unsigned flags = 0;
    if (chance(15))
        flags = RENAME_NOREPLACE;
    else if (chance(15))
        flags = RENAME_EXCHANGE;
    std::string r = both(n + "rename " + a + " -> " + b + " flags " + std::to_string(flags),
                         [&](const std::string& root, bool) {
                             return ::renameat2(AT_FDCWD, (root + "/" + a).c_str(), AT_FDCWD,
                                                (root + "/" + b).c_str(), flags);
                         });
    remember(b);
    return r;
}

std::string Lockstep::op_link(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    std::string a = pick_path(), b = pick_path();
    std::string r = both(n + "link " + a + " -> " + b, [&](const std::string& root, bool) {
        return ::link((root + "/" + a).c_str(), (root + "/" + b).c_str());
    });
    remember(b);
    return r;
}

std::string Lockstep::op_unlink(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    std::string p = pick_path();
    return both(n + "unlink " + p,
                [&](const std::string& root, bool) { return ::unlink((root + "/" + p).c_str()); });
}

std::string Lockstep::op_mkdir(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    std::string p = pick_path();
    std::string r = both(n + "mkdir " + p, [&](const std::string& root, bool) {
        return ::mkdir((root + "/" + p).c_str(), 0755);
    });
    remember(p);
    return r;
}

std::string Lockstep::op_rmdir(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    std::string p = pick_path();
    return both(n + "rmdir " + p,
                [&](const std::string& root, bool) { return ::rmdir((root + "/" + p).c_str()); });
}

std::string Lockstep::op_mmap(unsigned long i) {
    Slot* sp = pick_slot(true);
    if (!sp)
        return "";
    Slot& s = *sp;
    struct stat st {};
    if (::fstat(s.mnt, &st) != 0 || st.st_size == 0 || !S_ISREG(st.st_mode))
        return "";
    const long page = ::sysconf(_SC_PAGESIZE);
    off_t off = static_cast<off_t>(uniform(static_cast<std::size_t>(st.st_size))) / page * page;
    std::size_t len =
        std::min<std::size_t>(static_cast<std::size_t>(st.st_size - off), 1 + uniform(300000));
    bool write = s.writable && chance(60);
    std::string data = pattern(len, static_cast<unsigned>(i), static_cast<std::size_t>(off));
    std::string seen[2];
    std::string r = both_fd(s,
                            "#" + std::to_string(i) + (write ? " mmap-write " : " mmap-read ") +
                                std::to_string(off) + "+" + std::to_string(len),
                            [&](int fd, bool mnt) -> long {
                                int prot = PROT_READ | (write ? PROT_WRITE : 0);
                                void* p = ::mmap(nullptr, len, prot, MAP_SHARED, fd, off);
                                if (p == MAP_FAILED)
                                    return -1;
                                auto* b = static_cast<char*>(p);
                                seen[mnt ? 0 : 1].assign(b, len);
                                long rc = 0;
                                if (write) {
                                    // Write every other 512-byte block, so the old bytes
                                    // between them stay visible.
                                    for (std::size_t o = 0; o < len; o += 1024)
                                        std::memcpy(b + o, data.data() + o,
                                                    std::min<std::size_t>(512, len - o));
                                    rc = ::msync(p, len, MS_SYNC);
                                }
                                ::munmap(p, len);
                                return rc;
                            });
    if (r.empty() && seen[0] != seen[1])
        r = "mmap read different bytes at " + std::to_string(off);
    return r;
}

std::string Lockstep::op_fsync(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    Slot* s = pick_slot(true);
    if (!s)
        return "";
    bool data_only = chance(50);
    return both_fd(*s, n + (data_only ? "fdatasync" : "fsync"),
                   [&](int fd, bool) { return data_only ? ::fdatasync(fd) : ::fsync(fd); });
}

std::string Lockstep::op_stat(unsigned long i) {
    const std::string n = "#" + std::to_string(i) + " ";
    std::string p = pick_path();
    struct stat st[2]{};
    std::string r = both(n + "lstat " + p, [&](const std::string& root, bool mnt) {
        return ::lstat((root + "/" + p).c_str(), &st[mnt ? 0 : 1]);
    });
    if (r.empty()) {
        std::string d = stat_diff(st[0], st[1],
                                  kMode | kNlink | kOwner | kRdev |
                                      (S_ISREG(st[0].st_mode) ? unsigned{kSize} : 0u));
        if (!d.empty())
            r = n + "lstat " + p + ": " + d;
    }
    if (Slot* s = pick_slot(true); r.empty() && s) {
        struct stat fs[2]{};
        ::fstat(s->mnt, &fs[0]);
        ::fstat(s->twin, &fs[1]);
        std::string d = stat_diff(fs[0], fs[1], kMode | kNlink | kSize);
        if (!d.empty())
            r = n + "fstat [" + s->path + "]: " + d;
    }
    return r;
}

} // namespace overcache::test
