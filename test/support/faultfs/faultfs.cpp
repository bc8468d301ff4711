// DOC: faultfs, a test-only FUSE passthrough that misbehaves on demand.
//
//   faultfs CONTROL LOWER MOUNTPOINT [libfuse options]
//
// mounts LOWER at MOUNTPOINT and passes every call through, except that the
// settings in the file CONTROL (grammar in fault_config.hpp) may make calls
// fail with a chosen errno, sleep first, or move data no faster than a
// chosen rate. It is the backing overcache sees in fault tests: the
// failures reach overcache the way a failing disk or NFS server's would.
//
// Every call first compares CONTROL's identity (inode, size, mtime, ctime)
// with the one it last read; tests replace the file by rename, so a call
// that starts after the rename returned runs under the new settings, and a
// half-written file is never seen. A missing CONTROL means no faults.
//
// The kernel must not answer for us: attributes and names are not cached
// (timeouts 0) and data goes through direct I/O, so every read, write and
// stat reaches the fault check. Calls that carry an open file use its fd, so
// an unlinked open file keeps working (hard_remove: no .fuse_hidden files
// appear in LOWER).
#include "fault_config.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fuse3/fuse.h>
#include <memory>
#include <mutex>
#include <string>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace faultfs {
namespace {

using Clock = std::chrono::steady_clock;

// Spreads the bytes of all calls of one direction over time so that they
// average `rate` bytes/s: each call books the next free slot of the shared
// timeline and sleeps until its slot ends (outside the lock).
class Throttle {
public:
    void take(std::uint64_t rate, std::size_t bytes) {
        if (rate == 0 || bytes == 0)
            return;
        Clock::time_point until;
        {
            std::lock_guard lk(mu_);
            const auto now = Clock::now();
            // Idle time is not saved up for a later burst.
            if (next_ < now)
                next_ = now;
            next_ += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                static_cast<double>(bytes) / static_cast<double>(rate)));
            until = next_;
        }
        std::this_thread::sleep_until(until);
    }

private:
    std::mutex mu_;
    Clock::time_point next_{};
};

struct State {
    std::string control;
    std::string lower;
    std::mutex mu; // guards the three below
    struct stat seen {};
    bool have_seen = false;
    std::shared_ptr<const FaultConfig> cfg = std::make_shared<FaultConfig>();
    Throttle reads, writes;
};

State* g_state = nullptr;

bool same_file(const struct stat& a, const struct stat& b) {
    return a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_size == b.st_size &&
           a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
           a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

// The settings as the control file says now.
std::shared_ptr<const FaultConfig> settings() {
    State& s = *g_state;
    struct stat st {};
    const bool exists = ::stat(s.control.c_str(), &st) == 0;
    std::lock_guard lk(s.mu);
    if (!exists) {
        if (s.have_seen) {
            s.have_seen = false;
            s.cfg = std::make_shared<FaultConfig>();
        }
        return s.cfg;
    }
    if (s.have_seen && same_file(st, s.seen))
        return s.cfg;
    std::string text;
    if (FILE* f = std::fopen(s.control.c_str(), "re")) {
        char buf[4096];
        std::size_t n = 0;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
            text.append(buf, n);
        std::fclose(f);
    }
    auto next = std::make_shared<FaultConfig>();
    if (const std::string why = parse_fault_config(text, *next); !why.empty()) {
        std::fprintf(stderr, "faultfs: %s: %s; keeping the settings I had\n", s.control.c_str(),
                     why.c_str());
    } else {
        s.cfg = std::move(next);
    }
    s.seen = st;
    s.have_seen = true;
    return s.cfg;
}

// The gate every call passes first: its delay, then its fault. Returns 0 or
// the negative errno the call must fail with.
int gate(OpClass c) {
    const auto cfg = settings();
    if (const unsigned ms = cfg->delay(c); ms > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return -cfg->fails(c);
}

std::string full(const char* path) {
    return g_state->lower + path;
}

int neg_errno() {
    return -errno;
}

// Files made through the mount belong to the caller, as on any filesystem
// (faultfs runs as root and would otherwise own them all).
void give_to_caller(const std::string& p) {
    if (::geteuid() != 0)
        return;
    const fuse_context* ctx = fuse_get_context();
    (void)!::lchown(p.c_str(), ctx->uid, ctx->gid);
}

int fd_of(const fuse_file_info* fi) {
    return static_cast<int>(fi->fh);
}

void* op_init(fuse_conn_info* /*conn*/, fuse_config* cfg) {
    cfg->use_ino = 1;
    cfg->entry_timeout = 0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    cfg->direct_io = 1;
    cfg->hard_remove = 1;
    cfg->nullpath_ok = 1;
    return nullptr;
}

int op_getattr(const char* path, struct stat* st, fuse_file_info* fi) {
    if (int e = gate(OpClass::lookup))
        return e;
    const int r = fi ? ::fstat(fd_of(fi), st) : ::lstat(full(path).c_str(), st);
    return r == 0 ? 0 : neg_errno();
}

int op_access(const char* path, int mask) {
    if (int e = gate(OpClass::lookup))
        return e;
    return ::faccessat(AT_FDCWD, full(path).c_str(), mask, AT_SYMLINK_NOFOLLOW) == 0 ? 0
                                                                                     : neg_errno();
}

int op_readlink(const char* path, char* buf, size_t size) {
    if (int e = gate(OpClass::lookup))
        return e;
    const ssize_t n = ::readlink(full(path).c_str(), buf, size - 1);
    if (n < 0)
        return neg_errno();
    buf[n] = '\0';
    return 0;
}

int op_mknod(const char* path, mode_t mode, dev_t rdev) {
    if (int e = gate(OpClass::open))
        return e;
    const std::string p = full(path);
    const int r = S_ISFIFO(mode) ? ::mkfifo(p.c_str(), mode) : ::mknod(p.c_str(), mode, rdev);
    if (r != 0)
        return neg_errno();
    give_to_caller(p);
    return 0;
}

int op_mkdir(const char* path, mode_t mode) {
    if (int e = gate(OpClass::meta))
        return e;
    const std::string p = full(path);
    if (::mkdir(p.c_str(), mode) != 0)
        return neg_errno();
    give_to_caller(p);
    return 0;
}

int op_unlink(const char* path) {
    if (int e = gate(OpClass::meta))
        return e;
    return ::unlink(full(path).c_str()) == 0 ? 0 : neg_errno();
}

int op_rmdir(const char* path) {
    if (int e = gate(OpClass::meta))
        return e;
    return ::rmdir(full(path).c_str()) == 0 ? 0 : neg_errno();
}

int op_symlink(const char* target, const char* path) {
    if (int e = gate(OpClass::meta))
        return e;
    const std::string p = full(path);
    if (::symlink(target, p.c_str()) != 0)
        return neg_errno();
    give_to_caller(p);
    return 0;
}

int op_rename(const char* from, const char* to, unsigned int flags) {
    if (int e = gate(OpClass::meta))
        return e;
    return ::renameat2(AT_FDCWD, full(from).c_str(), AT_FDCWD, full(to).c_str(), flags) == 0
               ? 0
               : neg_errno();
}

int op_link(const char* from, const char* to) {
    if (int e = gate(OpClass::meta))
        return e;
    return ::link(full(from).c_str(), full(to).c_str()) == 0 ? 0 : neg_errno();
}

int op_chmod(const char* path, mode_t mode, fuse_file_info* fi) {
    if (int e = gate(OpClass::meta))
        return e;
    const int r = fi ? ::fchmod(fd_of(fi), mode) : ::chmod(full(path).c_str(), mode);
    return r == 0 ? 0 : neg_errno();
}

int op_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info* fi) {
    if (int e = gate(OpClass::meta))
        return e;
    const int r = fi ? ::fchown(fd_of(fi), uid, gid) : ::lchown(full(path).c_str(), uid, gid);
    return r == 0 ? 0 : neg_errno();
}

int op_truncate(const char* path, off_t size, fuse_file_info* fi) {
    if (int e = gate(OpClass::truncate))
        return e;
    const int r = fi ? ::ftruncate(fd_of(fi), size) : ::truncate(full(path).c_str(), size);
    return r == 0 ? 0 : neg_errno();
}

int op_utimens(const char* path, const struct timespec tv[2], fuse_file_info* fi) {
    if (int e = gate(OpClass::meta))
        return e;
    const int r = fi ? ::futimens(fd_of(fi), tv)
                     : ::utimensat(AT_FDCWD, full(path).c_str(), tv, AT_SYMLINK_NOFOLLOW);
    return r == 0 ? 0 : neg_errno();
}

bool opens_for_writing(int flags) {
    return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0;
}

int op_open(const char* path, fuse_file_info* fi) {
    if (int e = gate(opens_for_writing(fi->flags) ? OpClass::open : OpClass::lookup))
        return e;
    const int fd = ::open(full(path).c_str(), fi->flags & ~O_NOFOLLOW);
    if (fd < 0)
        return neg_errno();
    fi->fh = static_cast<std::uint64_t>(fd);
    return 0;
}

int op_create(const char* path, mode_t mode, fuse_file_info* fi) {
    if (int e = gate(OpClass::open))
        return e;
    const std::string p = full(path);
    const int fd = ::open(p.c_str(), fi->flags | O_CREAT, mode);
    if (fd < 0)
        return neg_errno();
    give_to_caller(p);
    fi->fh = static_cast<std::uint64_t>(fd);
    return 0;
}

int op_read(const char* /*path*/, char* buf, size_t size, off_t off, fuse_file_info* fi) {
    if (int e = gate(OpClass::read))
        return e;
    const ssize_t n = ::pread(fd_of(fi), buf, size, off);
    if (n < 0)
        return neg_errno();
    g_state->reads.take(settings()->read_bytes_per_s, static_cast<std::size_t>(n));
    return static_cast<int>(n);
}

int op_write(const char* /*path*/, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
    if (int e = gate(OpClass::write))
        return e;
    // The time is spent before the bytes land: a throttled backing has not
    // written what it has not acknowledged.
    g_state->writes.take(settings()->write_bytes_per_s, size);
    const ssize_t n = ::pwrite(fd_of(fi), buf, size, off);
    return n < 0 ? neg_errno() : static_cast<int>(n);
}

int op_statfs(const char* path, struct statvfs* st) {
    if (int e = gate(OpClass::lookup))
        return e;
    return ::statvfs(full(path).c_str(), st) == 0 ? 0 : neg_errno();
}

int op_flush(const char* /*path*/, fuse_file_info* fi) {
    // close(dup(fd)) reports a lower filesystem's deferred write errors the
    // way close() would, without closing the fd release still needs.
    const int fd = ::dup(fd_of(fi));
    if (fd < 0)
        return neg_errno();
    return ::close(fd) == 0 ? 0 : neg_errno();
}

int op_release(const char* /*path*/, fuse_file_info* fi) {
    ::close(fd_of(fi));
    return 0;
}

int op_fsync(const char* /*path*/, int datasync, fuse_file_info* fi) {
    if (int e = gate(OpClass::fsync))
        return e;
    const int r = datasync ? ::fdatasync(fd_of(fi)) : ::fsync(fd_of(fi));
    return r == 0 ? 0 : neg_errno();
}

int op_fallocate(const char* /*path*/, int mode, off_t off, off_t len, fuse_file_info* fi) {
    if (int e = gate(OpClass::write))
        return e;
    return ::fallocate(fd_of(fi), mode, off, len) == 0 ? 0 : neg_errno();
}

ssize_t op_copy_file_range(const char* /*in_path*/, fuse_file_info* fi_in, off_t off_in,
                           const char* /*out_path*/, fuse_file_info* fi_out, off_t off_out,
                           size_t len, int flags) {
    if (int e = gate(OpClass::write))
        return e;
    g_state->writes.take(settings()->write_bytes_per_s, len);
    loff_t in = off_in, out = off_out;
    const ssize_t n = ::copy_file_range(fd_of(fi_in), &in, fd_of(fi_out), &out, len,
                                        static_cast<unsigned>(flags));
    return n < 0 ? neg_errno() : n;
}

off_t op_lseek(const char* /*path*/, off_t off, int whence, fuse_file_info* fi) {
    if (int e = gate(OpClass::lookup))
        return e;
    const off_t r = ::lseek(fd_of(fi), off, whence);
    return r < 0 ? neg_errno() : r;
}

int op_setxattr(const char* path, const char* name, const char* value, size_t size, int flags) {
    if (int e = gate(OpClass::meta))
        return e;
    return ::lsetxattr(full(path).c_str(), name, value, size, flags) == 0 ? 0 : neg_errno();
}

int op_getxattr(const char* path, const char* name, char* value, size_t size) {
    if (int e = gate(OpClass::lookup))
        return e;
    const ssize_t n = ::lgetxattr(full(path).c_str(), name, value, size);
    return n < 0 ? neg_errno() : static_cast<int>(n);
}

int op_listxattr(const char* path, char* list, size_t size) {
    if (int e = gate(OpClass::lookup))
        return e;
    const ssize_t n = ::llistxattr(full(path).c_str(), list, size);
    return n < 0 ? neg_errno() : static_cast<int>(n);
}

int op_removexattr(const char* path, const char* name) {
    if (int e = gate(OpClass::meta))
        return e;
    return ::lremovexattr(full(path).c_str(), name) == 0 ? 0 : neg_errno();
}

int op_opendir(const char* path, fuse_file_info* fi) {
    if (int e = gate(OpClass::lookup))
        return e;
    DIR* d = ::opendir(full(path).c_str());
    if (!d)
        return neg_errno();
    fi->fh = reinterpret_cast<std::uint64_t>(d);
    return 0;
}

int op_readdir(const char* /*path*/, void* buf, fuse_fill_dir_t filler, off_t /*off*/,
               fuse_file_info* fi, fuse_readdir_flags /*flags*/) {
    if (int e = gate(OpClass::lookup))
        return e;
    // The whole directory in one go (offset 0 to the filler): the libfuse
    // high-level layer buffers it and serves later offsets itself.
    DIR* d = reinterpret_cast<DIR*>(fi->fh);
    ::rewinddir(d);
    errno = 0;
    while (const dirent* de = ::readdir(d)) {
        struct stat st {};
        st.st_ino = de->d_ino;
        st.st_mode = static_cast<mode_t>(DTTOIF(de->d_type));
        if (filler(buf, de->d_name, &st, 0, static_cast<fuse_fill_dir_flags>(0)) != 0)
            break;
    }
    return errno == 0 ? 0 : neg_errno();
}

int op_releasedir(const char* /*path*/, fuse_file_info* fi) {
    ::closedir(reinterpret_cast<DIR*>(fi->fh));
    return 0;
}

int op_fsyncdir(const char* /*path*/, int datasync, fuse_file_info* fi) {
    if (int e = gate(OpClass::fsync))
        return e;
    const int fd = ::dirfd(reinterpret_cast<DIR*>(fi->fh));
    const int r = datasync ? ::fdatasync(fd) : ::fsync(fd);
    return r == 0 ? 0 : neg_errno();
}

fuse_operations make_operations() {
    fuse_operations ops{};
    ops.init = op_init;
    ops.getattr = op_getattr;
    ops.access = op_access;
    ops.readlink = op_readlink;
    ops.mknod = op_mknod;
    ops.mkdir = op_mkdir;
    ops.unlink = op_unlink;
    ops.rmdir = op_rmdir;
    ops.symlink = op_symlink;
    ops.rename = op_rename;
    ops.link = op_link;
    ops.chmod = op_chmod;
    ops.chown = op_chown;
    ops.truncate = op_truncate;
    ops.utimens = op_utimens;
    ops.open = op_open;
    ops.create = op_create;
    ops.read = op_read;
    ops.write = op_write;
    ops.statfs = op_statfs;
    ops.flush = op_flush;
    ops.release = op_release;
    ops.fsync = op_fsync;
    ops.fallocate = op_fallocate;
    ops.copy_file_range = op_copy_file_range;
    ops.lseek = op_lseek;
    ops.setxattr = op_setxattr;
    ops.getxattr = op_getxattr;
    ops.listxattr = op_listxattr;
    ops.removexattr = op_removexattr;
    ops.opendir = op_opendir;
    ops.readdir = op_readdir;
    ops.releasedir = op_releasedir;
    ops.fsyncdir = op_fsyncdir;
    return ops;
}

} // namespace
} // namespace faultfs

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: faultfs CONTROL LOWER MOUNTPOINT [libfuse options]\n");
        return 2;
    }
    static faultfs::State state;
    state.control = argv[1];
    state.lower = argv[2];
    while (state.lower.size() > 1 && state.lower.back() == '/')
        state.lower.pop_back();
    faultfs::g_state = &state;
    // The files faultfs makes get exactly the caller's mode.
    ::umask(0);
    std::vector<char*> args{argv[0], argv[3]};
    // max_threads given: libfuse 3.14's fuse_main otherwise warns "Ignoring
    // invalid max threads value 4294967295" (its unset default).
    static char defaults[] =
        "-ofsname=faultfs,subtype=faultfs,allow_other,default_permissions,max_threads=16";
    args.push_back(defaults);
    for (int i = 4; i < argc; ++i)
        args.push_back(argv[i]);
    const fuse_operations ops = faultfs::make_operations();
    return fuse_main(static_cast<int>(args.size()), args.data(), &ops, nullptr);
}
