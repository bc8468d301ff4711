// DOC: test support for real FUSE mounts. The daemon runs in the foreground as
// our child (-f), so we own its pid and can always reap it. We learn that the
// mount is up by watching /proc/self/mountinfo (poll() with POLLPRI wakes us
// on every change of the mount table) and the daemon's pidfd (wakes us if it
// dies first), so there is no sleep-and-retry loop and every wait has a
// deadline. Teardown escalates: umount, lazy umount, abort the connection
// through /sys/fs/fuse/connections/<minor>/abort, SIGKILL.
#include "fuse_mount.hpp"

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <stdexcept>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace overcache::test {
namespace {

using Clock = std::chrono::steady_clock;

bool standin_requested() {
    const char* s = std::getenv("OVERCACHE_TEST_STANDIN");
    return s && std::string(s) == "bind";
}

[[noreturn]] void skip(const std::string& why) {
    std::fprintf(stderr, "SKIP: %s\n", why.c_str());
    std::fflush(stderr);
    std::_Exit(77);
}

int pidfd_open(pid_t pid) {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

std::string unescape_mountinfo(const std::string& s) {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

std::string real_path(const std::string& p) {
    char buf[PATH_MAX];
    if (!::realpath(p.c_str(), buf))
        throw std::runtime_error("realpath(" + p + "): " + std::strerror(errno));
    return buf;
}

// Forks a helper in its own session that outlives a test killed by a signal
// or a timeout (meson kills the test's process group, and a test blocked in a
// FUSE request with doctest's SIGTERM handler installed never returns). It
// waits for EOF on a pipe; if the test did not write "done" first, it aborts
// the FUSE connection, kills the daemon and lazily unmounts. Returns the
// pipe's write end (close-on-exec), or -1.
int start_reaper(pid_t daemon, unsigned minor, const std::string& mnt) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0)
        return -1;
    const std::string abort_path = "/sys/fs/fuse/connections/" + std::to_string(minor) + "/abort";
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(p[0]);
        ::close(p[1]);
        return -1;
    }
    if (pid == 0) {
        ::setsid();
        // Only the pipe's read end may stay open, so its EOF means the test is gone.
        for (int fd = 3; fd < 1024; ++fd) {
            if (fd != p[0])
                ::close(fd);
        }
        // Grandchild: reparented to init, so the test need not reap it.
        if (::fork() != 0)
            std::_Exit(0);
        char buf[8];
        ssize_t n = 0, total = 0;
        while ((n = ::read(p[0], buf + total, sizeof buf - static_cast<size_t>(total))) > 0 &&
               total < 4)
            total += n;
        if (total >= 4 && std::memcmp(buf, "done", 4) == 0)
            std::_Exit(0);
        // A daemon already gone (a test's kill -9) took its connection with
        // it, and the connection number may now be another mount's (tests
        // run in parallel): abort only the connection of a live daemon.
        if (::kill(daemon, 0) != 0)
            std::_Exit(0);
        int fd = ::open(abort_path.c_str(), O_WRONLY);
        if (fd >= 0) {
            (void)!::write(fd, "1", 1);
            ::close(fd);
        }
        ::kill(daemon, SIGKILL);
        ::umount2(mnt.c_str(), MNT_DETACH);
        std::_Exit(0);
    }
    ::close(p[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    return p[1];
}

} // namespace

void reset_signals_in_child() noexcept {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; ++sig)
        ::sigaction(sig, &dfl, nullptr); // fails harmlessly for SIGKILL, SIGSTOP
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

void require_daemon() {
    require_fuse();
    if (standin_requested())
        skip("this test needs the daemon, not the bind stand-in");
}

void require_fuse() {
    if (::geteuid() != 0)
        skip("mount tests need root");
    if (standin_requested())
        return;
    int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        skip(std::string("cannot open /dev/fuse: ") + std::strerror(errno));
    ::close(fd);
    const char* bin = std::getenv("OVERCACHE_BIN");
    if (!bin || !*bin)
        skip("OVERCACHE_BIN is not set (run through meson test)");
    if (::access(bin, X_OK) != 0)
        skip(std::string("OVERCACHE_BIN=") + bin + " is not executable");
}

bool is_mountpoint(const std::string& path, std::string* fstype, unsigned* minor) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    bool found = false;
    // Later lines stack over earlier ones, so the last match is the visible one.
    while (std::getline(in, line)) {
        // id parent major:minor root mountpoint opts [optional...] - fstype src superopts
        std::istringstream ls(line);
        std::string id, parent, devno, root, mp;
        ls >> id >> parent >> devno >> root >> mp;
        if (unescape_mountinfo(mp) != path)
            continue;
        std::string tok;
        while (ls >> tok && tok != "-") {
        }
        std::string type;
        ls >> type;
        found = true;
        if (fstype)
            *fstype = type;
        if (minor) {
            auto colon = devno.find(':');
            *minor = colon == std::string::npos
                         ? 0
                         : static_cast<unsigned>(std::stoul(devno.substr(colon + 1)));
        }
    }
    return found;
}

long rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0)
            return std::stol(line.substr(6));
    }
    return -1;
}

Mount::Mount(MountOptions opts)
    : opts_(std::move(opts)), tmp_("overcache-mnt", opts_.tmp_base), timeout_(opts_.timeout) {
    const MountOptions& o = opts_;
    require_fuse();
    const std::string base = real_path(tmp_.path());
    backing_ = base + "/backing";
    mnt_ = base + "/mnt";
    for (const auto& d : {backing_, mnt_}) {
        if (::mkdir(d.c_str(), 0755) != 0)
            throw std::runtime_error("mkdir(" + d + "): " + std::strerror(errno));
    }
    if (o.twin) {
        twin_ = base + "/twin";
        if (::mkdir(twin_.c_str(), 0755) != 0)
            throw std::runtime_error("mkdir(" + twin_ + "): " + std::strerror(errno));
    }
    standin_ = standin_requested();
    start(o);
}

void Mount::start(const MountOptions& opts) {
    if (!standin_) {
        start_daemon(opts);
        return;
    }
    if (::mount(backing_.c_str(), mnt_.c_str(), nullptr, MS_BIND, nullptr) != 0)
        throw std::runtime_error("bind mount: " + std::string(std::strerror(errno)));
    mounted_ = true;
}

bool names_option(const std::string& options, const std::string& name) {
    std::size_t at = 0;
    while (at <= options.size()) {
        std::size_t end = options.find(',', at);
        if (end == std::string::npos)
            end = options.size();
        const std::string item = options.substr(at, end - at);
        if (item == name || item.rfind(name + "=", 0) == 0)
            return true;
        at = end + 1;
    }
    return false;
}

void Mount::start_daemon(const MountOptions& opts) {
    const std::string bin = std::getenv("OVERCACHE_BIN");
    std::vector<std::string> args{bin, backing_, mnt_, "-f"};
    // The cache lives in the test's temporary directory (the default location
    // under /var/cache would outlive the test), and is kept small (the data
    // file takes space as buckets are used, up to its size).
    std::string o = opts.options;
    if (!names_option(o, "cache") && !names_option(o, "cache_dev")) {
        cache_ = tmp_.path() + "/cache";
        ::mkdir(cache_.c_str(), 0700);
        o = "cache=" + cache_ + (!names_option(o, "cache_size") ? ",cache_size=256M" : "") +
            (o.empty() ? "" : "," + o);
    }
    // The congestion bypass sends I/O around a device that is slow for a
    // while, which a loaded CI machine's is: a test that expects its writes
    // or fills in the cache would then see them on the backing. Only the
    // tests that name a threshold, or ask for the defaults, have it.
    for (const char* t : {"congested_read_threshold_us", "congested_write_threshold_us"})
        if (!opts.congestion && !names_option(o, t))
            o += std::string(",") + t + "=0";
    // The whole suite can run in another mode: OVERCACHE_TEST_EXTRA_OPTIONS
    // is appended to every mount's options (CI runs it with writeback).
    // A test that chose its cache mode keeps it.
    if (const char* x = std::getenv("OVERCACHE_TEST_EXTRA_OPTIONS");
        x != nullptr && *x != '\0' && o.find("cache_mode=") == std::string::npos)
        o += std::string(",") + x;
    writeback_ = o.find("cache_mode=writeback") != std::string::npos &&
                 o.rfind("cache_mode=writeback") >= o.rfind("cache_mode=");
    args.emplace_back("-o");
    args.push_back(o);
    if (opts.debug)
        args.emplace_back("-d");
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    // Open the mount table before the child starts so no change is missed.
    int mi = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (mi < 0)
        throw std::runtime_error("open mountinfo: " + std::string(std::strerror(errno)));
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(mi);
        throw std::runtime_error("fork: " + std::string(std::strerror(errno)));
    }
    if (pid == 0) {
        reset_signals_in_child();
        // The daemon must not outlive a test binary that crashed.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent)
            std::_Exit(127);
        ::execv(argv[0], argv.data());
        std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
        std::_Exit(127);
    }
    pid_ = pid;

    int pfd = pidfd_open(pid_);
    const auto deadline = Clock::now() + opts.timeout;
    std::string why;
    for (;;) {
        std::string type;
        if (is_mountpoint(mnt_, &type, &fuse_minor_) && type.rfind("fuse", 0) == 0) {
            mounted_ = true;
            break;
        }
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            why = "overcache exited before mounting (" +
                  (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                     : "signal " + std::to_string(WTERMSIG(status))) +
                  ")";
            break;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            why = "overcache did not mount " + mnt_ + " within " +
                  std::to_string(opts.timeout.count()) + " ms";
            break;
        }
        pollfd fds[2] = {{mi, POLLPRI, 0}, {pfd, POLLIN, 0}};
        // Without a pidfd, fall back to waking every 20 ms to check the child.
        int n = pfd >= 0 ? 2 : 1;
        int wait_ms = pfd >= 0 ? static_cast<int>(left.count()) : 20;
        ::poll(fds, static_cast<nfds_t>(n), std::min(wait_ms, static_cast<int>(left.count())));
        // Re-arm the mountinfo event: it fires once per change until re-read.
        char buf[4096];
        ::lseek(mi, 0, SEEK_SET);
        while (::read(mi, buf, sizeof buf) > 0) {
        }
    }
    if (pfd >= 0)
        ::close(pfd);
    ::close(mi);
    if (mounted_)
        reaper_fd_ = start_reaper(pid_, fuse_minor_, mnt_);
    if (!mounted_) {
        unmount();
        throw std::runtime_error(why);
    }
}

bool Mount::wait_child(std::chrono::milliseconds timeout, int& status) noexcept {
    if (pid_ < 0)
        return true;
    int pfd = pidfd_open(pid_);
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        pid_t r = ::waitpid(pid_, &status, WNOHANG);
        if (r == pid_ || (r < 0 && errno == ECHILD)) {
            if (r == pid_)
                exit_status_ = status;
            pid_ = -1;
            if (pfd >= 0)
                ::close(pfd);
            return true;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0)
            break;
        if (pfd >= 0) {
            pollfd p{pfd, POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left.count()));
        } else {
            ::usleep(10000);
        }
    }
    if (pfd >= 0)
        ::close(pfd);
    return false;
}

int Mount::unmount() noexcept {
    int status = 0;
    if (standin_) {
        if (mounted_ && ::umount2(mnt_.c_str(), 0) != 0)
            ::umount2(mnt_.c_str(), MNT_DETACH);
        mounted_ = false;
        return 0;
    }
    begin_unmount();
    if (wait_child(timeout_, status)) {
        if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0))
            std::fprintf(stderr, "overcache on %s ended with %s %d\n", mnt_.c_str(),
                         WIFSIGNALED(status) ? "signal" : "exit status",
                         WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        return status;
    }
    // The daemon did not notice the unmount: cut the connection so no request
    // can keep it (or us) blocked, then kill it.
    std::fprintf(stderr, "overcache pid %d did not exit after unmount; aborting\n",
                 static_cast<int>(pid_));
    abort_connection();
    ::kill(pid_, SIGKILL);
    if (!wait_child(std::chrono::milliseconds(5000), status))
        std::fprintf(stderr, "overcache pid %d survived SIGKILL\n", static_cast<int>(pid_));
    return status;
}

void Mount::begin_unmount() noexcept {
    if (standin_ || (!mounted_ && !is_mountpoint(mnt_)))
        return;
    if (::umount2(mnt_.c_str(), 0) != 0) {
        std::fprintf(stderr, "umount %s: %s; detaching lazily\n", mnt_.c_str(),
                     std::strerror(errno));
        ::umount2(mnt_.c_str(), MNT_DETACH);
    }
    mounted_ = false;
}

void Mount::abort_connection() noexcept {
    if (fuse_minor_ == 0)
        return;
    const std::string abort_path =
        "/sys/fs/fuse/connections/" + std::to_string(fuse_minor_) + "/abort";
    int fd = ::open(abort_path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!::write(fd, "1", 1);
        ::close(fd);
    }
}

void Mount::end_reaper() noexcept {
    if (reaper_fd_ >= 0) {
        (void)!::write(reaper_fd_, "done", 4);
        ::close(reaper_fd_);
        reaper_fd_ = -1;
    }
}

void Mount::check_exit() const {
    // A daemon that crashed (even while shutting down) fails the test; a
    // SIGKILL/SIGTERM is what some tests do to it on purpose.
    const int status = exit_status_;
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        if (sig == SIGABRT || sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE)
            FAIL_CHECK("overcache on " << mnt_ << " crashed with signal " << sig << " ("
                                       << std::string(::strsignal(sig)) << ")");
    }
}

void Mount::remount() {
    remount(opts_.options);
}

void Mount::remount(const std::string& options) {
    unmount();
    check_exit();
    end_reaper();
    exit_status_ = 0;
    fuse_minor_ = 0;
    opts_.options = options;
    start(opts_);
}

void Mount::kill9() {
    REQUIRE_MESSAGE(pid_ > 0, "kill9: no daemon");
    REQUIRE(::kill(pid_, SIGKILL) == 0);
    int status = 0;
    REQUIRE_MESSAGE(wait_child(timeout_, status), "overcache survived SIGKILL");
    // The kernel still has the mount, with nobody answering: fail whatever
    // is pending and take it down.
    abort_connection();
    ::umount2(mnt_.c_str(), MNT_DETACH);
    mounted_ = false;
}

std::map<std::string, std::string> Mount::stats() const {
    std::map<std::string, std::string> m;
    if (standin_)
        return m;
    // A line is split at its first space: a value may hold spaces
    // (last_error), a key never does.
    std::ifstream in(mnt_ + "/.overcache");
    for (std::string line; std::getline(in, line);) {
        const auto sp = line.find(' ');
        if (sp != std::string::npos)
            m[line.substr(0, sp)] = line.substr(sp + 1);
    }
    return m;
}

int Mount::control(const std::string& line) const {
    if (standin_)
        return ENOTSUP;
    const int fd = ::open((mnt_ + "/.overcache").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int err = 0;
    const ssize_t n = ::write(fd, line.data(), line.size());
    if (n < 0)
        err = errno;
    else if (static_cast<std::size_t>(n) != line.size())
        err = EIO; // a command is taken whole or not at all
    if (::close(fd) != 0 && err == 0)
        err = errno;
    return err;
}

std::uint64_t Mount::stat(const std::string& key) const {
    const auto m = stats();
    const auto it = m.find(key);
    REQUIRE_MESSAGE(it != m.end(), "no " << key << " in " << mnt_ << "/.overcache");
    return std::stoull(it->second);
}

void Mount::wait_fills() const {
    // fills_pending is raised before a read is answered and lowered after the
    // fill is counted, so 0 here is exact: no later fill from earlier reads.
    // Nothing announces it, so the control file is read again until then.
    const auto deadline = Clock::now() + timeout_;
    std::uint64_t pending = stat("fills_pending");
    while (pending != 0 && Clock::now() < deadline) {
        ::poll(nullptr, 0, 5);
        pending = stat("fills_pending");
    }
    REQUIRE_MESSAGE(pending == 0,
                    pending << " fills still pending after " << timeout_.count() << " ms");
}

Mount::~Mount() {
    unmount();
    check_exit();
    end_reaper();
    if (is_mountpoint(mnt_))
        ::umount2(mnt_.c_str(), MNT_DETACH);
}

void Mount::settle() const {
    if (!writeback_ || !mounted_)
        return;
    // What the kernel still holds (its writeback cache) reaches the mount
    // first, as `overcache flush` does it.
    const int root = ::open(mnt_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE_MESSAGE(root >= 0, "open " << mnt_ << ": " << std::strerror(errno));
    const int synced = ::syncfs(root) == 0 ? 0 : errno;
    ::close(root);
    REQUIRE_MESSAGE(synced == 0, "syncfs of " << mnt_ << ": " << std::strerror(synced));
    const std::string ctl = mnt_ + "/.overcache";
    const int fd = ::open(ctl.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE_MESSAGE(fd >= 0, "open " << ctl << ": " << std::strerror(errno));
    const ssize_t n = ::write(fd, "flush\n", 6);
    const int err = errno;
    ::close(fd);
    REQUIRE_MESSAGE(n == 6, "flush of " << mnt_ << ": " << std::strerror(err));
}

} // namespace overcache::test
