// DOC: the libfuse low-level session. make_operations() wires every op_*
// handler; op_init negotiates capabilities in one place: 1 MiB requests,
// splice in both directions, parallel directory operations, readdirplus.
// The kernel's writeback cache only where asked (kernel_writeback_cache=1
// in cache_mode=writeback): writes wait in the page cache and come in
// batches, at fsync, close, syncfs or when the kernel writes back, and the
// DataPath writes a batch to the cache device in parallel. Its price is why
// it is not the default: the kernel then trusts its own size and mtime of a
// file it has cached (a change behind the mount shows once it forgets the
// inode), st_blocks lags until the kernel hands the bytes over, and a
// write's error shows at fsync or close. Left off on purpose:
// HANDLE_KILLPRIV (the backing is written as root, which would keep
// setuid bits; the kernel clears them with a setattr instead: its second
// version, which costs no GETXATTR per write, is asked for by the
// KernelChannel, as libfuse 3.14 cannot), POSIX/flock locks, which stay
// local to this kernel (no getlk/setlk/flock handlers: locks are not seen
// by other NFS clients), and SPLICE_MOVE: a reply spliced from a backing fd would let the kernel
// steal those pages out of the backing file's page cache (the next backing
// read goes to the slow device), and replies from memory gain nothing.
#include "fuse/session.hpp"

#include "fuse/adapter.hpp"
#include "util/log.hpp"

#include <fcntl.h>
#include <fuse_lowlevel.h>

namespace overcache::fuse {
namespace {

constexpr unsigned kMaxRequestBytes = 1u << 20;

fuse_lowlevel_ops make_operations() {
    fuse_lowlevel_ops ops{};
    ops.init = op_init;
    ops.destroy = op_destroy;
    ops.lookup = op_lookup;
    ops.forget = op_forget;
    ops.forget_multi = op_forget_multi;
    ops.getattr = op_getattr;
    ops.setattr = op_setattr;
    ops.readlink = op_readlink;
    ops.mknod = op_mknod;
    ops.mkdir = op_mkdir;
    ops.unlink = op_unlink;
    ops.rmdir = op_rmdir;
    ops.symlink = op_symlink;
    ops.rename = op_rename;
    ops.link = op_link;
    ops.open = op_open;
    ops.create = op_create;
    ops.read = op_read;
    ops.write_buf = op_write_buf;
    ops.flush = op_flush;
    ops.release = op_release;
    ops.fsync = op_fsync;
    ops.opendir = op_opendir;
    ops.readdir = op_readdir;
    ops.readdirplus = op_readdirplus;
    ops.releasedir = op_releasedir;
    ops.fsyncdir = op_fsyncdir;
    ops.statfs = op_statfs;
    ops.setxattr = op_setxattr;
    ops.getxattr = op_getxattr;
    ops.listxattr = op_listxattr;
    ops.removexattr = op_removexattr;
    ops.access = op_access;
    ops.fallocate = op_fallocate;
    ops.lseek = op_lseek;
    ops.copy_file_range = op_copy_file_range;
    return ops;
}

// libfuse's custom I/O, through the adapter's KernelChannel. No
// splice_receive: the channel must see each request's bytes, and a write's
// data is copied out of the pipe anyway (ops_file.cpp); replies still
// splice.
ssize_t channel_read(int fd, void* buf, size_t len, void* userdata) {
    return static_cast<Adapter*>(userdata)->channel.read(fd, buf, len);
}
ssize_t channel_writev(int fd, struct iovec* iov, int count, void* userdata) {
    return static_cast<Adapter*>(userdata)->channel.writev(fd, iov, count);
}
ssize_t channel_splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                            unsigned int flags, void* /*userdata*/) {
    return ::splice(fdin, offin, fdout, offout, len, flags);
}

void want_if_capable(fuse_conn_info* conn, unsigned cap) {
    if ((conn->capable & cap) != 0)
        conn->want |= cap;
}

} // namespace

void op_init(void* userdata, fuse_conn_info* conn) {
    auto& a = *static_cast<Adapter*>(userdata);
    conn->want &=
        ~static_cast<unsigned>(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_HANDLE_KILLPRIV |
                               FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_SPLICE_MOVE);
    if (a.cfg.cache_mode == config::CacheMode::writeback && a.cfg.kernel_writeback_cache)
        want_if_capable(conn, FUSE_CAP_WRITEBACK_CACHE);
    a.kernel_caches_writes.store((conn->want & FUSE_CAP_WRITEBACK_CACHE) != 0);
    want_if_capable(conn, FUSE_CAP_SPLICE_READ);
    want_if_capable(conn, FUSE_CAP_SPLICE_WRITE);
    want_if_capable(conn, FUSE_CAP_PARALLEL_DIROPS);
    want_if_capable(conn, FUSE_CAP_READDIRPLUS);
    want_if_capable(conn, FUSE_CAP_READDIRPLUS_AUTO);
    want_if_capable(conn, FUSE_CAP_ATOMIC_O_TRUNC);
    want_if_capable(conn, FUSE_CAP_AUTO_INVAL_DATA);
    want_if_capable(conn, FUSE_CAP_ASYNC_READ);
    want_if_capable(conn, FUSE_CAP_ASYNC_DIO);
    conn->max_write = kMaxRequestBytes; // libfuse caps it at its buffer (1 MiB + header)
    conn->max_background = 64;          // read-ahead and async direct I/O in flight
    conn->congestion_threshold = 48;
    conn->time_gran = 1;
    log::debug("init: HANDLE_KILLPRIV_V2 ",
               a.channel.killpriv_v2_offered() ? "offered, taken" : "not offered", "; capable 0x",
               std::hex, conn->capable, " want 0x", conn->want, std::dec, " max_write ",
               conn->max_write, " max_readahead ", conn->max_readahead);
}

void op_destroy(void* /*userdata*/) {}

std::string escape_option_value(const std::string& v) {
    std::string out;
    for (const char c : v) {
        if (c == ',' || c == '\\')
            out += '\\';
        out += c;
    }
    return out;
}

Result<std::unique_ptr<Session>> Session::create(const config::Config& cfg, cache::DataPath& data,
                                                 UniqueFd root_fd,
                                                 const std::vector<std::string>& fuse_options,
                                                 bool debug) {
    struct stat root_st {};
    if (::fstatat(root_fd.get(), "", &root_st, AT_EMPTY_PATH) != 0)
        return fail_errno("cannot stat the backing root");
    std::unique_ptr<Session> s(new Session());
    s->adapter_ = std::make_unique<Adapter>(cfg, data, std::move(root_fd), root_st);

    std::vector<std::string> argv_store{"overcache"};
    if (debug)
        argv_store.emplace_back("-d");
    for (const auto& o : fuse_options) {
        argv_store.emplace_back("-o");
        argv_store.push_back(o);
    }
    std::vector<char*> argv;
    for (auto& a : argv_store)
        argv.push_back(a.data());
    fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
    const fuse_lowlevel_ops ops = make_operations();
    s->se_ = fuse_session_new(&args, &ops, sizeof ops, s->adapter_.get());
    fuse_opt_free_args(&args); // libfuse may have copied the argument vector
    if (s->se_ == nullptr)
        return fail(Errc::BadValue, "cannot create the FUSE session (see the message above)");
    s->adapter_->invalidator.start(s->se_);
    return s;
}

Session::~Session() {
    if (adapter_) {
        // A flush may still complete later, on a DataPath thread: it must
        // find no session to reply to.
        close_control(*adapter_);
        adapter_->invalidator.stop();
        adapter_->trimmer.stop();
    }
    unmount();
    if (se_ != nullptr)
        fuse_session_destroy(se_);
}

Result<void> Session::mount(const std::string& mountpoint) {
    if (fuse_session_mount(se_, mountpoint.c_str()) != 0)
        return fail(Errc::Sys, "cannot mount on " + mountpoint + " (see the message above)");
    mounted_ = true;
    // On the fd the mount made: libfuse only records the hooks (and the fd
    // it already holds).
    fuse_custom_io io{};
    io.writev = channel_writev;
    io.read = channel_read;
    io.splice_send = channel_splice_send;
    if (const int rc = fuse_session_custom_io(se_, &io, fuse_session_fd(se_)); rc != 0) {
        unmount();
        return fail_sys(-rc, "cannot install the FUSE channel hooks");
    }
    adapter_->trimmer.start(se_, mountpoint);
    // Installed right away, not when the loop starts: a SIGTERM that comes
    // as soon as the mount is reported must still unmount cleanly.
    if (fuse_set_signal_handlers(se_) != 0) {
        unmount();
        return fail(Errc::Sys, "cannot install signal handlers");
    }
    signals_ = true;
    return {};
}

Result<void> Session::run(const LoopOptions& opts) {
    int rc = 0;
    if (opts.single_thread) {
        rc = fuse_session_loop(se_);
    } else {
        fuse_loop_config* lc = fuse_loop_cfg_create();
        if (lc == nullptr) {
            return fail_sys(ENOMEM, "cannot create the loop configuration");
        }
        fuse_loop_cfg_set_clone_fd(lc, opts.clone_fd ? 1 : 0);
        fuse_loop_cfg_set_max_threads(lc, opts.max_threads);
        if (opts.max_idle_threads >= 0)
            fuse_loop_cfg_set_idle_threads(lc, static_cast<unsigned>(opts.max_idle_threads));
        rc = fuse_session_loop_mt(se_, lc);
        fuse_loop_cfg_destroy(lc);
    }
    unmount();
    // A signal ends the loop with its number; that is a clean stop.
    if (rc < 0)
        return fail_sys(-rc, "the FUSE request loop failed");
    return {};
}

void Session::unmount() noexcept {
    if (signals_) {
        fuse_remove_signal_handlers(se_);
        signals_ = false;
    }
    if (mounted_ && se_ != nullptr) {
        fuse_session_unmount(se_);
        mounted_ = false;
    }
}

void Session::set_readahead_path(std::string path) {
    adapter_->readahead_path = std::move(path);
}

std::size_t Session::inode_count() const {
    return adapter_ ? adapter_->inodes.size() : 0;
}

} // namespace overcache::fuse
