#include "mountpoint.hpp"

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace overcache {
namespace {

// A thread was left waiting on a FUSE mount that does not answer.
std::atomic<bool> g_probe_stuck{false};

// A FUSE mount whose daemon is stopped answers no stat: give up after this.
constexpr auto kStatWait = std::chrono::seconds(5);

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size() &&
            std::isdigit(static_cast<unsigned char>(s[i + 1])) != 0) {
            out += static_cast<char>(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

// The newest mount at `path` in mountinfo: its fstype and source.
bool top_mount(const std::string& path, std::string& fstype, std::string& source) {
    FILE* mi = std::fopen("/proc/self/mountinfo", "re");
    if (mi == nullptr)
        return false;
    bool found = false;
    char* line = nullptr;
    std::size_t cap = 0;
    while (::getline(&line, &cap, mi) > 0) {
        std::vector<std::string> f;
        for (char* tok = std::strtok(line, " \n"); tok != nullptr;
             tok = std::strtok(nullptr, " \n"))
            f.emplace_back(tok);
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        if (f.size() < 10 || unescape(f[4]) != path)
            continue;
        for (std::size_t i = 6; i + 2 < f.size(); ++i) {
            if (f[i] == "-") {
                fstype = f[i + 1];
                source = unescape(f[i + 2]);
                found = true;
                break;
            }
        }
    }
    std::free(line);
    std::fclose(mi);
    return found;
}

// Asks a FUSE mount's daemon (statfs always goes to it; a stat may be
// answered from the kernel's attribute cache) and gives up when it does not
// answer: the errno, ENOTCONN for a dead one, or ETIMEDOUT. The thread left
// behind waits killably; the process refuses the mount and exits, which
// ends it.
int ask_fuse_daemon(const std::string& path, struct stat& st) {
    auto task = std::make_shared<std::packaged_task<std::pair<int, struct stat>()>>([path] {
        struct stat s {};
        struct statfs sf {};
        int err = ::statfs(path.c_str(), &sf) == 0 ? 0 : errno;
        if (err == 0 && ::lstat(path.c_str(), &s) != 0)
            err = errno;
        return std::make_pair(err, s);
    });
    auto result = task->get_future();
    std::thread t([task] { (*task)(); });
    if (result.wait_for(kStatWait) != std::future_status::ready) {
        t.detach();
        g_probe_stuck.store(true);
        return ETIMEDOUT;
    }
    t.join();
    const auto [err, s] = result.get();
    st = s;
    return err;
}

std::string canonical(const std::string& path, int& err) {
    char buf[PATH_MAX];
    if (::realpath(path.c_str(), buf) != nullptr) {
        err = 0;
        return buf;
    }
    err = errno;
    // A dead mount (ENOTCONN) or nothing at all (ENOENT) as the last part:
    // resolve the parent and keep the name.
    std::string p = path;
    while (p.size() > 1 && p.back() == '/')
        p.pop_back();
    const auto slash = p.rfind('/');
    const std::string parent =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
    const std::string name = slash == std::string::npos ? p : p.substr(slash + 1);
    if (name.empty() || name == "." || name == ".." || ::realpath(parent.c_str(), buf) == nullptr)
        return path;
    std::string out = buf;
    if (out != "/")
        out += '/';
    return out + name;
}

} // namespace

MountpointInfo inspect_mountpoint(const std::string& path) {
    MountpointInfo info;
    int err = 0;
    info.path = canonical(path, err);
    const bool mounted = top_mount(info.path, info.fstype, info.source);
    const bool fuse = mounted && (info.fstype == "fuse" || info.fstype.rfind("fuse.", 0) == 0);
    struct stat st {};
    const int serr =
        fuse ? ask_fuse_daemon(info.path, st) : (::lstat(info.path.c_str(), &st) == 0 ? 0 : errno);
    if (serr == ENOTCONN && fuse) {
        info.kind = MountpointInfo::Kind::dead_fuse;
    } else if (serr == ETIMEDOUT && fuse) {
        info.error = "is a FUSE mount (" + info.fstype +
                     ") that does not answer: its daemon is stopped or stuck";
    } else if (serr == ENOENT) {
        info.kind = MountpointInfo::Kind::missing;
    } else if (serr != 0) {
        info.error = std::strerror(serr);
    } else if (!S_ISDIR(st.st_mode)) {
        info.error = "is not a directory";
    } else {
        info.kind = mounted && info.fstype == "fuse.overcache" ? MountpointInfo::Kind::overcache
                                                               : MountpointInfo::Kind::directory;
    }
    return info;
}

bool probe_left_waiting() noexcept {
    return g_probe_stuck.load();
}

bool remove_dead_mount(const std::string& path, std::string& error) {
    if (::geteuid() == 0) {
        if (::umount2(path.c_str(), MNT_DETACH) == 0)
            return true;
        error = std::string("umount: ") + std::strerror(errno);
        return false;
    }
    // A user's FUSE mount is the setuid helper's to remove.
    const char* argv[] = {"fusermount3", "-u", "-z", "--", path.c_str(), nullptr};
    pid_t pid = 0;
    if (const int e = ::posix_spawnp(&pid, "fusermount3", nullptr, nullptr,
                                     const_cast<char* const*>(argv), environ);
        e != 0) {
        error = std::string("cannot run fusermount3: ") + std::strerror(e);
        return false;
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    error = "fusermount3 -u -z failed (see its message above)";
    return false;
}

} // namespace overcache
