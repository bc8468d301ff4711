// DOC: comparison helpers for the mount tests. Every test runs a call on the
// mount and on a plain twin directory and wants a short, precise message when
// they disagree, so these return strings ("" = equal) rather than asserting.
#include "twin.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <map>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace overcache::test {

std::ostream& operator<<(std::ostream& os, const Res& r) {
    os << r.ret;
    if (r.ret < 0)
        os << " (" << (r.err ? ::strerrorname_np(r.err) : "errno 0") << ")";
    return os;
}

std::string stat_diff(const struct stat& a, const struct stat& b, unsigned fields) {
    std::ostringstream os;
    auto field = [&](const char* name, auto x, auto y) {
        if (x != y)
            os << name << ": " << x << " vs " << y << "; ";
    };
    auto ts = [&](const char* name, const timespec& x, const timespec& y) {
        if (x.tv_sec != y.tv_sec || x.tv_nsec != y.tv_nsec)
            os << name << ": " << x.tv_sec << "." << x.tv_nsec << " vs " << y.tv_sec << "."
               << y.tv_nsec << "; ";
    };
    if (fields & kMode)
        if (a.st_mode != b.st_mode)
            os << "mode: " << std::oct << a.st_mode << " vs " << b.st_mode << std::dec << "; ";
    if (fields & kNlink)
        field("nlink", a.st_nlink, b.st_nlink);
    if (fields & kOwner) {
        field("uid", a.st_uid, b.st_uid);
        field("gid", a.st_gid, b.st_gid);
    }
    if (fields & kSize)
        field("size", a.st_size, b.st_size);
    if (fields & kBlocks) {
        // Allocation may differ a little (extent alignment); 64 KiB = 128 blocks.
        long long d = static_cast<long long>(a.st_blocks) - static_cast<long long>(b.st_blocks);
        if (d > 128 || d < -128)
            os << "blocks: " << a.st_blocks << " vs " << b.st_blocks << "; ";
    }
    if (fields & kRdev)
        field("rdev", a.st_rdev, b.st_rdev);
    if (fields & kAtime)
        ts("atime", a.st_atim, b.st_atim);
    if (fields & kMtime)
        ts("mtime", a.st_mtim, b.st_mtim);
    if (fields & kCtime)
        ts("ctime", a.st_ctim, b.st_ctim);
    return os.str();
}

namespace {

struct Entry {
    struct stat st {};
    unsigned char d_type = DT_UNKNOWN;
    std::string target; // symlink target
};

void list_tree(const std::string& root, const std::string& rel, std::map<std::string, Entry>& out,
               std::string& err) {
    std::string dir = rel.empty() ? root : root + "/" + rel;
    DIR* d = ::opendir(dir.c_str());
    if (!d) {
        err += "opendir " + dir + ": " + std::strerror(errno) + "; ";
        return;
    }
    std::vector<std::pair<std::string, unsigned char>> names;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n == "." || n == "..")
            continue;
        names.emplace_back(n, e->d_type);
    }
    ::closedir(d);
    for (auto& [n, type] : names) {
        std::string r = rel.empty() ? n : rel + "/" + n;
        Entry e;
        e.d_type = type;
        if (::lstat((root + "/" + r).c_str(), &e.st) != 0) {
            err += "lstat " + r + ": " + std::strerror(errno) + "; ";
            continue;
        }
        if (S_ISLNK(e.st.st_mode)) {
            char buf[4096];
            ssize_t len = ::readlink((root + "/" + r).c_str(), buf, sizeof buf);
            if (len >= 0)
                e.target.assign(buf, static_cast<size_t>(len));
        }
        bool is_dir = S_ISDIR(e.st.st_mode);
        out.emplace(r, e);
        if (is_dir)
            list_tree(root, r, out, err);
    }
}

} // namespace

std::string tree_diff(const std::string& a, const std::string& b, bool contents) {
    std::map<std::string, Entry> ta, tb;
    std::string err;
    list_tree(a, "", ta, err);
    list_tree(b, "", tb, err);
    std::ostringstream os;
    os << err;
    int shown = 0;
    auto note = [&](const std::string& s) {
        if (shown++ < 10)
            os << s << "; ";
    };
    for (auto& [name, ea] : ta) {
        auto it = tb.find(name);
        if (it == tb.end()) {
            note("only in " + a + ": " + name);
            continue;
        }
        const Entry& eb = it->second;
        unsigned fields = kMode | kNlink | kOwner | kRdev;
        if (S_ISREG(ea.st.st_mode))
            fields |= kSize;
        std::string sd = stat_diff(ea.st, eb.st, fields);
        if (!sd.empty())
            note(name + ": " + sd);
        if (ea.d_type != eb.d_type)
            note(name + ": d_type " + std::to_string(ea.d_type) + " vs " +
                 std::to_string(eb.d_type));
        if (ea.target != eb.target)
            note(name + ": symlink " + ea.target + " vs " + eb.target);
        if (contents && S_ISREG(ea.st.st_mode) && S_ISREG(eb.st.st_mode) &&
            ea.st.st_size == eb.st.st_size) {
            try {
                if (read_all(a + "/" + name) != read_all(b + "/" + name))
                    note(name + ": contents differ");
            } catch (const std::exception& e) {
                note(name + ": " + e.what());
            }
        }
    }
    for (auto& [name, eb] : tb) {
        if (!ta.count(name))
            note("only in " + b + ": " + name);
    }
    if (shown > 10)
        os << "(" << shown - 10 << " more)";
    return os.str();
}

std::string read_all(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw std::runtime_error("open " + path + ": " + std::strerror(errno));
    std::string out;
    char buf[1 << 16];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            int e = errno;
            ::close(fd);
            throw std::runtime_error("read " + path + ": " + std::strerror(e));
        }
        if (n == 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
}

void write_all(const std::string& path, const std::string& data, int flags, mode_t mode) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (flags ? flags : O_TRUNC), mode);
    if (fd < 0)
        throw std::runtime_error("open " + path + ": " + std::strerror(errno));
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n <= 0) {
            int e = errno;
            ::close(fd);
            throw std::runtime_error("write " + path + ": " + std::strerror(e));
        }
        done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0)
        throw std::runtime_error("close " + path + ": " + std::strerror(errno));
}

std::string pattern(size_t len, unsigned seed, size_t off) {
    std::string s(len, '\0');
    for (size_t i = 0; i < len; ++i) {
        // A cheap mix of (seed, position): different files and offsets differ.
        uint64_t x = (off + i) * 0x9E3779B97F4A7C15ull ^ (uint64_t{seed} << 32 | seed);
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 32;
        s[i] = static_cast<char>(x);
    }
    return s;
}

int run_as(uid_t uid, gid_t gid, const std::function<int()>& fn) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 ||
            ::setresuid(uid, uid, uid) != 0)
            std::_Exit(254);
        std::_Exit(fn() & 0xff);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return -1000 - (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

} // namespace overcache::test
