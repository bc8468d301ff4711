// A backing that stops answering (faultfs SIGSTOPped: an NFS server gone
// quiet), issue #10 step 1: every backing call has a deadline
// (backing_timeout, seconds); the first call that misses it takes the mount
// offline (offline_ok=1, the default), and from then on the mount answers
// from what it knows without waiting on the backing: stat of names it has
// looked up, reads of cached data, its control file; uncached data is EIO,
// every change of a known name EROFS (of a new name EIO, its lookup, or
// EROFS), a listing EIO or right. Once the backing answers again
// the mount is back online by itself and sees what changed behind it. With
// offline_ok=0 a call waits for the backing however long it takes. A
// backing that fails calls (EIO) instead of hanging never blocks the mount
// and never yields wrong bytes.
//
// The mounts use attr_timeout=0,entry_timeout=0,negative_timeout=0, so every
// stat and every step of a path walk reaches the daemon. While the backing
// is stopped the test itself never touches the mount: each operation runs in
// a forked child that reports through a pipe, and the test waits for it at
// most a bound (3 s for the first request to meet the stall, 2 s for every
// other). A child still running then is SIGKILLed; one blocked in a request
// the daemon already took only dies once the request is answered, so
// children are reaped (bounded, never blocking) after faultfs runs again,
// which the fixture also does when an assertion fails while it is stopped.
#include "fault_backing.hpp"
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"
#include "wait_until.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <functional>
#include <grp.h>
#include <map>
#include <optional>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

using namespace overcache::test;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// Every stat and path walk reaches the daemon; a backing call may take 1 s.
constexpr const char* kOptions =
    "attr_timeout=0,entry_timeout=0,negative_timeout=0,backing_timeout=1";
// The first request to meet the stall may wait out the deadline (1 s).
constexpr milliseconds kFirstBound{3000};
// Any other request while offline.
constexpr milliseconds kBound{2000};
// How long the mount may take to notice that the backing answers again.
constexpr milliseconds kOnlineLimit{10000};
// How long children blocked in the mount get to end once faultfs runs.
constexpr milliseconds kReapLimit{15000};
constexpr std::size_t kFileBytes = 256 * 1024;
// An mtime clearly unlike a file made now (2017-07-14).
constexpr time_t kOldMtime = 1500000000;

// ---- operations run in a child -------------------------------------------
// These run between fork() and _exit(): no doctest, nothing that may throw
// past them (the child catches), only the mount's system calls.

// What an operation reports: 0 or the errno it failed with, and a text to
// check (attributes, a comparison of bytes, a listing; on failure the call
// that failed).
struct Outcome {
    int err = 0;
    std::string text;
};
using Op = std::function<Outcome()>;

Outcome failed(const char* call) {
    return {errno, call};
}

// What a stat says that must not change while offline.
std::string attrs_text(const struct stat& st) {
    std::ostringstream out;
    out << "mode " << std::oct << st.st_mode << std::dec << " size " << st.st_size;
    return out.str();
}

std::string mtime_text(const struct stat& st) {
    return "mtime " + std::to_string(st.st_mtim.tv_sec) + " size " + std::to_string(st.st_size);
}

// "same", or how `got` differs from `expect`.
std::string compare_bytes(const std::string& got, const std::string& expect) {
    if (got == expect)
        return "same";
    std::size_t at = 0;
    while (at < got.size() && at < expect.size() && got[at] == expect[at])
        ++at;
    return "differs: " + std::to_string(got.size()) + " bytes where " +
           std::to_string(expect.size()) + " were expected, first difference at " +
           std::to_string(at);
}

Op stat_op(std::string path) {
    return [path] {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0)
            return failed("stat");
        return Outcome{0, attrs_text(st)};
    };
}

Op mtime_op(std::string path) {
    return [path] {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0)
            return failed("stat");
        return Outcome{0, mtime_text(st)};
    };
}

// Opens `path` (dropping its pages first with `drop_pages`), reads it to
// the end into `got` and closes it: {0} or the call that failed.
Outcome read_whole(const std::string& path, bool drop_pages, std::string& got) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return failed("open");
    if (drop_pages)
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    char buf[65536];
    ssize_t n = 0;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        got.append(buf, static_cast<std::size_t>(n));
    if (n < 0) {
        const Outcome out = failed("read");
        ::close(fd);
        return out;
    }
    if (::close(fd) != 0)
        return failed("close");
    return {};
}

// Opens `path`, drops its pages, reads `len` bytes at `off` and compares
// them with `expect`.
Op range_op(std::string path, off_t off, std::string expect) {
    return [path, off, want = std::move(expect)] {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return failed("open");
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        std::string got(want.size(), '\0');
        const ssize_t n = ::pread(fd, got.data(), got.size(), off);
        const Outcome out = n < 0 ? failed("pread") : Outcome{};
        ::close(fd);
        if (n < 0)
            return out;
        got.resize(static_cast<std::size_t>(n));
        return Outcome{0, compare_bytes(got, want)};
    };
}

// Opens `path`, reads it to the end and closes it; compares what it read
// with `expect`. With `drop_pages` the page cache is dropped first, so every
// byte comes from the daemon.
Op read_op(std::string path, std::string expect, bool drop_pages) {
    return [path, want = std::move(expect), drop_pages] {
        std::string got;
        if (const Outcome out = read_whole(path, drop_pages, got); out.err != 0)
            return out;
        return Outcome{0, compare_bytes(got, want)};
    };
}

// The whole of a file as text (the control file: size 0, read to EOF).
Op text_op(std::string path) {
    return [path] {
        std::string got;
        if (const Outcome out = read_whole(path, false, got); out.err != 0)
            return out;
        return Outcome{0, got};
    };
}

// The names in a directory (without . and ..), sorted, one space apart.
std::string names_text(std::vector<std::string> names) {
    std::sort(names.begin(), names.end());
    std::string out;
    for (const auto& n : names)
        out += (out.empty() ? "" : " ") + n;
    return out;
}

Op readlink_op(std::string path) {
    return [path] {
        char buf[4096];
        const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
        if (n < 0)
            return failed("readlink");
        return Outcome{0, std::string(buf, static_cast<std::size_t>(n))};
    };
}

Op list_op(std::string path) {
    return [path] {
        DIR* d = ::opendir(path.c_str());
        if (d == nullptr)
            return failed("opendir");
        std::vector<std::string> names;
        errno = 0;
        while (const dirent* e = ::readdir(d)) {
            const std::string n = e->d_name;
            if (n != "." && n != "..")
                names.push_back(n);
        }
        if (errno != 0) {
            const Outcome out = failed("readdir");
            ::closedir(d);
            return out;
        }
        ::closedir(d);
        return Outcome{0, names_text(std::move(names))};
    };
}

// Reads the first two entries of `path`, notes the position (telldir),
// reads the rest, then seeks back (seekdir) and reads the rest again: the
// names after the position, which both readings must agree on, or "differ".
Op reread_op(std::string path) {
    return [path] {
        DIR* d = ::opendir(path.c_str());
        if (d == nullptr)
            return failed("opendir");
        auto rest = [d] {
            std::vector<std::string> names;
            while (const dirent* e = ::readdir(d))
                names.emplace_back(e->d_name);
            return names;
        };
        for (int i = 0; i < 2; ++i)
            if (::readdir(d) == nullptr) {
                ::closedir(d);
                return Outcome{0, "short"};
            }
        const long pos = ::telldir(d);
        const auto first = rest();
        ::seekdir(d, pos);
        const auto again = rest();
        ::closedir(d);
        if (first != again)
            return Outcome{0, "differ"};
        return Outcome{0, names_text(first)};
    };
}

// `op` as the unprivileged user nobody (65534), no supplementary groups.
Op as_nobody(Op op) {
    return [op] {
        if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
            ::setresuid(65534, 65534, 65534) != 0)
            return failed("setresuid");
        return op();
    };
}

// A system call returning -1 and errno on failure.
Op call_op(const char* name, std::function<int()> call) {
    return [name, fn = std::move(call)] {
        if (fn() != 0)
            return failed(name);
        return Outcome{0, ""};
    };
}

Op create_op(std::string path, std::string data) {
    return [path, bytes = std::move(data)] {
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            return failed("open");
        if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
            const Outcome out = failed("write");
            ::close(fd);
            return out;
        }
        if (::close(fd) != 0)
            return failed("close");
        return Outcome{0, ""};
    };
}

Op open_op(std::string path, int flags) {
    return [path, flags] {
        const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
        if (fd < 0)
            return failed("open");
        if (::close(fd) != 0)
            return failed("close");
        return Outcome{0, ""};
    };
}

// ---- children --------------------------------------------------------------

// What the test saw of one child.
struct Probe {
    bool finished = false; // reported within the bound
    int err = 0;
    std::string text;
    milliseconds elapsed{0};
};

std::string err_name(int err) {
    if (err == 0)
        return "success";
    const char* name = ::strerrorname_np(err);
    return name != nullptr ? name : "errno " + std::to_string(err);
}

std::string describe(const Probe& p) {
    if (!p.finished)
        return "no answer after " + std::to_string(p.elapsed.count()) + " ms" +
               (p.text.empty() ? "" : " (" + p.text + ")");
    std::string text = p.text.size() > 300 ? p.text.substr(0, 300) + "..." : p.text;
    return "answered in " + std::to_string(p.elapsed.count()) + " ms: " + err_name(p.err) +
           (text.empty() ? "" : " (" + text + ")");
}

// Runs operations in forked children and waits for them, never without a
// deadline. Every child is kept until reaped; reap() (also in the
// destructor) kills what is left and waits, bounded, for it to end.
class Probes {
public:
    // One child; its pipe's read end until finish().
    class Child {
    public:
        Child() = default;
        Child(const Child&) = delete;
        Child& operator=(const Child&) = delete;
        Child(Child&& o) noexcept
            : pid_(std::exchange(o.pid_, -1)), fd_(std::exchange(o.fd_, -1)), started_(o.started_),
              ended_(o.ended_), report_(std::move(o.report_)), eof_(o.eof_) {}
        Child& operator=(Child&&) = delete;
        ~Child() {
            if (fd_ >= 0)
                ::close(fd_);
        }

    private:
        friend class Probes;
        pid_t pid_ = -1;
        int fd_ = -1;
        Clock::time_point started_, ended_;
        std::string report_;
        bool eof_ = false;
    };

    Probes() = default;
    Probes(const Probes&) = delete;
    Probes& operator=(const Probes&) = delete;
    ~Probes() { reap(kReapLimit); }

    // `op` in a child of its own, started now.
    Child start(const Op& op) { return spawn(op, -1); }

    // Waits at most `bound` for the child to report; whether it did. The
    // child keeps running if not.
    bool wait(Child& c, milliseconds bound) {
        std::vector<Child*> one{&c};
        wait_all(one, Clock::now() + bound);
        return c.eof_;
    }

    // What the child reported; a child that did not is killed. Reaped if
    // it ended, else left for reap().
    Probe finish(Child& c) {
        Probe p;
        const auto end = c.eof_ ? c.ended_ : Clock::now();
        p.elapsed = std::chrono::duration_cast<milliseconds>(end - c.started_);
        if (c.eof_ && c.report_.size() >= sizeof(int)) {
            p.finished = true;
            std::memcpy(&p.err, c.report_.data(), sizeof(int));
            p.text = c.report_.substr(sizeof(int));
        } else if (c.eof_) {
            p.text = "the child ended without a report";
        }
        if (!c.eof_ && c.pid_ > 0)
            ::kill(c.pid_, SIGKILL);
        if (c.fd_ >= 0) {
            ::close(c.fd_);
            c.fd_ = -1;
        }
        // One that reported is ending now: give it a moment, not more. One
        // killed now may be blocked in the mount: reap() takes it later.
        reap_one(c.pid_, Clock::now() + (c.eof_ ? milliseconds(500) : milliseconds(0)));
        return p;
    }

    // Each of `ops` in a child of its own, all let go at the same moment;
    // waits at most `bound` from then for all of them.
    std::vector<Probe> run_all(const std::vector<Op>& ops, milliseconds bound) {
        int go[2];
        REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
        std::vector<Child> children;
        children.reserve(ops.size());
        for (const Op& op : ops)
            children.push_back(spawn(op, go[0]));
        ::close(go[0]);
        ::close(go[1]); // EOF: go
        const auto now = Clock::now();
        std::vector<Child*> all;
        for (Child& c : children) {
            c.started_ = now;
            all.push_back(&c);
        }
        wait_all(all, now + bound);
        std::vector<Probe> out;
        for (Child& c : children)
            out.push_back(finish(c));
        return out;
    }

    Probe run(const Op& op, milliseconds bound) {
        Child c = start(op);
        wait(c, bound);
        return finish(c);
    }

    // Kills every child not reaped yet and waits at most `limit` for them
    // to end (a child blocked in a request the daemon took ends once it is
    // answered). Never blocks longer; what is left is said on stderr.
    void reap(milliseconds limit) noexcept {
        for (pid_t pid : unreaped_)
            ::kill(pid, SIGKILL);
        reap_until(Clock::now() + limit);
        if (!unreaped_.empty()) {
            std::fprintf(stderr, "stalled_backing: %zu children blocked in the mount left behind\n",
                         unreaped_.size());
            unreaped_.clear();
        }
    }

private:
    Child spawn(const Op& op, int go_fd) {
        int p[2];
        REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
        std::fflush(stdout);
        std::fflush(stderr);
        const pid_t parent = ::getpid();
        const pid_t pid = ::fork();
        if (pid < 0) {
            ::close(p[0]);
            ::close(p[1]);
            FAIL("fork: " << std::strerror(errno));
        }
        if (pid == 0)
            child_main(op, p[1], go_fd, parent);
        ::close(p[1]);
        unreaped_.push_back(pid);
        Child c;
        c.pid_ = pid;
        c.fd_ = p[0];
        c.started_ = Clock::now();
        return c;
    }

    [[noreturn]] static void child_main(const Op& op, int report_fd, int go_fd,
                                        pid_t parent) noexcept {
        reset_signals_in_child();
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent)
            ::_exit(127);
        // Nothing of the test's stays open here (the mounts' reaper pipes,
        // other children's pipes, the go pipe's write end).
        for (int fd = 3; fd < 1024; ++fd)
            if (fd != report_fd && fd != go_fd)
                ::close(fd);
        if (go_fd >= 0) {
            char c = 0;
            while (::read(go_fd, &c, 1) > 0) {
            }
            ::close(go_fd);
        }
        try {
            const Outcome out = op();
            std::string msg(sizeof(int), '\0');
            std::memcpy(msg.data(), &out.err, sizeof(int));
            msg += out.text;
            std::size_t done = 0;
            while (done < msg.size()) {
                const ssize_t n = ::write(report_fd, msg.data() + done, msg.size() - done);
                if (n <= 0)
                    ::_exit(126);
                done += static_cast<std::size_t>(n);
            }
        } catch (...) {
            ::_exit(125);
        }
        ::_exit(0);
    }

    // Reads the children's pipes until each is at EOF or `deadline` passes.
    static void wait_all(std::vector<Child*>& children, Clock::time_point deadline) {
        for (;;) {
            std::vector<pollfd> fds;
            std::vector<Child*> open;
            for (Child* c : children)
                if (!c->eof_ && c->fd_ >= 0) {
                    fds.push_back({c->fd_, POLLIN, 0});
                    open.push_back(c);
                }
            if (fds.empty())
                return;
            const auto left =
                std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
            if (left <= 0)
                return;
            const int n =
                ::poll(fds.data(), static_cast<nfds_t>(fds.size()), static_cast<int>(left));
            if (n < 0 && errno != EINTR)
                return;
            for (std::size_t i = 0; i < fds.size(); ++i) {
                if (fds[i].revents == 0)
                    continue;
                char buf[4096];
                const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
                if (got > 0) {
                    open[i]->report_.append(buf, static_cast<std::size_t>(got));
                } else if (got == 0 || errno != EINTR) {
                    open[i]->eof_ = true;
                    open[i]->ended_ = Clock::now();
                }
            }
        }
    }

    // Reaps `pid` if it ends before `deadline` (tried at least once).
    void reap_one(pid_t pid, Clock::time_point deadline) noexcept {
        for (;;) {
            int status = 0;
            const pid_t r = ::waitpid(pid, &status, WNOHANG);
            if (r == pid || (r < 0 && errno == ECHILD)) {
                std::erase(unreaped_, pid);
                return;
            }
            if (Clock::now() >= deadline)
                return;
            ::poll(nullptr, 0, 5);
        }
    }

    // Reaps what has ended until all have or `deadline` passes.
    void reap_until(Clock::time_point deadline) noexcept {
        for (;;) {
            std::erase_if(unreaped_, [](pid_t pid) {
                int status = 0;
                const pid_t r = ::waitpid(pid, &status, WNOHANG);
                return r == pid || (r < 0 && errno == ECHILD);
            });
            if (unreaped_.empty() || Clock::now() >= deadline)
                return;
            ::poll(nullptr, 0, 20);
        }
    }

    std::vector<pid_t> unreaped_;
};

// ---- the mount ---------------------------------------------------------------

// An overcache mount over faultfs with the test's options. Its destructor
// lets faultfs run again and reaps the children before the mounts go, also
// when an assertion failed while faultfs was stopped.
class StallMount {
public:
    explicit StallMount(const std::string& extra = "") : fm_(std::string(kOptions) + extra) {}
    StallMount(const StallMount&) = delete;
    StallMount& operator=(const StallMount&) = delete;
    ~StallMount() {
        fm_.backing().resume();
        probes_.reap(kReapLimit);
    }

    Mount& m() { return fm_.mount(); }
    FaultBacking& backing() { return fm_.backing(); }
    Probes& probes() { return probes_; }
    std::string mnt(const std::string& rel) { return fm_.mount().mnt(rel); }

    Probe run(const Op& op, milliseconds bound = kBound) { return probes_.run(op, bound); }

    // The daemon goes and comes back over the same cache: the kernel and
    // the mount forget every name they looked up.
    void remount() {
        fm_.mount().unmount();
        fm_.remount();
    }

    void pause() { fm_.backing().pause(); }
    // What the daemons wrote to stderr so far.
    std::string log() const { return fm_.log(); }
    // faultfs runs again; the children that were blocked end.
    void resume() {
        fm_.backing().resume();
        probes_.reap(kReapLimit);
    }

private:
    // A SIGCHLD ignored by whoever started the test would reap our children
    // (and the daemons) behind waitpid's back.
    struct DefaultSigchld {
        DefaultSigchld() { ::signal(SIGCHLD, SIG_DFL); }
    } sigchld_;
    FaultMount fm_;
    Probes probes_; // after fm_: reaped before the mounts go
};

// What the test made through the mount before the stall.
struct Tree {
    std::string hot = random_bytes(kFileBytes, 1);  // d/hot: read whole, cached
    std::string cold = random_bytes(kFileBytes, 2); // d/cold: only looked up
    struct stat root {};
    struct stat d {};
    struct stat hot_st {};
    struct stat cold_st {};
    std::string names; // of d
};

// In a child: writes `x` at offset 0 through a new open of `path` ("write:
// success" or "write: EERRNO", " too late" past kFirstBound), asks for the
// attributes (the kernel keeps them: nothing checks the file against the
// backing after that), waits until the backing file `lower_path` holds `x`
// if `until_on_backing` (a write that lands late), then reads offset 0
// through the same open until the mount answers: "; read same" or how the
// bytes differ from `x`.
Outcome write_then_reread(const std::string& path, const std::string& lower_path,
                          const std::string& x, bool until_on_backing) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return failed("open");
    std::string text;
    const auto began = Clock::now();
    if (::pwrite(fd, x.data(), x.size(), 0) == static_cast<ssize_t>(x.size()))
        text = "write: success";
    else
        text = std::string("write: ") + ::strerrorname_np(errno);
    if (const auto took = Clock::now() - began; took > kFirstBound)
        text += " too late (" +
                std::to_string(std::chrono::duration_cast<milliseconds>(took).count()) + " ms)";
    struct stat now {};
    (void)::fstat(fd, &now);
    const auto deadline = Clock::now() + milliseconds(20000);
    while (until_on_backing) {
        std::string b(x.size(), '\0');
        const int lfd = ::open(lower_path.c_str(), O_RDONLY | O_CLOEXEC);
        const bool there = lfd >= 0 &&
                           ::pread(lfd, b.data(), b.size(), 0) == static_cast<ssize_t>(b.size()) &&
                           b == x;
        if (lfd >= 0)
            ::close(lfd);
        if (there || Clock::now() >= deadline)
            break;
        std::this_thread::sleep_for(milliseconds(50));
    }
    std::string got;
    for (;;) {
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        std::string b(x.size(), '\0');
        const ssize_t n = ::pread(fd, b.data(), b.size(), 0);
        if (n >= 0) {
            got.assign(b.data(), static_cast<std::size_t>(n));
            break;
        }
        if (Clock::now() >= deadline) {
            ::close(fd);
            return Outcome{errno, text + "; the read failed"};
        }
        std::this_thread::sleep_for(milliseconds(100));
    }
    ::close(fd);
    return Outcome{0, text + "; read " + compare_bytes(got, x)};
}

std::uint64_t cached_bytes(const std::string& path) {
    char buf[64];
    const ssize_t n = ::getxattr(path.c_str(), "user.overcache.cached_bytes", buf, sizeof buf);
    REQUIRE_MESSAGE(n > 0, "getxattr user.overcache.cached_bytes of " << path << ": "
                                                                      << std::strerror(errno));
    return std::stoull(std::string(buf, static_cast<std::size_t>(n)));
}

struct stat stat_of(const std::string& path) {
    struct stat st {};
    REQUIRE_MESSAGE(::stat(path.c_str(), &st) == 0,
                    "stat " << path << ": " << std::strerror(errno));
    return st;
}

std::string value(const std::map<std::string, std::string>& stats, const std::string& key) {
    const auto it = stats.find(key);
    return it == stats.end() ? "<no " + key + ">" : it->second;
}

// A number from the stats, or -1 when missing.
long long number(const std::map<std::string, std::string>& stats, const std::string& key) {
    const auto it = stats.find(key);
    if (it == stats.end())
        return -1;
    try {
        return std::stoll(it->second);
    } catch (...) {
        return -1;
    }
}

std::map<std::string, std::string> parse_stats(const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        const auto sp = line.find(' ');
        if (sp != std::string::npos)
            out[line.substr(0, sp)] = line.substr(sp + 1);
    }
    return out;
}

// d/ with hot (written and read whole through the mount: cached), cold
// (made behind the mount, only stat-ed through it: its name known, no byte
// cached) and victim; everything looked up through the mount.
Tree make_tree(StallMount& s) {
    Tree t;
    Mount& m = s.m();
    REQUIRE(::mkdir(s.mnt("d").c_str(), 0755) == 0);
    write_file(s.mnt("d/hot"), t.hot);
    write_file(s.backing().lower("d/cold"), t.cold);
    write_file(s.backing().lower("d/victim"), "victim");
    REQUIRE(read_uncached(s.mnt("d/hot")) == t.hot);
    m.wait_fills();
    REQUIRE(cached_bytes(s.mnt("d/hot")) == t.hot.size());
    REQUIRE(cached_bytes(s.mnt("d/cold")) == 0);
    t.root = stat_of(m.mountpoint());
    t.d = stat_of(s.mnt("d"));
    t.hot_st = stat_of(s.mnt("d/hot"));
    t.cold_st = stat_of(s.mnt("d/cold"));
    stat_of(s.mnt("d/victim"));
    const Outcome listed = list_op(s.mnt("d"))();
    REQUIRE(listed.err == 0);
    t.names = listed.text;
    REQUIRE(t.names == "cold hot victim");
    return t;
}

// The probe answered within its bound with `err` (0: success) and, when
// given and it succeeded, `text`.
void expect(const Probe& p, const std::string& what, int err,
            const std::optional<std::string>& text = std::nullopt) {
    INFO(what << ": " << describe(p));
    CHECK(p.finished);
    if (!p.finished)
        return;
    CHECK(err_name(p.err) == err_name(err));
    if (text && p.err == 0)
        CHECK(p.text == *text);
}

// Takes the mount offline: the first request meets the stall (and may wait
// out the deadline), then the control file says so.
void go_offline(StallMount& s, const Tree& t) {
    s.pause();
    expect(s.run(stat_op(s.mnt("d/hot")), kFirstBound),
           "stat of d/hot, the first request to meet the stall", 0, attrs_text(t.hot_st));
    const Probe ctl = s.run(text_op(s.mnt(".overcache")));
    expect(ctl, "reading .overcache once the stall was met", 0);
    const auto stats = parse_stats(ctl.text);
    CHECK(value(stats, "backing_state") == "offline");
    CHECK(number(stats, "backing_offline_total") >= 1);
    CHECK(number(stats, "backing_timeouts") >= 1);
}

// Reads .overcache (through children) until backing_state is online or the
// limit passes; what it said last.
// write_then_reread in a child while faultfs holds backing writes 1.5 s
// and is stopped 0.5 s into that, for kFirstBound; then it runs again and
// the child's outcome is taken.
Probe write_held_at_stall(StallMount& s, const std::string& path, const std::string& lower_path,
                          const std::string& x, bool until_on_backing) {
    s.backing().delay("write", 1500);
    Probes::Child w = s.probes().start([path, lower_path, x, until_on_backing] {
        return write_then_reread(path, lower_path, x, until_on_backing);
    });
    if (until_on_backing) {
        // The write is held in faultfs's delay: the child's open is done,
        // and it is the write that meets the stall.
        CHECK_MESSAGE(wait_until([&] { return s.backing().sleeping_calls() > 0; },
                                 milliseconds(10000), milliseconds(10)),
                      "the write never reached faultfs");
    } else {
        std::this_thread::sleep_for(milliseconds(500)); // it lands in the cache
    }
    s.backing().pause(); // the write waits in faultfs now
    std::this_thread::sleep_for(kFirstBound);
    // Not s.resume(): that would reap the child, which reads on.
    s.backing().resume();
    CHECK(s.probes().wait(w, milliseconds(25000)));
    return s.probes().finish(w);
}

// `data` written over the start of the existing file `path`.
void write_existing(const std::string& path, const std::string& data) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
    ::close(fd);
}

std::map<std::string, std::string> wait_online(StallMount& s) {
    const auto deadline = Clock::now() + kOnlineLimit;
    std::map<std::string, std::string> stats;
    for (;;) {
        const Probe p = s.run(text_op(s.mnt(".overcache")));
        if (p.finished && p.err == 0) {
            stats = parse_stats(p.text);
            if (value(stats, "backing_state") == "online")
                return stats;
        }
        if (Clock::now() >= deadline)
            return stats;
        std::this_thread::sleep_for(milliseconds(100));
    }
}

} // namespace

TEST_SUITE("stalled_backing") {
    TEST_CASE("stalled backing: offline, the mount serves what it knows and refuses changes" *
              doctest::timeout(300)) {
        StallMount s; // offline_ok is 1 unless said
        const Tree t = make_tree(s);
        {
            const auto before = s.m().stats();
            CHECK(value(before, "backing_state") == "online");
            // backing_calls=auto gates the calls into a FUSE backing.
            CHECK(value(before, "backing_calls") == "gated");
            CHECK(value(before, "backing_timeouts") == "0");
            CHECK(value(before, "backing_offline_total") == "0");
        }
        const std::string hot = s.mnt("d/hot"), cold = s.mnt("d/cold");

        go_offline(s, t);

        // Attributes of what was looked up, as they were.
        expect(s.run(stat_op(s.m().mountpoint())), "stat of the root", 0, attrs_text(t.root));
        expect(s.run(stat_op(s.mnt("d"))), "stat of d", 0, attrs_text(t.d));
        expect(s.run(stat_op(hot)), "stat of d/hot", 0, attrs_text(t.hot_st));
        expect(s.run(stat_op(cold)), "stat of d/cold", 0, attrs_text(t.cold_st));

        // Cached data, read by a fresh open from the daemon.
        expect(s.run(read_op(hot, t.hot, true)), "open and read of d/hot (cached)", 0, "same");

        // Data never cached: the open may fail with EIO, the read must.
        {
            const Probe p = s.run(read_op(cold, t.cold, true));
            INFO("open and read of d/cold (not cached): " << describe(p));
            CHECK(p.finished);
            if (p.finished) {
                CHECK(err_name(p.err) == err_name(EIO));
                CHECK((p.text == "open" || p.text == "read"));
            }
        }

        // Many at once: no FUSE thread stays blocked on the backing.
        {
            const std::string expect_attrs = attrs_text(t.hot_st);
            const Op read_hot = read_op(hot, t.hot, true);
            const Op stat_and_read = [hot, expect_attrs, read_hot] {
                const Outcome st = stat_op(hot)();
                if (st.err != 0 || st.text != expect_attrs)
                    return Outcome{st.err, "stat: " + st.text};
                return read_hot();
            };
            const auto probes = s.probes().run_all(std::vector<Op>(32, stat_and_read), kBound);
            std::size_t right = 0;
            std::string first_wrong;
            for (const Probe& p : probes) {
                if (p.finished && p.err == 0 && p.text == "same")
                    ++right;
                else if (first_wrong.empty())
                    first_wrong = describe(p);
            }
            INFO("32 concurrent stat and read of d/hot; the first wrong one: " << first_wrong);
            CHECK(right == probes.size());
        }

        // Every change of a name the mount knows fails at once, read-only.
        const std::pair<const char*, Op> changes[] = {
            {"unlink d/victim",
             call_op("unlink", [p = s.mnt("d/victim")] { return ::unlink(p.c_str()); })},
            {"chmod d/hot", call_op("chmod", [hot] { return ::chmod(hot.c_str(), 0600); })},
            {"truncate d/hot", call_op("truncate", [hot] { return ::truncate(hot.c_str(), 0); })},
            {"open d/hot O_WRONLY", open_op(hot, O_WRONLY)},
        };
        for (const auto& [what, op] : changes)
            expect(s.run(op), what, EROFS);
        // A change that needs a new name fails at once too: the kernel looks
        // the name up first, and whether it exists only the backing can say
        // (EIO); or the change itself is refused (EROFS).
        const std::pair<const char*, Op> new_names[] = {
            {"create d/new (open O_CREAT)", open_op(s.mnt("d/new"), O_WRONLY | O_CREAT)},
            {"mkdir d/newdir",
             call_op("mkdir", [p = s.mnt("d/newdir")] { return ::mkdir(p.c_str(), 0755); })},
            {"rename d/cold to d/cold2",
             call_op("rename",
                     [a = cold, b = s.mnt("d/cold2")] { return ::rename(a.c_str(), b.c_str()); })},
        };
        for (const auto& [what, op] : new_names) {
            const Probe p = s.run(op);
            INFO(what << ": " << describe(p));
            CHECK(p.finished);
            if (p.finished)
                CHECK((p.err == EROFS || p.err == EIO));
        }

        // d changed just before it was listed: not kept whole, so EIO, or
        // the right names; at once.
        {
            const Probe p = s.run(list_op(s.mnt("d")));
            INFO("listing d: " << describe(p));
            CHECK(p.finished);
            if (p.finished) {
                CHECK((p.err == 0 || p.err == EIO));
                if (p.err == 0)
                    CHECK(p.text == t.names);
            }
        }

        // Still offline: the backing has not answered.
        {
            const Probe ctl = s.run(text_op(s.mnt(".overcache")));
            expect(ctl, "reading .overcache at the end of the stall", 0);
            CHECK(value(parse_stats(ctl.text), "backing_state") == "offline");
        }

        // None of the refused changes happened, then or later. d/hot is read
        // through the mount: in writeback mode its bytes may not have
        // reached the backing yet.
        s.resume();
        FaultBacking& b = s.backing();
        CHECK(read_file(s.mnt("d/hot")) == t.hot);
        CHECK((stat_of(s.mnt("d/hot")).st_mode & 07777) == (t.hot_st.st_mode & 07777));
        CHECK(read_file(b.lower("d/victim")) == "victim");
        CHECK(read_file(b.lower("d/cold")) == t.cold);
        CHECK(::access(b.lower("d/cold2").c_str(), F_OK) != 0);
        CHECK(::access(b.lower("d/new").c_str(), F_OK) != 0);
        CHECK(::access(b.lower("d/newdir").c_str(), F_OK) != 0);
    }

    TEST_CASE("stalled backing: a directory listed before the stall lists offline, as changed "
              "through the mount" *
              doctest::timeout(300)) {
        StallMount s;
        const Tree t = make_tree(s);
        REQUIRE(::mkdir(s.mnt("never").c_str(), 0755) == 0);
        write_file(s.mnt("never/x"), "x");
        stat_of(s.mnt("never/x"));
        // A listing is kept whole only of a directory that has not changed
        // in the last two seconds (timestamps are coarse): d was made just
        // now, so it is read again once it has settled.
        std::this_thread::sleep_for(milliseconds(2200));
        REQUIRE(list_op(s.mnt("d"))().text == t.names);
        CHECK(number(s.m().stats(), "listings_recorded") >= 1);
        // Changes through the mount keep it right.
        REQUIRE(create_op(s.mnt("d/made"), "made")().err == 0);
        REQUIRE(::unlink(s.mnt("d/victim").c_str()) == 0);
        const struct stat made_st = stat_of(s.mnt("d/made"));
        // Unchanged since but for those: listed from the index, online too.
        const long long served = number(s.m().stats(), "listings_served");
        CHECK(list_op(s.mnt("d"))().text == "cold hot made");
        CHECK(number(s.m().stats(), "listings_served") > served);

        go_offline(s, t);
        expect(s.run(list_op(s.mnt("d"))), "listing d offline", 0, "cold hot made");
        expect(s.run(stat_op(s.mnt("d/made"))), "stat of d/made offline", 0,
               attrs_text(made_st));
        // The kernel counts on offsets: seekdir back to telldir's place.
        {
            const Probe p = s.run(reread_op(s.mnt("d")));
            expect(p, "reading d offline twice from one position", 0);
            CHECK(p.text != "differ");
            CHECK(p.text != "short");
        }
        // The whole listing says for sure what is not there; a directory
        // never listed cannot say.
        expect(s.run(stat_op(s.mnt("d/victim"))), "stat of d/victim (unlinked) offline", ENOENT);
        expect(s.run(stat_op(s.mnt("d/nothere"))), "stat of d/nothere offline", ENOENT);
        expect(s.run(list_op(s.mnt("never"))), "listing never (not listed before) offline", EIO);
        CHECK(number(parse_stats(s.run(text_op(s.mnt(".overcache"))).text), "listings_served") >=
              1);

        s.resume();
        const auto stats = wait_online(s);
        CHECK(value(stats, "backing_state") == "online");
        // Online, listings come from the backing again.
        write_file(s.backing().lower("d/behind"), "behind");
        CHECK(list_op(s.mnt("d"))().text == "behind cold hot made");
    }

    TEST_CASE("stalled backing: after a remount, names never looked up since are served offline "
              "from the index, and found again online" *
              doctest::timeout(300)) {
        StallMount s;
        const std::string f_bytes = random_bytes(kFileBytes, 7);
        REQUIRE(::mkdir(s.mnt("e").c_str(), 0755) == 0);
        REQUIRE(::mkdir(s.mnt("e/sub").c_str(), 0750) == 0);
        write_file(s.mnt("e/f"), f_bytes);
        write_file(s.mnt("e/sub/g"), "g");
        REQUIRE(::symlink("sub/g", s.mnt("e/l").c_str()) == 0);
        write_file(s.backing().lower("e/behind"), "made behind the mount");
        REQUIRE(read_uncached(s.mnt("e/f")) == f_bytes);
        s.m().wait_fills();
        REQUIRE(cached_bytes(s.mnt("e/f")) == f_bytes.size());
        const struct stat f_st = stat_of(s.mnt("e/f"));
        const struct stat sub_st = stat_of(s.mnt("e/sub"));
        const struct stat g_st = stat_of(s.mnt("e/sub/g"));
        // Settled (timestamps are coarse), then listed: kept whole, with
        // the attributes readdirplus saw.
        std::this_thread::sleep_for(milliseconds(2200));
        REQUIRE(list_op(s.mnt("e"))().text == "behind f l sub");
        REQUIRE(list_op(s.mnt("e/sub"))().text == "g");
        REQUIRE(readlink_op(s.mnt("e/l"))().text == "sub/g");

        s.remount();
        // The new daemon has looked up only e; then the backing stalls.
        stat_of(s.mnt("e"));
        s.pause();
        expect(s.run(stat_op(s.mnt("e")), kFirstBound), "stat of e, the first request to meet the stall",
               0);
        const auto before = parse_stats(s.run(text_op(s.mnt(".overcache"))).text);
        CHECK(value(before, "backing_state") == "offline");
        expect(s.run(list_op(s.mnt("e"))), "listing e offline", 0, "behind f l sub");
        expect(s.run(stat_op(s.mnt("e/f"))), "stat of e/f offline", 0, attrs_text(f_st));
        expect(s.run(read_op(s.mnt("e/f"), f_bytes, true)), "reading e/f offline", 0, "same");
        expect(s.run(stat_op(s.mnt("e/sub"))), "stat of e/sub offline", 0, attrs_text(sub_st));
        expect(s.run(list_op(s.mnt("e/sub"))), "listing e/sub offline", 0, "g");
        expect(s.run(readlink_op(s.mnt("e/l"))), "readlink of e/l offline", 0, "sub/g");
        expect(s.run(stat_op(s.mnt("e/l"))), "stat through e/l offline", 0,
               attrs_text(g_st));
        // An open made offline, used once the backing is back.
        const int held = ::open(s.mnt("e/f").c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE_MESSAGE(held >= 0, "open of e/f offline: " << std::strerror(errno));
        expect(s.run(stat_op(s.mnt("e/nothere"))), "stat of e/nothere offline", ENOENT);
        const auto after = parse_stats(s.run(text_op(s.mnt(".overcache"))).text);
        CHECK(number(after, "attrs_served") > number(before, "attrs_served"));

        // Online again: the entries made offline find their files again.
        s.resume();
        CHECK(value(wait_online(s), "backing_state") == "online");
        CHECK(read_file(s.mnt("e/f")) == f_bytes);
        write_file(s.mnt("e/sub/g2"), "g2"); // in writeback mode, not on the backing yet
        CHECK(read_file(s.mnt("e/sub/g2")) == "g2");
        CHECK(read_file(s.mnt("e/l")) == "g");
        CHECK(stat_of(s.mnt("e/f")).st_size == f_st.st_size);
        struct stat held_st {};
        CHECK(::fstat(held, &held_st) == 0);
        CHECK(held_st.st_size == f_st.st_size);
        std::string head(4096, '\0');
        CHECK(::pread(held, head.data(), head.size(), 0) == 4096);
        CHECK(head == f_bytes.substr(0, 4096));
        ::close(held);
    }

    TEST_CASE("stalled backing: offline answers keep the backing's permissions "
              "(default_permissions=0, as an unprivileged user)" *
              doctest::timeout(300)) {
        // The backing checks permissions itself here; offline it cannot, and
        // what the mount kept must not reach a user it would have refused.
        StallMount s(",default_permissions=0");
        const Tree t = make_tree(s);
        REQUIRE(::mkdir(s.mnt("private").c_str(), 0700) == 0);
        write_file(s.mnt("private/f"), "secret");
        REQUIRE(::mkdir(s.mnt("public").c_str(), 0755) == 0);
        write_file(s.mnt("public/g"), "open");
        std::this_thread::sleep_for(milliseconds(2200)); // settled: kept whole
        REQUIRE(list_op(s.mnt("private"))().text == "f");
        REQUIRE(list_op(s.mnt("public"))().text == "g");
        stat_of(s.mnt("private/f"));
        stat_of(s.mnt("public/g"));
        expect(s.run(as_nobody(list_op(s.mnt("private")))), "nobody lists private online", EACCES);
        expect(s.run(as_nobody(list_op(s.mnt("public")))), "nobody lists public online", 0, "g");

        go_offline(s, t);
        expect(s.run(as_nobody(list_op(s.mnt("private")))), "nobody lists private offline",
               EACCES);
        expect(s.run(as_nobody(stat_op(s.mnt("private/f")))), "nobody stats private/f offline",
               EACCES);
        expect(s.run(as_nobody(list_op(s.mnt("public")))), "nobody lists public offline", 0, "g");
        expect(s.run(list_op(s.mnt("private"))), "root lists private offline", 0, "f");
    }

    TEST_CASE("stalled backing: back online by itself, changes made behind the mount are seen" *
              doctest::timeout(300)) {
        StallMount s(",offline_ok=1");
        const Tree t = make_tree(s);
        const std::string hot = s.mnt("d/hot");
        go_offline(s, t);
        // Offline reads put the old bytes in the kernel's page cache too.
        expect(s.run(read_op(hot, t.hot, false)), "read of d/hot offline", 0, "same");

        // Behind the mount while faultfs is stopped (its lower directory is
        // a plain one): new bytes, the same size, a clearly different mtime.
        const std::string fresh = random_bytes(kFileBytes, 3);
        {
            const std::string lower = s.backing().lower("d/hot");
            const int fd = ::open(lower.c_str(), O_WRONLY | O_CLOEXEC);
            REQUIRE(fd >= 0);
            REQUIRE(::pwrite(fd, fresh.data(), fresh.size(), 0) ==
                    static_cast<ssize_t>(fresh.size()));
            REQUIRE(::close(fd) == 0);
            const timespec times[2] = {{0, UTIME_OMIT}, {kOldMtime, 0}};
            REQUIRE(::utimensat(AT_FDCWD, lower.c_str(), times, 0) == 0);
        }

        s.resume();
        const auto stats = wait_online(s);
        CHECK_MESSAGE(value(stats, "backing_state") == "online",
                      "not online " << kOnlineLimit.count() << " ms after faultfs runs again");
        CHECK(number(stats, "backing_offline_total") >= 1);

        // The next open sees the new bytes: from the page cache as the
        // kernel kept it, then from the daemon.
        expect(s.run(read_op(hot, fresh, false)), "open and read of d/hot after resume", 0, "same");
        struct stat now = t.hot_st;
        now.st_mtim.tv_sec = kOldMtime;
        expect(s.run(mtime_op(hot)), "stat of d/hot after resume", 0, mtime_text(now));
        expect(s.run(read_op(hot, fresh, true)), "open and read of d/hot from the daemon", 0,
               "same");
        // Changes work again.
        expect(s.run(create_op(s.mnt("d/after"), "after")), "create d/after after resume", 0);
        CHECK(::access(s.backing().lower("d/after").c_str(), F_OK) == 0);
        CHECK(read_file(s.mnt("d/after")) == "after"); // writeback: maybe only in the cache
    }

    TEST_CASE("stalled backing: a pinned tree lists, stats, resolves and reads offline after a "
              "remount" *
              doctest::timeout(300)) {
        // `overcache pin DIR` keeps the tree's names, attributes and data:
        // with the backing gone, ls -lR and reads of it work.
        StallMount s;
        const std::string a = random_bytes(kFileBytes, 41);
        const std::string b = random_bytes(3 * kFileBytes + 17, 42);
        const std::string c = "c";
        REQUIRE(::mkdir(s.backing().lower("p").c_str(), 0755) == 0);
        REQUIRE(::mkdir(s.backing().lower("p/sub").c_str(), 0750) == 0);
        write_file(s.backing().lower("p/a"), a);
        write_file(s.backing().lower("p/sub/b"), b);
        write_file(s.backing().lower("p/sub/c"), c);
        REQUIRE(::symlink("sub/b", s.backing().lower("p/l").c_str()) == 0);
        std::this_thread::sleep_for(milliseconds(2200)); // settled: listings are kept whole
        const CommandResult pinned = cli({"pin", s.mnt("p")});
        REQUIRE_MESSAGE(pinned.status == 0, pinned.out);
        const struct stat a_st = stat_of(s.backing().lower("p/a"));
        const struct stat b_st = stat_of(s.backing().lower("p/sub/b"));
        const struct stat sub_st = stat_of(s.backing().lower("p/sub"));

        s.remount();
        stat_of(s.mnt("p")); // the new daemon knows p itself; nothing below it
        s.pause();
        expect(s.run(stat_op(s.mnt("p")), kFirstBound), "stat of p, the first request to meet "
               "the stall", 0);
        expect(s.run(list_op(s.mnt("p"))), "listing p offline", 0, "a l sub");
        expect(s.run(list_op(s.mnt("p/sub"))), "listing p/sub offline", 0, "b c");
        expect(s.run(stat_op(s.mnt("p/a"))), "stat of p/a offline", 0, attrs_text(a_st));
        expect(s.run(stat_op(s.mnt("p/sub"))), "stat of p/sub offline", 0, attrs_text(sub_st));
        expect(s.run(stat_op(s.mnt("p/l"))), "stat through p/l offline", 0, attrs_text(b_st));
        expect(s.run(readlink_op(s.mnt("p/l"))), "readlink of p/l offline", 0, "sub/b");
        expect(s.run(read_op(s.mnt("p/a"), a, true)), "reading p/a offline", 0, "same");
        expect(s.run(read_op(s.mnt("p/sub/b"), b, true)), "reading p/sub/b offline", 0, "same");
        expect(s.run(read_op(s.mnt("p/sub/c"), c, true)), "reading p/sub/c offline", 0, "same");
        expect(s.run(read_op(s.mnt("p/l"), b, true)), "reading through p/l offline", 0, "same");
        s.resume();
        CHECK(value(wait_online(s), "backing_state") == "online");
    }

    TEST_CASE("stalled backing: under coherency=none a cached file opens and reads without "
              "asking the backing; such an open reads the rest once it answers" *
              doctest::timeout(300)) {
        // A kept open asks the backing nothing: with faultfs stopped it
        // neither waits out a deadline nor takes the mount offline.
        StallMount s(",coherency=none");
        const std::string f_bytes = random_bytes(kFileBytes, 31);
        const std::string g_bytes = random_bytes(4 * kFileBytes, 32);
        const std::string h_old = random_bytes(4 * kFileBytes, 33);
        const std::string h_new = random_bytes(4 * kFileBytes, 34);
        REQUIRE(::mkdir(s.mnt("e").c_str(), 0755) == 0);
        write_file(s.mnt("e/f"), f_bytes);
        write_file(s.backing().lower("e/g"), g_bytes);
        write_file(s.backing().lower("e/h"), h_old);
        REQUIRE(read_uncached(s.mnt("e/f")) == f_bytes);
        // g and h: only their first 4 KiB read, so only the start is cached.
        for (const auto& [name, bytes] : {std::pair{"e/g", &g_bytes}, std::pair{"e/h", &h_old}}) {
            const Outcome start = range_op(s.mnt(name), 0, bytes->substr(0, 4096))();
            REQUIRE_MESSAGE(start.err == 0, name << ": " << start.text);
            REQUIRE(start.text == "same");
        }
        s.m().wait_fills();
        REQUIRE(cached_bytes(s.mnt("e/f")) == f_bytes.size());
        REQUIRE(cached_bytes(s.mnt("e/g")) < g_bytes.size());
        REQUIRE(cached_bytes(s.mnt("e/h")) < h_old.size());
        const struct stat f_st = stat_of(s.mnt("e/f"));
        std::this_thread::sleep_for(milliseconds(2200)); // settled: the listings are kept whole
        REQUIRE(list_op(s.mnt("e"))().text == "f g h");
        REQUIRE(list_op(s.m().mountpoint())().text == "e");
        const auto before = s.m().stats();

        s.pause();
        expect(s.run(read_op(s.mnt("e/f"), f_bytes, true)), "reading e/f, faultfs stopped", 0,
               "same");
        expect(s.run(stat_op(s.mnt("e/f"))), "stat of e/f, faultfs stopped", 0, attrs_text(f_st));
        expect(s.run(range_op(s.mnt("e/g"), 0, g_bytes.substr(0, 4096))),
               "reading the cached start of e/g, faultfs stopped", 0, "same");
        // What ls -l asks of every file: its security label and its ACL
        // (e/f has no extended attributes; the index kept that too).
        const std::string f_path = s.mnt("e/f");
        expect(s.run(call_op("getxattr", [f_path] {
                   char v[64];
                   return ::getxattr(f_path.c_str(), "security.selinux", v, sizeof v) < 0 ? -1 : 0;
               })),
               "getxattr security.selinux of e/f, faultfs stopped", ENODATA);
        expect(s.run(call_op("listxattr", [f_path] {
                   char list[256];
                   const ssize_t n = ::listxattr(f_path.c_str(), list, sizeof list);
                   if (n > 0)
                       errno = EEXIST; // names where there are none
                   return n == 0 ? 0 : -1;
               })),
               "listxattr of e/f, faultfs stopped", 0);
        const auto during = parse_stats(s.run(text_op(s.mnt(".overcache"))).text);
        CHECK(value(during, "backing_state") == "online");
        CHECK(number(during, "backing_timeouts") == std::stoll(before.at("backing_timeouts")));
        CHECK(number(during, "kept_answers") > std::stoll(before.at("kept_answers")));
        s.resume();

        // An open made from kept attributes reads what the cache lacks from
        // the backing, opened at that first miss.
        CHECK(read_uncached(s.mnt("e/g")) == g_bytes);
        // Changed behind the mount (same size, same mtime: only the ctime
        // tells): coherency=none keeps serving the cached start, but the
        // first read that needs the backing compares the file as an open
        // does, and from then on the open reads the new bytes.
        {
            struct stat old_st = stat_of(s.backing().lower("e/h"));
            write_file(s.backing().lower("e/h"), h_new);
            const struct timespec ts[2] = {old_st.st_atim, old_st.st_mtim};
            REQUIRE(::utimensat(AT_FDCWD, s.backing().lower("e/h").c_str(), ts, 0) == 0);
        }
        const int fd = ::open(s.mnt("e/h").c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        std::string got(4096, '\0');
        const off_t far = static_cast<off_t>(2 * kFileBytes);
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        REQUIRE(::pread(fd, got.data(), got.size(), far) == 4096);
        CHECK(got == h_new.substr(static_cast<std::size_t>(far), 4096));
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        REQUIRE(::pread(fd, got.data(), got.size(), 0) == 4096);
        CHECK(got == h_new.substr(0, 4096));
        ::close(fd);
    }

    TEST_CASE("stalled backing: a listing read from the backing holds no thread when it "
              "stalls: at opendir, or between two batches of entries" *
              doctest::timeout(300)) {
        StallMount s;
        // Made just now, so never listed from the index (not settled), and
        // with more entries than one read of the directory returns.
        REQUIRE(::mkdir(s.backing().lower("big").c_str(), 0755) == 0);
        const std::string pad(100, 'n');
        constexpr int kEntries = 2000;
        for (int i = 0; i < kEntries; ++i)
            write_file(s.backing().lower("big/" + pad + std::to_string(i)), "");
        stat_of(s.mnt("big"));

        // The first request to meet the stall is an opendir.
        s.pause();
        {
            const Probe p = s.run(list_op(s.mnt("big")), kFirstBound);
            INFO("listing big, the first request to meet the stall: " << describe(p));
            CHECK(p.finished);
            CHECK(p.err == EIO);
        }
        s.resume();
        CHECK(value(wait_online(s), "backing_state") == "online");

        // A listing open and begun before the stall, read on after it.
        const std::string big = s.mnt("big");
        Probes::Child c = s.probes().start([big] {
            DIR* d = ::opendir(big.c_str());
            if (d == nullptr)
                return failed("opendir");
            int n = 0;
            errno = 0;
            if (::readdir(d) != nullptr)
                ++n;
            std::this_thread::sleep_for(milliseconds(800)); // the stall comes meanwhile
            while (::readdir(d) != nullptr)
                ++n;
            const Outcome out = errno != 0 ? failed("readdir") : Outcome{0, std::to_string(n)};
            ::closedir(d);
            return out;
        });
        std::this_thread::sleep_for(milliseconds(300));
        s.pause();
        CHECK_MESSAGE(s.probes().wait(c, milliseconds(800) + kFirstBound),
                      "a listing stalled between two batches did not answer");
        const Probe p = s.probes().finish(c);
        INFO("the listing begun before the stall: " << describe(p));
        CHECK(p.finished);
        CHECK(p.err == EIO);
        expect(s.run(stat_op(s.mnt("big"))), "stat of big while offline", 0);
        s.resume();
        CHECK(value(wait_online(s), "backing_state") == "online");
        CHECK(list_op(s.mnt("big"))().err == 0);
    }

    TEST_CASE("stalled backing: a read of uncached bytes of a file opened before the stall "
              "answers within the deadline" *
              doctest::timeout(300)) {
        StallMount s;
        const std::string bytes = random_bytes(8 * kFileBytes, 51);
        write_file(s.backing().lower("long"), bytes);
        stat_of(s.mnt("long"));
        const std::string path = s.mnt("long");
        const off_t far = static_cast<off_t>(6 * kFileBytes);
        Probes::Child c = s.probes().start([path, far] {
            const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                return failed("open");
            char b[4096];
            if (::pread(fd, b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) {
                const Outcome out = failed("pread at 0");
                ::close(fd);
                return out;
            }
            std::this_thread::sleep_for(milliseconds(800)); // the stall comes meanwhile
            ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            const ssize_t n = ::pread(fd, b, sizeof b, far);
            const Outcome out = n < 0 ? failed("pread far") : Outcome{0, std::to_string(n)};
            ::close(fd);
            return out;
        });
        std::this_thread::sleep_for(milliseconds(300));
        s.pause();
        CHECK_MESSAGE(s.probes().wait(c, milliseconds(800) + kFirstBound),
                      "a read of uncached bytes stalled with the backing");
        const Probe p = s.probes().finish(c);
        INFO("the read of uncached bytes after the stall: " << describe(p));
        CHECK(p.finished);
        CHECK(p.err == EIO);
        const auto stats = parse_stats(s.run(text_op(s.mnt(".overcache"))).text);
        CHECK(value(stats, "backing_state") == "offline");
        s.resume();
        CHECK(value(wait_online(s), "backing_state") == "online");
        expect(s.run(range_op(path, far, bytes.substr(static_cast<std::size_t>(far), 4096))),
               "the same read once it answers", 0, "same");
    }

    TEST_CASE("stalled backing: a getxattr, listxattr or readlink that meets the stall answers "
              "within the deadline" *
              doctest::timeout(300)) {
        // The kernel keeps names and attributes here, so these requests
        // are the first to reach the daemon once the backing stops.
        StallMount s(",attr_timeout=60,entry_timeout=60");
        write_file(s.backing().lower("x"), "x");
        REQUIRE(::symlink("x", s.backing().lower("l").c_str()) == 0);
        stat_of(s.mnt("x"));
        REQUIRE(readlink_op(s.mnt("l"))().text == "x");
        const std::string x = s.mnt("x");
        const Op get = call_op("getxattr", [x] {
            char v[16];
            return ::getxattr(x.c_str(), "user.x", v, sizeof v) < 0 ? -1 : 0;
        });
        const Op list = call_op("listxattr", [x] {
            char names[256];
            return ::listxattr(x.c_str(), names, sizeof names) < 0 ? -1 : 0;
        });

        s.pause();
        expect(s.run(get, kFirstBound), "getxattr user.x of x, the first request to meet the "
               "stall", EIO);
        expect(s.run(list), "listxattr of x offline", 0);
        {
            const Probe p = s.run(readlink_op(s.mnt("l")));
            INFO("readlink of l offline: " << describe(p));
            CHECK(p.finished);
            CHECK((p.err == EIO || (p.err == 0 && p.text == "x")));
        }
        CHECK(value(parse_stats(s.run(text_op(s.mnt(".overcache"))).text), "backing_state") ==
              "offline");
        s.resume();
        CHECK(value(wait_online(s), "backing_state") == "online");
        expect(s.run(get), "getxattr user.x of x online", ENODATA);
        expect(s.run(readlink_op(s.mnt("l"))), "readlink of l online", 0, "x");
    }

    TEST_CASE("stalled backing: with offline_ok=0 or backing_calls=inline a request waits for "
              "the backing" *
              doctest::timeout(300)) {
        // The inline case names its cache mode: the suite's extra options
        // (the writeback run gates every mount's calls) would override it.
        for (const char* extra : {",offline_ok=0", ",cache_mode=writethrough,backing_calls=inline"}) {
            CAPTURE(extra);
            StallMount s(extra);
            const Tree t = make_tree(s);
            CHECK(value(s.m().stats(), "backing_calls") == "inline");
            s.pause();
            Probes::Child c = s.probes().start(stat_op(s.mnt("d/hot")));
            CHECK_MESSAGE(!s.probes().wait(c, milliseconds(2000)),
                          "a stat with the backing stopped did not wait for it");
            s.backing().resume();
            s.probes().wait(c, kOnlineLimit);
            expect(s.probes().finish(c), "the stat once faultfs runs again", 0,
                   attrs_text(t.hot_st));
            CHECK(value(s.m().stats(), "backing_state") == "online");
        }
    }

    TEST_CASE("stalled backing: a backing that fails calls (ENOTCONN, EIO, ESTALE) instead of "
              "hanging is offline as a stalled one is; a file's own EIO is not" *
              doctest::timeout(300)) {
        StallMount s;
        const Tree t = make_tree(s);
        const std::string hot = s.mnt("d/hot");
        for (int err : {ENOTCONN, EIO, ESTALE}) {
            CAPTURE(err_name(err));
            s.backing().fail("all", err);
            expect(s.run(read_op(hot, t.hot, true), kFirstBound),
                   "open and read of the cached d/hot while the backing fails every call", 0,
                   "same");
            expect(s.run(stat_op(hot)), "stat of d/hot", 0, attrs_text(t.hot_st));
            {
                // Kept whole only once settled: EIO, or the right names.
                const Probe listed = s.run(list_op(s.mnt("d")));
                INFO("listing d: " << describe(listed));
                CHECK(listed.finished);
                CHECK((listed.err == EIO || (listed.err == 0 && listed.text == t.names)));
            }
            const auto stats = parse_stats(s.run(text_op(s.mnt(".overcache"))).text);
            CHECK(value(stats, "backing_state") == "offline");
            expect(s.run(read_op(s.mnt("d/cold"), t.cold, true)), "reading the uncached d/cold",
                   EIO);
            const Probe made = s.run(create_op(s.mnt("d/new"), "new"));
            INFO("creating d/new: " << describe(made));
            CHECK(made.finished);
            CHECK((made.err == EROFS || made.err == EIO));
            s.backing().clear();
            CHECK(value(wait_online(s), "backing_state") == "online");
            expect(s.run(read_op(hot, t.hot, true)), "reading d/hot once it answers", 0, "same");
        }
        // One file's trouble (its reads fail with EIO; statfs answers): the
        // caller gets the error, and the mount stays online.
        s.backing().fail("read", EIO);
        expect(s.run(read_op(s.mnt("d/victim"), "victim", true)), "reading d/victim", EIO);
        CHECK(value(s.m().stats(), "backing_state") == "online");
        s.backing().clear();
        expect(s.run(read_op(s.mnt("d/victim"), "victim", true)), "reading d/victim again", 0,
               "same");
    }

    TEST_CASE("stalled backing: a change that misses its deadline answers EIO within it, holds "
              "no thread, and once it lands late is what the mount shows" *
              doctest::timeout(300)) {
        // Calls of one class answer, late: each change below misses the
        // deadline (1 s) while lookups answer at once, and lands 2.5 s
        // after it was made, when the mount no longer waits for it. Under
        // coherency=none nothing would ask the backing again by itself.
        constexpr unsigned kLate = 2500;
        StallMount s(",coherency=none");
        // A directory per change, each with gone, victim and cold, settled
        // and listed: under coherency=none its names come from the index.
        constexpr int kDirs = 5;
        auto dir = [](int i) { return "c" + std::to_string(i); };
        for (int i = 0; i < kDirs; ++i) {
            REQUIRE(::mkdir(s.backing().lower(dir(i)).c_str(), 0755) == 0);
            for (const char* n : {"gone", "victim", "cold"})
                write_file(s.backing().lower(dir(i) + "/" + n), n);
        }
        std::this_thread::sleep_for(milliseconds(2200)); // settled: listings are kept whole
        for (int i = 0; i < kDirs; ++i) {
            REQUIRE(list_op(s.mnt(dir(i)))().text == "cold gone victim");
            for (const char* n : {"gone", "victim", "cold"})
                stat_of(s.mnt(dir(i) + "/" + n));
        }
        const long long served = number(s.m().stats(), "listings_served");
        for (int i = 0; i < kDirs; ++i)
            REQUIRE(list_op(s.mnt(dir(i)))().text == "cold gone victim");
        REQUIRE(number(s.m().stats(), "listings_served") >= served + kDirs);

        // Until the late change is on the backing, then until the mount is
        // online again.
        auto landed = [&](const std::function<bool()>& done) {
            const auto deadline = Clock::now() + milliseconds(4 * kLate);
            while (!done() && Clock::now() < deadline)
                std::this_thread::sleep_for(milliseconds(50));
            CHECK_MESSAGE(done(), "the late change never reached the backing");
            s.backing().clear();
            CHECK(value(wait_online(s), "backing_state") == "online");
        };
        auto lower_stat = [&](const std::string& rel, struct stat& st) {
            return ::lstat(s.backing().lower(rel).c_str(), &st) == 0;
        };
        auto exists = [&](const std::string& rel) {
            struct stat st {};
            return lower_stat(rel, st);
        };
        struct Case {
            std::string what;
            const char* classes;
            Op op;
            std::function<bool()> on_backing;
        };
        const std::vector<Case> cases = {
            {"mkdir c0/new", "meta",
             call_op("mkdir", [p = s.mnt("c0/new")] { return ::mkdir(p.c_str(), 0755); }),
             [&] { return exists("c0/new"); }},
            {"creating c1/made", "open", open_op(s.mnt("c1/made"), O_WRONLY | O_CREAT | O_EXCL),
             [&] { return exists("c1/made"); }},
            {"unlink c2/gone", "meta",
             call_op("unlink", [p = s.mnt("c2/gone")] { return ::unlink(p.c_str()); }),
             [&] { return !exists("c2/gone"); }},
            {"rename c3/victim to c3/moved", "meta",
             call_op("rename",
                     [from = s.mnt("c3/victim"), to = s.mnt("c3/moved")] {
                         return ::rename(from.c_str(), to.c_str());
                     }),
             [&] { return exists("c3/moved"); }},
            {"chmod c4/cold 0600", "meta",
             call_op("chmod", [p = s.mnt("c4/cold")] { return ::chmod(p.c_str(), 0600); }),
             [&] {
                 struct stat st {};
                 return lower_stat("c4/cold", st) && (st.st_mode & 07777) == 0600;
             }},
        };
        for (int i = 0; i < kDirs; ++i) {
            const Case& c = cases[static_cast<std::size_t>(i)];
            CAPTURE(c.what);
            s.backing().delay(c.classes, kLate);
            expect(s.run(c.op, kFirstBound), c.what + " while its calls are late", EIO);
            // The directory's lock in the kernel went with the answer.
            const Probe listed = s.run(list_op(s.mnt(dir(i))));
            INFO("listing " << dir(i) << " after it: " << describe(listed));
            CHECK(listed.finished);
            landed(c.on_backing);
            expect(s.run(list_op(s.mnt(dir(i)))), "listing " + dir(i) + " once it landed", 0,
                   list_op(s.backing().lower(dir(i)))().text);
        }
        struct stat lower {};
        REQUIRE(lower_stat("c4/cold", lower));
        expect(s.run(stat_op(s.mnt("c4/cold"))), "stat of c4/cold once the chmod landed", 0,
               attrs_text(lower));
    }

    TEST_CASE("stalled backing: a write that stalls in the backing leaves no byte it replaced "
              "in the cache" *
              doctest::timeout(300)) {
        // A write to a cached file through a descriptor opened before: in
        // writethrough it reaches the backing, which stops answering while
        // it is there (faultfs holds writes 1.5 s, and is stopped 0.5 s in),
        // so the write fails at its deadline and lands once the backing
        // runs again. The bytes it replaced must not be served through that
        // open then, which neither an open nor a kernel getattr checks
        // again (attr_timeout=60). In writeback it lands in the cache.
        StallMount s(",attr_timeout=60,entry_timeout=60");
        const std::string bytes = random_bytes(kFileBytes, 61);
        write_file(s.backing().lower("hot"), bytes);
        REQUIRE(read_uncached(s.mnt("hot")) == bytes);
        s.m().wait_fills();
        REQUIRE(cached_bytes(s.mnt("hot")) == bytes.size());
        const bool writeback = s.m().writeback_mode();
        const std::string path = s.mnt("hot");
        const std::string lower_path = s.backing().lower("hot");
        const std::string x(4096, 'X');
        const Probe wrote = write_held_at_stall(s, path, lower_path, x, !writeback);
        INFO("the write through an open of hot: " << describe(wrote));
        CHECK(wrote.finished);
        CHECK(wrote.err == 0);
        CHECK(wrote.text == (writeback ? "write: success; read same" : "write: EIO; read same"));
        s.backing().clear();
        CHECK(value(wait_online(s), "backing_state") == "online");
    }

    TEST_CASE("stalled backing: in writeback, a write around the cache that stalls leaves no "
              "clean byte it replaced, keeps the dirty ones, and writeback puts them over it" *
              doctest::timeout(300)) {
        // A file with dirty data (D at 128 KiB) and clean cached bytes
        // around it. With the cache device write-congested, a write of
        // other bytes goes around the cache to the backing (write_path.cpp),
        // which stops answering while it is there: the write fails at its
        // deadline and lands once the backing runs again. The clean bytes
        // it replaced must not be served through the open then, and D must
        // be what the backing ends with, with no conflict made of our own
        // late write. (That writeback copies nothing before such a write
        // has landed is writeback_test's "writeback 6e".)
        StallMount s(",attr_timeout=60,entry_timeout=60,cache_mode=writeback,"
                     "writeback_delay=3600");
        const std::string bytes = random_bytes(kFileBytes, 62);
        write_file(s.backing().lower("hot"), bytes);
        REQUIRE(read_uncached(s.mnt("hot")) == bytes);
        s.m().wait_fills();
        REQUIRE(cached_bytes(s.mnt("hot")) == bytes.size());
        const std::string path = s.mnt("hot");
        const std::string lower_path = s.backing().lower("hot");
        const std::string x(4096, 'X');
        const std::string d(4096, 'D');
        constexpr off_t kDirtyAt = 128 * 1024;
        {
            const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
            REQUIRE(fd >= 0);
            REQUIRE(::pwrite(fd, d.data(), d.size(), kDirtyAt) == static_cast<ssize_t>(d.size()));
            ::close(fd);
        }
        REQUIRE(s.m().stat("dirty_data") == d.size());
        // Every device write from now on is "congested": writes that do not
        // overlap dirty data go around the cache.
        REQUIRE(s.m().control("set congested_write_threshold_us 1\n") == 0);
        const std::uint64_t around_before = s.m().stat("writes_around");
        const Probe wrote = write_held_at_stall(s, path, lower_path, x, true);
        INFO("the write through an open of hot: " << describe(wrote));
        CHECK(wrote.finished);
        CHECK(wrote.err == 0);
        CHECK(wrote.text == "write: EIO; read same");
        CHECK(s.m().stat("writes_around") > around_before);
        s.backing().clear();
        CHECK(value(wait_online(s), "backing_state") == "online");
        REQUIRE(s.m().control("set congested_write_threshold_us 0\n") == 0);
        // The dirty bytes are still served, and writeback puts them on the
        // backing over the late write, as ours.
        std::string want = bytes;
        want.replace(0, x.size(), x);
        want.replace(static_cast<std::size_t>(kDirtyAt), d.size(), d);
        CHECK(s.m().control("flush\n") == 0);
        CHECK(compare_bytes(read_file(lower_path), want) == "same");
        CHECK(compare_bytes(read_uncached(path), want) == "same");
        CHECK(s.m().stat("writeback_conflicts") == 0);
    }

    TEST_CASE("stalled backing: in writeback, a write parked for room when the backing stalls "
              "is answered within writeback_wait_max and the deadline; nothing is lost" *
              doctest::timeout(300)) {
        // A small cache nearly full of a's dirty data; writes to the backing
        // are slow (3 s each), so a large write to b finds no room and parks
        // while writeback works. Then the backing stops: writeback is stuck
        // in it, no room comes, and at writeback_wait_max the parked write
        // goes around the cache, from the park strand, not a request
        // thread. That must meet the deadline too (it waited for the
        // backing without one), and the close of its duplicate of the
        // request's descriptor must not hold the strand (a FUSE backing is
        // asked at every close): either left the write unanswered for as
        // long as the stall lasted.
        // Writeback is off while a is written: its bytes fill every bucket
        // and stay dirty (with writeback on, a's own parked write had
        // writeback clean part of it, and b then found the clean buckets:
        // room enough for all of b on a busy machine, and no park).
        StallMount s(",cache_mode=writeback,writeback_delay=3600,cache_size=16M,"
                     "writeback_wait_max=1,writeback_running=0");
        write_file(s.backing().lower("a"), "");
        write_file(s.backing().lower("b"), "");
        const std::string big = random_bytes(15u << 20, 64);
        {
            const int fd = ::open(s.mnt("a").c_str(), O_WRONLY | O_CLOEXEC);
            REQUIRE(fd >= 0);
            REQUIRE(::pwrite(fd, big.data(), big.size(), 0) == static_cast<ssize_t>(big.size()));
            ::close(fd);
        }
        // The premise: no bucket is free (but the reserve) or clean, and
        // most of a is dirty.
        REQUIRE(s.m().stat("buckets_free") <= s.m().stat("buckets_reserve"));
        REQUIRE(s.m().stat("buckets_clean") == 0);
        REQUIRE(s.m().stat("dirty_data") >= (12u << 20));
        const std::string b = s.mnt("b");
        const std::string x = random_bytes(12u << 20, 65);
        s.backing().delay("write", 3000);
        REQUIRE(s.m().control("set writeback_running 1\n") == 0);
        Probes::Child w = s.probes().start([b, x] {
            const int fd = ::open(b.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd < 0)
                return failed("open");
            const ssize_t n = ::pwrite(fd, x.data(), x.size(), 0);
            const int err = n < 0 ? errno : 0;
            ::close(fd);
            if (n < 0)
                return Outcome{err, "pwrite failed"};
            return Outcome{0, std::to_string(n)};
        });
        // The stall comes once the write is parked: earlier, the open or
        // the lookup of b would meet it and the write would never park.
        REQUIRE(wait_until([&] { return s.m().stat("foreground_waits") > 0; }, milliseconds(10000),
                           milliseconds(10)));
        s.backing().pause();
        const bool answered = s.probes().wait(w, kFirstBound + milliseconds(3000));
        s.backing().resume();
        CHECK(s.probes().wait(w, milliseconds(25000)));
        const Probe p = s.probes().finish(w);
        INFO("the write of b: " << describe(p));
        CHECK(answered);
        CHECK(p.finished);
        CHECK(s.m().stat("foreground_waits") > 0);
        // A short write (what went before the stall) or, if nothing did,
        // the error of a change the backing could not take.
        std::size_t n = 0;
        if (!p.finished) {
            // Nothing to compare: the failures above say why.
        } else if (p.err == 0) {
            n = static_cast<std::size_t>(std::stoull(p.text));
            CHECK(n < x.size());
        } else {
            CHECK((p.err == EIO || p.err == EROFS));
        }
        s.backing().clear();
        CHECK(value(wait_online(s), "backing_state") == "online");
        CHECK(s.m().control("flush\n") == 0);
        CHECK(compare_bytes(read_file(s.backing().lower("a")), big) == "same");
        const std::string b_now = read_file(s.backing().lower("b"));
        REQUIRE(b_now.size() >= n);
        CHECK(compare_bytes(b_now.substr(0, n), x.substr(0, n)) == "same");
        CHECK(compare_bytes(read_uncached(s.mnt("b")), b_now) == "same");
    }

    TEST_CASE("stalled backing: in writeback, while a batch is stuck in the backing, an open, a "
              "read and changes of its file answer within the deadline; nothing is lost" *
              doctest::timeout(300)) {
        // Writeback holds a file's backing lock while it copies, on a
        // thread of its own that calls the backing without a deadline. A
        // request that needs that lock (an open compares the file with the
        // backing; a change of the backing) waited for it as long as the
        // stall lasted: a FUSE thread per request, and the caller hung.
        StallMount s(",cache_mode=writeback,writeback_delay=3600");
        write_file(s.backing().lower("w"), "");
        const std::string data = random_bytes(1u << 20, 71);
        write_existing(s.mnt("w"), data);
        REQUIRE(s.m().stat("dirty_data") == data.size());
        // A flush starts writeback of w, whose first write waits in faultfs,
        // which then stops: the batch is stuck there, holding w's lock.
        s.backing().delay("write", 1500);
        Probes::Child flush = s.probes().start([ctl = s.mnt(".overcache")] {
            const int fd = ::open(ctl.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd < 0)
                return failed("open");
            const ssize_t n = ::write(fd, "flush\n", 6);
            const Outcome out = n == 6 ? Outcome{0, ""} : failed("write");
            ::close(fd);
            return out;
        });
        std::this_thread::sleep_for(milliseconds(500));
        // Requests that need w's lock while the backing still answers all
        // else: they wait for the batch, as for a slow backing, and are
        // waiting when it stops.
        const std::string path = s.mnt("w");
        std::vector<Probes::Child> children;
        children.push_back(s.probes().start([path, data] {
            std::string got;
            const Outcome o = read_whole(path, true, got);
            if (o.err != 0)
                return o;
            return Outcome{0, compare_bytes(got, data)};
        }));
        children.push_back(s.probes().start([path] {
            return ::chmod(path.c_str(), 0600) == 0 ? Outcome{0, ""} : failed("chmod");
        }));
        children.push_back(s.probes().start([path] {
            return ::truncate(path.c_str(), 1u << 20) == 0 ? Outcome{0, ""} : failed("truncate");
        }));
        std::this_thread::sleep_for(milliseconds(300));
        s.backing().pause();
        const auto paused = Clock::now();
        const char* what[] = {"the read of w", "the chmod of w", "the truncate of w"};
        for (std::size_t i = 0; i < children.size(); ++i) {
            const auto left = std::chrono::duration_cast<milliseconds>(
                paused + kFirstBound + kBound - Clock::now());
            const bool answered = s.probes().wait(children[i], std::max(left, milliseconds(0)));
            const Probe p = s.probes().finish(children[i]);
            INFO(what[i] << ": " << describe(p));
            CHECK(answered);
            if (!p.finished)
                continue;
            if (i == 0) {
                // An open that finds the backing offline is an offline open:
                // the dirty data is all in the cache.
                CHECK(p.err == 0);
                CHECK(p.text == "same");
            } else if (p.err != 0) {
                CHECK((p.err == EIO || p.err == EROFS));
            }
        }
        s.backing().resume();
        CHECK(s.probes().wait(flush, milliseconds(25000)));
        s.probes().finish(flush);
        s.backing().clear();
        CHECK(value(wait_online(s), "backing_state") == "online");
        CHECK(s.m().control("flush\n") == 0);
        CHECK(compare_bytes(read_file(s.backing().lower("w")), data) == "same");
        CHECK(compare_bytes(read_uncached(path), data) == "same");
        CHECK(s.m().stat("dirty_data") == 0);
    }

    TEST_CASE("stalled backing: an unmount while writeback is stuck in the backing ends the "
              "daemon; the dirty data is served and written back after the next mount" *
              doctest::timeout(300)) {
        // Writeback's calls into the backing have no deadline. At unmount
        // the daemon waited for its batch in flight forever; a watchdog now
        // syncs the cache and ends the process once nothing moved for
        // 10 s (backing_timeout=1). A thread in a FUSE backing cannot be
        // killed, so the process is gone only once faultfs runs again.
        StallMount s(",cache_mode=writeback,writeback_delay=1");
        write_file(s.backing().lower("w"), "");
        const std::string data = random_bytes(1u << 20, 72);
        s.backing().delay("write", 3000);
        write_existing(s.mnt("w"), data);
        // Writeback's first write of w is held in faultfs's delay (else the
        // unmount could stop writeback before it ever calls the backing).
        REQUIRE_MESSAGE(wait_until([&] { return s.backing().sleeping_calls() > 0; },
                                   milliseconds(15000), milliseconds(10)),
                        "writeback never wrote w to the backing");
        s.backing().pause();
        s.m().begin_unmount();
        const auto deadline = Clock::now() + milliseconds(20000);
        bool said = false;
        while (!said && Clock::now() < deadline) {
            said = s.log().find("has not moved for 10 s") != std::string::npos;
            std::this_thread::sleep_for(milliseconds(100));
        }
        CHECK_MESSAGE(said, "the daemon never said it gives up waiting for writeback");
        s.backing().resume();
        const auto resumed = Clock::now();
        const int status = s.m().unmount();
        CHECK(Clock::now() - resumed < milliseconds(5000));
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
        s.backing().clear();
        s.remount();
        CHECK(compare_bytes(read_uncached(s.mnt("w")), data) == "same");
        CHECK(s.m().control("flush\n") == 0);
        CHECK(compare_bytes(read_file(s.backing().lower("w")), data) == "same");
        CHECK(s.m().stat("writeback_conflicts") == 0);
    }

    TEST_CASE("stalled backing: a write or fsync slower than the deadline is waited for while "
              "the backing answers" *
              doctest::timeout(300)) {
        // An NFS client's fsync of much dirty data, or a write through a
        // throttled link, may take longer than any other call: while the
        // backing answers the probe, such a call is no stall.
        StallMount s;
        write_file(s.backing().lower("slow"), "slow");
        stat_of(s.mnt("slow"));
        const long long timeouts = number(s.m().stats(), "backing_timeouts");
        s.backing().delay("write,fsync", 2500);
        const Probe p = s.run(
            [path = s.mnt("slow")] {
                const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
                if (fd < 0)
                    return failed("open");
                const std::string data(4096, 'S');
                if (::pwrite(fd, data.data(), data.size(), 0) != 4096) {
                    const Outcome out = failed("pwrite");
                    ::close(fd);
                    return out;
                }
                if (::fsync(fd) != 0) {
                    const Outcome out = failed("fsync");
                    ::close(fd);
                    return out;
                }
                if (::close(fd) != 0)
                    return failed("close");
                return Outcome{};
            },
            milliseconds(20000));
        expect(p, "a write and an fsync of slow, each 2.5 s late", 0);
        s.backing().clear();
        const auto stats = s.m().stats();
        CHECK(value(stats, "backing_state") == "online");
        CHECK(number(stats, "backing_timeouts") == timeouts);
        // In writeback the bytes are in the cache; in writethrough on the backing.
        const bool writeback = s.m().writeback_mode();
        CHECK(read_uncached(writeback ? s.mnt("slow") : s.backing().lower("slow")) ==
              std::string(4096, 'S'));
    }

    TEST_CASE("stalled backing: changes that meet the stall together hold no FUSE thread" *
              doctest::timeout(300)) {
        // The kernel keeps the names (entry_timeout=60), so each chmod is a
        // setattr that goes straight to a handler that changes the backing:
        // more of them at once than the daemon has threads for requests.
        StallMount s(",attr_timeout=60,entry_timeout=60");
        const Tree t = make_tree(s);
        constexpr int kFiles = 24;
        std::vector<Op> chmods;
        for (int i = 0; i < kFiles; ++i) {
            const std::string f = s.mnt("d/f" + std::to_string(i));
            write_file(f, "f");
            stat_of(f);
            chmods.push_back(call_op("chmod", [f] { return ::chmod(f.c_str(), 0600); }));
        }
        s.pause();
        const auto probes = s.probes().run_all(chmods, kFirstBound);
        std::size_t answered = 0;
        std::string first_wrong;
        for (const Probe& p : probes) {
            if (p.finished && (p.err == EIO || p.err == EROFS))
                ++answered;
            else if (first_wrong.empty())
                first_wrong = describe(p);
        }
        INFO(kFiles << " concurrent chmods as the stall came; the first wrong one: " << first_wrong);
        CHECK(answered == probes.size());
        // Every thread that serves requests is free: the control file and a
        // cached file answer.
        const Probe ctl = s.run(text_op(s.mnt(".overcache")));
        expect(ctl, "reading .overcache after them", 0);
        CHECK(value(parse_stats(ctl.text), "backing_state") == "offline");
        expect(s.run(read_op(s.mnt("d/hot"), t.hot, true)), "open and read of d/hot (cached)", 0,
               "same");
        s.resume();
        CHECK(value(wait_online(s), "backing_state") == "online");
    }
}

