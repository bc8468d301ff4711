// DOC: faultfs under a test, started and reaped the way fuse_mount.cpp does
// overcache: our own child (-f), a mount table watched with poll(), a pidfd
// for its exit, a reaper helper in its own session that aborts the FUSE
// connection only while faultfs still lives (a dead one's connection number
// may already belong to another test's mount), and every wait bounded.
#include "fault_backing.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <stdexcept>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace overcache::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kClasses[] = {"read", "write", "fsync", "open", "truncate", "meta", "lookup"};

// Indexes of kClasses named in "write,fsync" ("all": every one).
std::vector<std::size_t> class_indexes(const std::string& list) {
    std::vector<std::size_t> out;
    std::stringstream ss(list);
    for (std::string name; std::getline(ss, name, ',');) {
        bool found = false;
        for (std::size_t i = 0; i < std::size(kClasses); ++i)
            if (name == "all" || name == kClasses[i]) {
                out.push_back(i);
                found = true;
            }
        if (!found)
            throw std::invalid_argument("faultfs has no operation class '" + name + "'");
    }
    return out;
}

int pidfd_open(pid_t pid) {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

void abort_connection(unsigned minor) noexcept {
    if (minor == 0)
        return;
    const std::string p = "/sys/fs/fuse/connections/" + std::to_string(minor) + "/abort";
    const int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!::write(fd, "1", 1);
        ::close(fd);
    }
}

// A helper in its own session (meson kills the test's process group on a
// timeout) that outlives the test: on EOF of the pipe without "done" first,
// it takes faultfs down. Returns the pipe's write end, or -1.
int start_reaper(pid_t daemon, unsigned minor, const std::string& mnt) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0)
        return -1;
    const std::string abort_path = "/sys/fs/fuse/connections/" + std::to_string(minor) + "/abort";
    const pid_t pid = ::fork();
    if (pid < 0) {
        ::close(p[0]);
        ::close(p[1]);
        return -1;
    }
    if (pid == 0) {
        ::setsid();
        for (int fd = 3; fd < 1024; ++fd)
            if (fd != p[0])
                ::close(fd);
        if (::fork() != 0) // the grandchild is init's to reap
            std::_Exit(0);
        char buf[8];
        ssize_t n = 0, total = 0;
        while (total < 4 &&
               (n = ::read(p[0], buf + total, sizeof buf - static_cast<size_t>(total))) > 0)
            total += n;
        if (total >= 4 && std::memcmp(buf, "done", 4) == 0)
            std::_Exit(0);
        if (::kill(daemon, 0) != 0)
            std::_Exit(0);
        const int fd = ::open(abort_path.c_str(), O_WRONLY);
        if (fd >= 0) {
            (void)!::write(fd, "1", 1);
            ::close(fd);
        }
        ::kill(daemon, SIGKILL);
        ::umount2(mnt.c_str(), MNT_DETACH);
        std::_Exit(0);
    }
    ::close(p[0]);
    ::waitpid(pid, nullptr, 0);
    return p[1];
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

} // namespace

void require_faultfs() {
    require_daemon();
    const char* bin = std::getenv("FAULTFS_BIN");
    if (!bin || !*bin || ::access(bin, X_OK) != 0) {
        std::fprintf(stderr, "SKIP: FAULTFS_BIN is not set or not executable\n");
        std::fflush(stderr);
        std::_Exit(77);
    }
}

FaultBacking::FaultBacking(const std::string& mountpoint, std::chrono::milliseconds timeout)
    : dir_("overcache-faultfs"), mnt_(mountpoint), timeout_(timeout) {
    require_faultfs();
    lower_ = dir_.path() + "/lower";
    control_ = dir_.path() + "/control";
    if (::mkdir(lower_.c_str(), 0755) != 0)
        throw std::runtime_error("mkdir(" + lower_ + "): " + std::strerror(errno));
    write_control();

    std::vector<std::string> args{std::getenv("FAULTFS_BIN"), control_, lower_, mnt_, "-f"};
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    const int mi = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (mi < 0)
        throw std::runtime_error("open mountinfo: " + std::string(std::strerror(errno)));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        ::close(mi);
        throw std::runtime_error("fork: " + std::string(std::strerror(errno)));
    }
    if (pid == 0) {
        reset_signals_in_child();
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent)
            std::_Exit(127);
        ::execv(argv[0], argv.data());
        std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
        std::_Exit(127);
    }
    pid_ = pid;
    const int pfd = pidfd_open(pid_);
    const auto deadline = Clock::now() + timeout_;
    std::string why;
    for (;;) {
        std::string type;
        if (is_mountpoint(mnt_, &type, &minor_) && type == "fuse.faultfs")
            break;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            why = "faultfs exited before mounting";
            break;
        }
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            why = "faultfs did not mount " + mnt_ + " in time";
            break;
        }
        pollfd fds[2] = {{mi, POLLPRI, 0}, {pfd, POLLIN, 0}};
        ::poll(fds, pfd >= 0 ? 2 : 1, pfd >= 0 ? static_cast<int>(left) : 20);
        char buf[4096];
        ::lseek(mi, 0, SEEK_SET);
        while (::read(mi, buf, sizeof buf) > 0) {
        }
    }
    if (pfd >= 0)
        ::close(pfd);
    ::close(mi);
    if (!why.empty()) {
        stop();
        throw std::runtime_error(why);
    }
    reaper_fd_ = start_reaper(pid_, minor_, mnt_);
}

FaultBacking::~FaultBacking() {
    stop();
}

void FaultBacking::write_control() {
    std::string text = "# written by fault_backing.cpp\n";
    for (std::size_t i = 0; i < std::size(kClasses); ++i) {
        if (!fail_[i].empty())
            text += "fail " + std::string(kClasses[i]) + " " + fail_[i] + "\n";
        if (!delay_[i].empty())
            text += "delay " + std::string(kClasses[i]) + " " + delay_[i] + "\n";
    }
    text += "throttle write " + std::to_string(write_rate_) + "\n";
    text += "throttle read " + std::to_string(read_rate_) + "\n";
    // A new file renamed over the old one: faultfs sees either whole.
    const std::string tmp = control_ + ".new";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << text;
        if (!out.flush())
            throw std::runtime_error("cannot write " + tmp);
    }
    if (::rename(tmp.c_str(), control_.c_str()) != 0)
        throw std::runtime_error("rename to " + control_ + ": " + std::strerror(errno));
}

void FaultBacking::fail(const std::string& classes, int err) {
    for (auto i : class_indexes(classes))
        fail_[i] = err == 0 ? std::string() : std::to_string(err);
    write_control();
}

void FaultBacking::delay(const std::string& classes, unsigned ms) {
    for (auto i : class_indexes(classes))
        delay_[i] = ms == 0 ? std::string() : std::to_string(ms);
    write_control();
}

void FaultBacking::throttle_writes(std::uint64_t bytes_per_s) {
    write_rate_ = bytes_per_s;
    write_control();
}

void FaultBacking::throttle_reads(std::uint64_t bytes_per_s) {
    read_rate_ = bytes_per_s;
    write_control();
}

void FaultBacking::clear() {
    for (auto& f : fail_)
        f.clear();
    for (auto& d : delay_)
        d.clear();
    write_rate_ = read_rate_ = 0;
    write_control();
}

namespace {

// Whether every thread of `pid` is stopped (state T), or gone.
bool all_stopped(pid_t pid) {
    const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = ::opendir(tasks.c_str());
    if (d == nullptr)
        return true;
    bool stopped = true;
    while (const dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        std::ifstream in(tasks + "/" + e->d_name + "/stat");
        std::string line;
        if (!std::getline(in, line))
            continue; // ended meanwhile
        // PID (COMM) STATE ...: COMM may hold spaces and parentheses.
        const auto close = line.rfind(')');
        const char state = close != std::string::npos && close + 2 < line.size() ? line[close + 2] : '?';
        if (state != 'T' && state != 't' && state != 'Z' && state != 'X') {
            stopped = false;
            break;
        }
    }
    ::closedir(d);
    return stopped;
}

} // namespace

void FaultBacking::pause() {
    REQUIRE(pid_ > 0);
    REQUIRE(::kill(pid_, SIGSTOP) == 0);
    paused_ = true;
    // kill() returns before the threads stop, each at its next return to
    // user space: a request sent before then may still be answered. Wait
    // until all of them are stopped, so that the next call meets the stall.
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (!all_stopped(pid_) && Clock::now() < deadline)
        ::poll(nullptr, 0, 1);
    CHECK_MESSAGE(all_stopped(pid_), "faultfs (pid " << pid_ << ") not stopped 5 s after SIGSTOP");
}

void FaultBacking::resume() {
    if (pid_ > 0 && paused_)
        ::kill(pid_, SIGCONT);
    paused_ = false;
}

bool FaultBacking::wait_exit(std::chrono::milliseconds timeout) noexcept {
    if (pid_ < 0)
        return true;
    const int pfd = pidfd_open(pid_);
    const auto deadline = Clock::now() + timeout;
    bool gone = false;
    for (;;) {
        int status = 0;
        const pid_t r = ::waitpid(pid_, &status, WNOHANG);
        if (r == pid_ || (r < 0 && errno == ECHILD)) {
            if (r == pid_ && (WIFSIGNALED(status) || WEXITSTATUS(status) != 0))
                std::fprintf(stderr, "faultfs on %s ended with %s %d\n", mnt_.c_str(),
                             WIFSIGNALED(status) ? "signal" : "exit status",
                             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            pid_ = -1;
            gone = true;
            break;
        }
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0)
            break;
        if (pfd >= 0) {
            pollfd p{pfd, POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left));
        } else {
            ::usleep(10000);
        }
    }
    if (pfd >= 0)
        ::close(pfd);
    return gone;
}

void FaultBacking::stop() noexcept {
    resume();
    if (is_mountpoint(mnt_)) {
        if (::umount2(mnt_.c_str(), 0) != 0) {
            // Still in use (an overcache daemon that would not go): detach it
            // and cut the connection so nobody stays blocked on faultfs.
            std::fprintf(stderr, "umount %s: %s; detaching lazily\n", mnt_.c_str(),
                         std::strerror(errno));
            ::umount2(mnt_.c_str(), MNT_DETACH);
            abort_connection(minor_);
        }
    }
    if (pid_ > 0 && !wait_exit(timeout_)) {
        std::fprintf(stderr, "faultfs pid %d did not exit after unmount; killing it\n",
                     static_cast<int>(pid_));
        abort_connection(minor_);
        ::kill(pid_, SIGKILL);
        wait_exit(std::chrono::milliseconds(5000));
    }
    if (reaper_fd_ >= 0) {
        (void)!::write(reaper_fd_, "done", 4);
        ::close(reaper_fd_);
        reaper_fd_ = -1;
    }
}

FaultMount::FaultMount(MountOptions opts) {
    require_faultfs();
    if (names_option(opts.options, "cache") || names_option(opts.options, "cache_dev"))
        throw std::invalid_argument("FaultMount picks the cache itself");
    mount_ = std::make_unique<Mount>(std::move(opts));
    Mount& m = *mount_;
    // The first daemon served the plain directory; its cache belongs to
    // that backing and would be refused over faultfs.
    m.unmount();
    TmpDir::remove_tree(m.cache_dir());
    if (::mkdir(m.cache_dir().c_str(), 0700) != 0)
        throw std::runtime_error("mkdir(" + m.cache_dir() + "): " + std::strerror(errno));
    const std::string mnt = m.mountpoint();
    const std::string backing = mnt.substr(0, mnt.rfind('/')) + "/backing";
    backing_ = std::make_unique<FaultBacking>(backing);
    log_path_ = m.root() + "/overcache.log";
    remount();
}

void FaultMount::remount() {
    // The daemon inherits our stderr: point it at the log for the fork.
    std::fflush(stderr);
    const int saved = ::dup(STDERR_FILENO);
    const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    REQUIRE_MESSAGE((saved >= 0 && log >= 0), "cannot redirect stderr to " << log_path_);
    ::dup2(log, STDERR_FILENO);
    ::close(log);
    struct Restore {
        int fd;
        ~Restore() {
            std::fflush(stderr);
            ::dup2(fd, STDERR_FILENO);
            ::close(fd);
        }
    } restore{saved};
    mount_->remount();
}

int FaultBacking::sleeping_calls() const {
    // /proc/PID/task/TID/syscall starts with the number of the system call
    // the thread is blocked in ("running" when it is not in one).
    const std::string tasks = "/proc/" + std::to_string(pid_) + "/task";
    DIR* d = ::opendir(tasks.c_str());
    if (d == nullptr)
        return 0;
    int n = 0;
    while (const dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        std::ifstream in(tasks + "/" + e->d_name + "/syscall");
        long nr = -1;
        if (in >> nr && (nr == SYS_nanosleep || nr == SYS_clock_nanosleep))
            ++n;
    }
    ::closedir(d);
    return n;
}

std::string FaultMount::log() const {
    return read_all(log_path_);
}

FaultMount::~FaultMount() {
    if (mount_)
        mount_->unmount();
    if (backing_)
        backing_->stop();
    // The log's end is what explains a failure; all of it may be long.
    const std::string text = log();
    constexpr std::size_t kTail = 16384;
    if (!text.empty())
        std::fprintf(stderr, "--- overcache log (%s)%s ---\n%s--- end of log ---\n",
                     log_path_.c_str(), text.size() > kTail ? ", last 16 KiB" : "",
                     text.size() > kTail ? text.substr(text.size() - kTail).c_str() : text.c_str());
    backing_.reset();
    mount_.reset();
}

} // namespace overcache::test
