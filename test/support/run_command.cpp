// DOC: one child, one pipe for its output, and a pidfd: poll() wakes on
// either, so neither a quiet child nor one that keeps the pipe open (a
// daemon it left behind) makes us wait past the deadline.
#include "run_command.hpp"

#include "fuse_mount.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <stdexcept>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace overcache::test {

CommandResult run_command(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
    using Clock = std::chrono::steady_clock;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0)
        throw std::runtime_error("pipe2 failed");
    std::vector<char*> argv;
    for (const auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
        ::close(p[0]);
        ::close(p[1]);
        throw std::runtime_error("fork failed");
    }
    if (pid == 0) {
        reset_signals_in_child();
        ::dup2(p[1], STDOUT_FILENO);
        ::dup2(p[1], STDERR_FILENO);
        ::execvp(argv[0], argv.data());
        std::_Exit(127);
    }
    ::close(p[1]);
    CommandResult r;
    const auto deadline = Clock::now() + timeout;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    bool exited = false, pipe_open = true;
    int ws = 0;
    while ((!exited || pipe_open) && Clock::now() < deadline) {
        std::vector<pollfd> fds;
        if (pipe_open)
            fds.push_back({p[0], POLLIN, 0});
        if (!exited && pidfd >= 0)
            fds.push_back({pidfd, POLLIN, 0});
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        // Without a pidfd the child's exit is checked every 50 ms.
        int wait_ms = static_cast<int>(std::max<long long>(left, 1));
        if (!exited && pidfd < 0)
            wait_ms = std::min(wait_ms, 50);
        if (::poll(fds.data(), fds.size(), wait_ms) < 0 && errno != EINTR)
            break;
        if (pipe_open && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            char buf[4096];
            const ssize_t got = ::read(p[0], buf, sizeof buf);
            if (got > 0)
                r.out.append(buf, static_cast<std::size_t>(got));
            else if (got == 0 || errno != EINTR)
                pipe_open = false;
        }
        if (!exited && ::waitpid(pid, &ws, WNOHANG) == pid) {
            exited = true;
            r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
        }
    }
    if (!exited) {
        r.timed_out = true;
        ::kill(pid, SIGKILL);
        // A child stuck in the kernel (gdb attaching to a thread blocked in
        // a FUSE request) may not die at once: wait a little, never forever.
        for (int i = 0; i < 100 && ::waitpid(pid, &ws, WNOHANG) == 0; ++i)
            ::usleep(50000);
        r.status = -1;
    }
    if (pidfd >= 0)
        ::close(pidfd);
    ::close(p[0]);
    return r;
}

std::string overcache_bin() {
    const char* b = std::getenv("OVERCACHE_BIN");
    if (b == nullptr)
        throw std::runtime_error("OVERCACHE_BIN is not set");
    char real[PATH_MAX];
    return ::realpath(b, real) != nullptr ? real : b;
}

CommandResult cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv{overcache_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, std::chrono::seconds(120));
}

} // namespace overcache::test
