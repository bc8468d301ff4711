// DOC: fd-based helpers over the backing tree. All of them take O_PATH (or
// open) descriptors and use *at() calls with AT_EMPTY_PATH, or the
// /proc/self/fd magic link where the kernel offers no fd form, so no path is
// ever resolved from the backing's root and a rename elsewhere in the tree
// cannot redirect an operation. Errors come back as errno values.
#include "backing/backing_fs.hpp"

#include "backing/request_scope.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <fcntl.h>
#include <string>
#include <sys/xattr.h>
#include <sys/resource.h>
#include <unistd.h>

namespace overcache::backing {

namespace {

// `raw(fds)`: on this thread, or through its request scope with `fds`
// lent; nullopt when the scope's call got no answer.
template <class F>
auto call(std::initializer_list<int> fds, F raw,
          Gate::Patience patience = Gate::Patience::deadline)
    -> std::optional<std::invoke_result_t<F&, const int*>> {
    if (RequestScope* s = RequestScope::active())
        return s->run(fds, std::move(raw), patience);
    int here[4] = {-1, -1, -1, -1};
    std::copy(fds.begin(), fds.end(), here);
    return raw(here);
}

// An errno-returning call: its errno, judged (see RequestScope::judged);
// EIO when unanswered.
template <class F>
int errno_call(std::initializer_list<int> fds, F raw,
               Gate::Patience patience = Gate::Patience::deadline) {
    auto r = call(fds, std::move(raw), patience);
    if (!r)
        return EIO;
    if (*r != 0)
        if (RequestScope* s = RequestScope::active())
            return s->judged(*r);
    return *r;
}

int err_of(int rc) noexcept {
    return rc == 0 ? 0 : errno;
}

struct FdOut {
    int err = 0;
    UniqueFd fd;
};

// An fd-returning call (`raw` gives the fd or -1 with errno).
template <class F> Result<UniqueFd> fd_call(std::initializer_list<int> fds, F raw) {
    auto r = call(fds, [raw = std::move(raw)](const int* f) {
        FdOut o;
        const int fd = raw(f);
        if (fd < 0)
            o.err = errno;
        else
            o.fd = UniqueFd(fd);
        return o;
    });
    if (!r)
        return fail_sys(EIO, "the backing did not answer");
    if (r->err != 0) {
        int err = r->err;
        if (RequestScope* s = RequestScope::active())
            err = s->judged(err);
        return fail_sys(err);
    }
    return std::move(r->fd);
}

} // namespace

Result<UniqueFd> open_path(int dirfd, const char* name) {
    return fd_call({dirfd}, [n = std::string(name)](const int* f) {
        return ::openat(f[0], n.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    });
}

Result<UniqueFd> path_of(int fd) {
    return fd_call({fd}, [](const int* f) {
        const ProcPath p(f[0]);
        return ::open(p.c_str(), O_PATH | O_CLOEXEC);
    });
}

Result<UniqueFd> reopen(int path_fd, int flags) {
    return fd_call({path_fd}, [flags](const int* f) {
        const ProcPath p(f[0]);
        return ::open(p.c_str(), (flags & ~O_NOFOLLOW) | O_CLOEXEC);
    });
}

Result<UniqueFd> open_at(int dirfd, const char* name, int flags, mode_t mode) {
    return fd_call({dirfd}, [n = std::string(name), flags, mode](const int* f) {
        return ::openat(f[0], n.c_str(), flags | O_CLOEXEC, mode);
    });
}

Result<UniqueFd> open_by_handle(int mount_fd, const std::vector<char>& handle, int flags) {
    return fd_call({mount_fd}, [h = handle, flags](const int* f) {
        auto* fh = reinterpret_cast<file_handle*>( // NOLINT: the kernel's layout
            const_cast<char*>(h.data()));
        return ::open_by_handle_at(f[0], fh, flags | O_CLOEXEC);
    });
}

namespace {

struct StatOut {
    int err = 0;
    struct stat st {};
};

int stat_call(std::initializer_list<int> fds, std::string name, int flags, struct stat& st) {
    auto r = call(fds, [n = std::move(name), flags](const int* f) {
        StatOut o;
        o.err = err_of(::fstatat(f[0], n.c_str(), &o.st, flags));
        return o;
    });
    if (!r)
        return EIO;
    if (r->err == 0)
        st = r->st;
    else if (RequestScope* s = RequestScope::active())
        return s->judged(r->err);
    return r->err;
}

} // namespace

int stat_fd(int fd, struct stat& st) {
    if (!scoped()) // the common case: no name to copy
        return err_of(::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
    return stat_call({fd}, std::string(), AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, st);
}

int stat_at(int dirfd, const char* name, struct stat& st) {
    if (!scoped())
        return err_of(::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW));
    return stat_call({dirfd}, std::string(name), AT_SYMLINK_NOFOLLOW, st);
}

int set_times(int path_fd, const struct timespec times[2]) {
    return errno_call({path_fd}, [t0 = times[0], t1 = times[1]](const int* f) {
        const struct timespec ts[2] = {t0, t1};
        if (::utimensat(f[0], "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0)
            return 0;
        if (errno != EINVAL)
            return errno;
        // Kernels before AT_EMPTY_PATH support in utimensat: go through
        // /proc, which is right for everything but symlinks.
        const ProcPath p(f[0]);
        return err_of(::utimensat(AT_FDCWD, p.c_str(), ts, 0));
    });
}

int set_times_fd(int fd, const struct timespec times[2]) {
    return errno_call({fd}, [t0 = times[0], t1 = times[1]](const int* f) {
        const struct timespec ts[2] = {t0, t1};
        return err_of(::futimens(f[0], ts));
    });
}

int set_mode(int path_fd, mode_t mode) {
    return errno_call({path_fd}, [mode](const int* f) {
        const ProcPath p(f[0]);
        return err_of(::chmod(p.c_str(), mode));
    });
}

int set_mode_fd(int fd, mode_t mode) {
    return errno_call({fd}, [mode](const int* f) { return err_of(::fchmod(f[0], mode)); });
}

int set_owner(int path_fd, uid_t uid, gid_t gid) {
    return errno_call({path_fd}, [uid, gid](const int* f) {
        return err_of(::fchownat(f[0], "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
    });
}

int set_owner_fd(int fd, uid_t uid, gid_t gid) {
    return errno_call({fd}, [uid, gid](const int* f) { return err_of(::fchown(f[0], uid, gid)); });
}

int truncate_path(int path_fd, off_t size) {
    // Freeing a large file's blocks may take a while: waited for while
    // the backing answers.
    return errno_call(
        {path_fd},
        [size](const int* f) {
            const ProcPath p(f[0]);
            return err_of(::truncate(p.c_str(), size));
        },
        Gate::Patience::while_alive);
}

int make_dir(int dirfd, const char* name, mode_t mode) {
    return errno_call({dirfd}, [n = std::string(name), mode](const int* f) {
        return err_of(::mkdirat(f[0], n.c_str(), mode));
    });
}

int make_symlink(const char* target, int dirfd, const char* name) {
    return errno_call({dirfd}, [t = std::string(target), n = std::string(name)](const int* f) {
        return err_of(::symlinkat(t.c_str(), f[0], n.c_str()));
    });
}

int make_node(int dirfd, const char* name, mode_t mode, dev_t rdev) {
    return errno_call({dirfd}, [n = std::string(name), mode, rdev](const int* f) {
        return err_of(::mknodat(f[0], n.c_str(), mode, rdev));
    });
}

int link_to(int path_fd, int dirfd, const char* name) {
    return errno_call({path_fd, dirfd}, [n = std::string(name)](const int* f) {
        // Through /proc rather than AT_EMPTY_PATH, which needs
        // CAP_DAC_READ_SEARCH that a caller's fsuid does not carry.
        const ProcPath p(f[0]);
        return err_of(::linkat(AT_FDCWD, p.c_str(), f[1], n.c_str(), AT_SYMLINK_FOLLOW));
    });
}

int unlink_at(int dirfd, const char* name, int flags) {
    return errno_call({dirfd}, [n = std::string(name), flags](const int* f) {
        return err_of(::unlinkat(f[0], n.c_str(), flags));
    });
}

int rename_at(int from_dir, const char* name, int to_dir, const char* new_name,
              unsigned flags) {
    return errno_call({from_dir, to_dir},
                      [n = std::string(name), nn = std::string(new_name), flags](const int* f) {
                          return err_of(::renameat2(f[0], n.c_str(), f[1], nn.c_str(), flags));
                      });
}

int set_xattr(int path_fd, const char* name, const void* value, std::size_t size, int flags) {
    const char* v = static_cast<const char*>(value);
    return errno_call({path_fd}, [n = std::string(name), val = std::string(v, v + size),
                                  flags](const int* f) {
        const ProcPath p(f[0]);
        return err_of(::setxattr(p.c_str(), n.c_str(), val.data(), val.size(), flags));
    });
}

int remove_xattr(int path_fd, const char* name) {
    return errno_call({path_fd}, [n = std::string(name)](const int* f) {
        const ProcPath p(f[0]);
        return err_of(::removexattr(p.c_str(), n.c_str()));
    });
}

int xattr_names_size(int path_fd, std::size_t& size) {
    auto r = call({path_fd}, [](const int* f) -> std::int64_t {
        const ProcPath p(f[0]);
        const ssize_t n = ::listxattr(p.c_str(), nullptr, 0);
        return n < 0 ? -errno : n;
    });
    if (!r)
        return EIO;
    if (*r < 0) {
        const int err = static_cast<int>(-*r);
        if (RequestScope* s = RequestScope::active())
            return s->judged(err);
        return err;
    }
    size = static_cast<std::size_t>(*r);
    return 0;
}

int read_link(int path_fd, std::string& target) {
    struct Out {
        int err = 0;
        std::string target;
    };
    auto r = call({path_fd}, [](const int* f) {
        Out o;
        o.target.resize(PATH_MAX + 1);
        const ssize_t n = ::readlinkat(f[0], "", o.target.data(), o.target.size() - 1);
        o.err = n < 0 ? errno : 0;
        o.target.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
        return o;
    });
    if (!r)
        return EIO;
    if (r->err != 0) {
        if (RequestScope* s = RequestScope::active())
            return s->judged(r->err);
        return r->err;
    }
    target = std::move(r->target);
    return 0;
}

unsigned long raise_fd_limit() noexcept {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    // Root may go past the hard limit, up to fs.nr_open.
    rlim_t want = rl.rlim_max;
    if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "re")) {
        unsigned long nr_open = 0;
        if (std::fscanf(f, "%lu", &nr_open) == 1 && nr_open > want)
            want = nr_open;
        std::fclose(f);
    }
    struct rlimit up {
        want, want
    };
    if (::setrlimit(RLIMIT_NOFILE, &up) != 0) {
        up = {rl.rlim_max, rl.rlim_max};
        if (::setrlimit(RLIMIT_NOFILE, &up) != 0)
            return rl.rlim_cur;
    }
    return up.rlim_cur;
}

} // namespace overcache::backing
