// DOC: file data handlers: open, create, read, write_buf, flush, release,
// fsync, fallocate, lseek, copy_file_range (the control file's are in
// ops_control.cpp).
// Each open holds a real backing fd and the DataPath's OpenFile (FileHandle,
// owned through fi->fh until release); a read-only open answered from kept
// attributes (coherency=timeout|none) gets its fd only when a request needs
// the backing, and one made offline never does. Everything that touches the file's
// bytes is the DataPath's: these handlers translate the request, hand it
// over, and turn the result into a reply (some DataPath calls reply through
// a completion, possibly later and from another thread). Reads are replied
// straight from the fd the DataPath names (splice) or from its buffer.
// O_APPEND is not passed to the backing fd: without the writeback cache the
// kernel gives every write its offset (end of file, under the inode lock, for
// O_APPEND opens), and mmap writeback may go through any writable handle, so
// a backing O_APPEND fd would put page writes at the end of the file.
// With the kernel's writeback cache a write-only open is read-write on the
// backing: the kernel fills the rest of a partly written page through it.
// O_DIRECT is not passed either: the kernel applies it to its own page
// cache, and the backing need not accept the caller's alignment.
// A write may be answered after its handler returned (a write parked until
// the cache has room): such a late answer goes through the adapter's gate,
// which the session closes before it is destroyed, so none is sent to a
// session that is gone (the DataPath still writes the bytes, around the
// cache, when it stops).
#include "backing/backing_fs.hpp"
#include "backing/file_ops.hpp"
#include "fuse/adapter.hpp"
#include "fuse/backing_calls.hpp"
#include "fuse/coherency.hpp"
#include "fuse/listings.hpp"
#include "fuse/path_policy.hpp"
#include "fuse/reply.hpp"
#include "util/wall_clock.hpp"

#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace overcache::fuse {
namespace {

constexpr int kStrippedOpenFlags = O_CREAT | O_EXCL | O_NOCTTY | O_APPEND | O_DIRECT | O_NOFOLLOW;
// Per FUSE thread: room for one request's data (up to max_write/max_read).
std::vector<char>& thread_buffer(std::size_t size) {
    thread_local std::vector<char> buf;
    if (buf.size() < size)
        buf.resize(size);
    return buf;
}

// A write request's bytes, for DataPath::write: copied to memory or moved
// (spliced) to a backing fd, straight from the request's buffer vector.
class BufvecSource final : public cache::WriteSource {
public:
    BufvecSource(fuse_bufvec* in, bool writepage)
        : in_(in), size_(fuse_buf_size(in)), writepage_(writepage) {}
    std::size_t size() const override { return size_; }
    ssize_t copy_to(char* out) override {
        fuse_bufvec mem = FUSE_BUFVEC_INIT(size_);
        mem.buf[0].mem = out;
        return fuse_buf_copy(&mem, in_, FUSE_BUF_NO_SPLICE);
    }
    ssize_t write_to(int fd, off_t off) override {
        if (backing::scoped()) {
            // Through the gate: the call gets a copy of the bytes (the
            // request's pipe is gone once it is answered).
            auto& buf = thread_buffer(size_);
            const ssize_t got = copy_to(buf.data());
            if (got < 0)
                return got;
            auto n = backing::write_all(fd, buf.data(), static_cast<std::size_t>(got),
                                        static_cast<std::uint64_t>(off));
            return n ? static_cast<ssize_t>(*n) : -errno_of(n.error());
        }
        fuse_bufvec dst = FUSE_BUFVEC_INIT(size_);
        dst.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
        dst.buf[0].fd = fd;
        dst.buf[0].pos = off;
        return fuse_buf_copy(&dst, in_, static_cast<fuse_buf_copy_flags>(0));
    }

    bool from_kernel_cache() const override { return writepage_; }

private:
    fuse_bufvec* in_;
    std::size_t size_;
    bool writepage_;
};

// The write request whose handler is running on this thread: its answer,
// when it comes before the handler returns, needs no gate.
thread_local fuse_req_t t_answering_inline = nullptr;

void reply_write_result(fuse_req_t req, const Result<std::size_t>& r) {
    if (r)
        fuse_reply_write(req, *r);
    else
        fuse_reply_err(req, errno_of(r.error()));
}

// Hands a FileHandle to the kernel through fi->fh; the adapter owns it
// until RELEASE.
void give_handle(Adapter& a, fuse_file_info* fi, std::unique_ptr<FileHandle> fh) {
    fi->fh = reinterpret_cast<std::uint64_t>(a.files.adopt(std::move(fh))); // NOLINT: returned at release
}

// The reply that would have handed out fi->fh failed: the handle goes.
void take_back(Adapter& a, const fuse_file_info* fi) {
    std::unique_ptr<FileHandle> gone = a.files.take(&file_of(fi));
    if (gone && gone->writer != 0)
        a.inodes.add_writer(gone->writer, -1);
}

// An open that may write: its inode's attributes are not used without the
// backing (coherency=timeout|none) until it is released.
void count_writer(Adapter& a, FileHandle& fh, Ino ino) {
    if ((fh.flags & O_ACCMODE) == O_RDONLY)
        return;
    a.inodes.add_writer(ino, 1);
    fh.writer = ino;
}

// Hands a freshly opened backing fd to the data path (the close-to-open
// check) and wraps both in a file handle. `st` holds the fd's attributes;
// `keep_cache` receives whether the kernel may keep its pages. The open
// runs under the file's per-path policy, inherited through `parent`.
Result<std::unique_ptr<FileHandle>> make_handle(Adapter& a, UniqueFd fd, int flags,
                                                const struct stat& st, bool& keep_cache,
                                                Ino parent) {
    const cache::FilePolicy policy = resolve_policy(a, cache::FileRef{fd.get(), st}, parent);
    auto out = a.data.open(fd.get(), st, flags, policy);
    if (!out) {
        // Closed on the gate: the backing may be what failed the open, and
        // a FUSE or NFS backing is asked at every close.
        close_later(a, std::move(fd));
        return fail(std::move(out).error());
    }
    auto fh = std::make_unique<FileHandle>();
    fh->fd = std::move(fd);
    fh->flags = flags;
    fh->open = std::move(out->file);
    keep_cache = out->keep_page_cache && (flags & O_TRUNC) == 0;
    return fh;
}

// Hands `fh` to the kernel in the reply to an open; 0.
int reply_open(fuse_req_t req, Adapter& a, fuse_file_info* fi, std::unique_ptr<FileHandle> fh) {
    // Counted before the reply: RELEASE may follow it at once.
    ++a.open_files;
    give_handle(a, fi, std::move(fh));
    if (fuse_reply_open(req, fi) != 0) {
        --a.open_files;
        take_back(a, fi);
    }
    return 0;
}

// A read-only handle without a backing fd, for `ino` as `st` describes it:
// opened offline, or from kept attributes (`kept`, DataPath::open_kept).
// Sets fi->keep_cache.
Result<std::unique_ptr<FileHandle>> handle_without_backing(Adapter& a, fuse_ino_t ino,
                                                           const struct stat& st,
                                                           fuse_file_info* fi, bool kept) {
    const auto link = a.inodes.link_of(ino);
    const cache::FilePolicy policy =
        resolve_policy(a, cache::FileRef{-1, st}, link ? link->parent : 0);
    const int flags = fi->flags & ~kStrippedOpenFlags;
    auto out = kept ? a.data.open_kept(st, flags, policy) : a.data.open_offline(st, flags, policy);
    if (!out)
        return fail(std::move(out).error());
    auto fh = std::make_unique<FileHandle>();
    fh->flags = fi->flags;
    fh->open = std::move(out->file);
    if (kept)
        fh->kept_of = ino;
    fi->keep_cache = out->keep_page_cache ? 1 : 0;
    return fh;
}

// An open while the backing is offline: a read-only handle with no backing
// descriptor, whose reads the cache answers (what it does not hold fails
// with EIO). Changes are refused (EROFS).
int open_offline(fuse_req_t req, Adapter& a, fuse_ino_t ino, fuse_file_info* fi) {
    if (!a.gate.offline_ok())
        return EIO;
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0)
        return EROFS;
    auto st = a.inodes.attr_of(ino);
    if (!st)
        return EIO;
    if (S_ISDIR(st->st_mode))
        return EISDIR;
    if (const int denied = offline_access(req, a, *st, R_OK))
        return denied;
    auto fh = handle_without_backing(a, ino, *st, fi, false);
    if (!fh)
        return errno_of(fh.error());
    return reply_open(req, a, fi, std::move(*fh));
}

// coherency=timeout|none: a read-only open of a file whose kept attributes
// are fresh is answered without the backing, from what the cache holds of
// that version; the backing file is opened only if a request needs it
// (need_backing). kNoAnswer: open it as usual.
int open_kept(fuse_req_t req, Adapter& a, fuse_ino_t ino, fuse_file_info* fi) {
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0)
        return kNoAnswer;
    auto st = trusted_file(a, ino);
    if (!st || !S_ISREG(st->st_mode))
        return kNoAnswer;
    // The kernel checked nothing (default_permissions off): mode bits that
    // refuse the caller send the open to the backing, which has the last
    // word (an ACL may allow it).
    if (offline_access(req, a, *st, R_OK) != 0)
        return kNoAnswer;
    auto fh = handle_without_backing(a, ino, *st, fi, true);
    if (!fh)
        return kNoAnswer; // not cached: the backing opens it
    (*fh)->who = caller_id(req, check_as_caller(a));
    a.data.listings()->note_kept_answer();
    return reply_open(req, a, fi, std::move(*fh));
}

// HANDLE_KILLPRIV_V2 (kernel_channel.hpp): the caller has no CAP_FSETID and
// truncated the file behind `fd` (an open with O_TRUNC) or wrote to it, so
// its setuid bit, and setgid with group execute, go, as a local filesystem
// drops them. The daemon's own call did not drop them when it ran as root.
// `st` holds the file's attributes and is brought up to date. 0 or an errno.
int kill_setid_bits(Adapter& a, int fd, struct stat& st) {
    const mode_t kept = mode_without_setid(st.st_mode);
    if (kept == st.st_mode)
        return 0;
    std::unique_ptr<cache::AttrChange> change;
    if (const int err = begin_attr_change(a, fd, st, change))
        return err;
    if (const int err = backing::set_mode_fd(fd, kept & 07777))
        return err;
    if (change)
        change->finish();
    return backing::stat_fd(fd, st);
}

// A handle made for an open that then failed: as at RELEASE, the data
// path's open goes first and the fd is closed on the gate.
void drop_handle(Adapter& a, std::unique_ptr<FileHandle> fh) {
    fh->open.reset();
    close_later(a, std::move(fh->fd));
}

// The backing file of `fh`, opened now if `fh` was opened from kept
// attributes without it: 0, or what the request replies (EIO for an open
// made offline, or while the backing does not answer).
int need_backing(Adapter& a, FileHandle& fh) {
    if (fh.kept_of == 0)
        return fh.fd ? 0 : EIO;
    std::lock_guard lk(fh.attach_mu);
    if (fh.fd)
        return 0;
    InodeRef inode = a.inodes.get(fh.kept_of);
    if (!inode)
        return or_eio(a.gate.online() ? ESTALE : kNoAnswer);
    UniqueFd fd;
    struct stat st {};
    const std::int64_t asked = wall_ns();
    if (const int err = gated_reopen(a, inode->fd(), fh.flags & ~kStrippedOpenFlags, fh.who, fd,
                                     &st))
        return or_eio(err);
    inode->note_attr(st, asked);
    remember_attr(a, inode, st, asked);
    if (auto r = a.data.attach_backing(*fh.open, fd.get(), st); !r) {
        close_later(a, std::move(fd)); // as a failed open's (make_handle)
        return errno_of(r.error());
    }
    fh.fd = std::move(fd);
    return 0;
}

} // namespace

int backing_fd_of(FileHandle& fh) {
    if (fh.kept_of == 0)
        return fh.fd.get();
    std::lock_guard lk(fh.attach_mu);
    return fh.fd.get();
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
    guarded(req, "open", [&] {
        if (ino == kControlIno)
            return open_control(req, fi);
        Adapter& a = adapter_of(req);
        if (!a.gate.online())
            return open_offline(req, a, ino, fi);
        if (trusting(a))
            if (const int kept = open_kept(req, a, ino, fi); kept != kNoAnswer)
                return kept;
        InodeRef inode = a.inodes.get(ino);
        if (!inode)
            return ESTALE;
        if (inode->is_dir())
            return EISDIR;
        const int flags = fi->flags & ~kStrippedOpenFlags;
        const CallerId who = caller_id(req, check_as_caller(a));
        UniqueFd fd;
        struct stat st {};
        const std::int64_t asked = wall_ns();
        if (const int err = gated_reopen(a, inode->fd(), flags, who, fd, &st))
            return err == kNoAnswer ? open_offline(req, a, ino, fi) : err;
        if (a.kernel_caches_writes.load() && (flags & O_ACCMODE) == O_WRONLY) {
            // The kernel reads the rest of a page a write covers in part,
            // through the handle it writes with: that handle must read.
            // The caller's right to write was checked by the open above;
            // reading for the kernel's page cache needs none of theirs. A
            // daemon that may not read it either (not root) keeps the
            // write-only fd, and such a partial-page write fails (EBADF).
            UniqueFd rw;
            if (gated_reopen(a, inode->fd(), (flags & ~(O_ACCMODE | O_TRUNC)) | O_RDWR, {}, rw) ==
                0) {
                close_later(a, std::move(fd));
                fd = std::move(rw);
            }
        }
        inode->note_attr(st, asked);
        remember_attr(a, inode, st, asked);
        bool keep = false;
        auto made = make_handle(a, std::move(fd), fi->flags, st, keep, inode->parent());
        // The backing stopped answering before the data path could compare
        // the file with it (writeback of the file is stuck in it): as any
        // open while offline.
        if (!made && !a.gate.online())
            return open_offline(req, a, ino, fi);
        if (!made)
            return errno_of(made.error());
        std::unique_ptr<FileHandle> fh = std::move(*made);
        // After the data path took in the truncate: to it, the mode change
        // is ours, not a change behind the mount.
        if ((flags & O_TRUNC) != 0 && request_flags().kill_suidgid) {
            const std::int64_t changed = wall_ns();
            if (const int err = kill_setid_bits(a, fh->fd.get(), st))
                return drop_handle(a, std::move(fh)), err;
            inode->note_attr(st, changed);
            remember_attr(a, inode, st, changed);
        }
        count_writer(a, *fh, ino);
        fi->keep_cache = keep ? 1 : 0;
        return reply_open(req, a, fi, std::move(fh));
    });
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) noexcept {
    guarded(req, "create", [&] {
        Adapter& a = adapter_of(req);
        if (const int refused = unless_online(a, EROFS))
            return refused;
        if (is_control_name(parent, name))
            return EEXIST;
        InodeRef dir = a.inodes.get(parent);
        if (!dir)
            return ESTALE;
        int flags = (fi->flags & ~(O_NOCTTY | O_APPEND | O_DIRECT)) | O_CREAT;
        // As in op_open; the open that creates a file checks no mode.
        if (a.kernel_caches_writes.load() && (flags & O_ACCMODE) == O_WRONLY)
            flags = (flags & ~O_ACCMODE) | O_RDWR;
        const DirBefore dir_was = dir_before(a, dir);
        UniqueFd fd;
        {
            CallerScope as(req, true);
            auto made = backing::open_at(dir->fd(), name, flags, mode);
            if (!made)
                return errno_of(made.error());
            fd = std::move(*made);
        }
        // The entry is made from the open fd, not the name, which another
        // process may have replaced already.
        auto path_fd = backing::path_of(fd.get());
        if (!path_fd)
            return errno_of(path_fd.error());
        struct stat st {};
        if (const int err = backing::stat_fd(fd.get(), st))
            return err;
        bool keep = false;
        auto made = make_handle(a, std::move(fd), fi->flags, st, keep, dir->ino());
        if (!made)
            return errno_of(made.error());
        std::unique_ptr<FileHandle> fh = std::move(*made);
        // An existing file opened with O_TRUNC, as in op_open. The open ran
        // as the caller, so the backing dropped the bits itself unless the
        // caller is root without CAP_FSETID.
        if ((flags & O_TRUNC) != 0 && request_flags().kill_suidgid)
            if (const int err = kill_setid_bits(a, fh->fd.get(), st))
                return drop_handle(a, std::move(fh)), err;
        fi->keep_cache = 0; // a new file: nothing in the page cache to keep

        InodeRef inode = a.inodes.lookup(std::move(*path_fd), st, dir->ino());
        count_writer(a, *fh, inode->ino());
        note_name_added(a, dir, dir_was, name, st);
        fuse_entry_param e{};
        e.ino = inode->ino();
        e.attr = st;
        e.attr_timeout = a.timeouts.attr;
        e.entry_timeout = a.timeouts.entry;
        ++a.open_files;
        give_handle(a, fi, std::move(fh));
        if (fuse_reply_create(req, &e, fi) != 0) {
            --a.open_files;
            take_back(a, fi);
            a.inodes.forget(e.ino, 1);
        }
        return 0;
    });
}

void op_read(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off,
             fuse_file_info* fi) noexcept {
    guarded(req, "read", [&] {
        FileHandle& fh = file_of(fi);
        if (fh.control)
            return read_control(req, fh, size, off);
        Adapter& a = adapter_of(req);
        std::vector<char>& buf = thread_buffer(size);
        const cache::DataPath::BackingRead backing = backing_reader(a);
        auto r = a.data.read(*fh.open, buf.data(), size, off, backing);
        if (r && r->needs_backing) {
            if (const int err = need_backing(a, fh))
                return err;
            r = a.data.read(*fh.open, buf.data(), size, off, backing);
        }
        if (!r)
            return errno_of(r.error());
        if (r->fd >= 0 && a.gate.offline_ok()) {
            // Bytes the backing has to give: through the gate, not spliced
            // on this thread.
            const ssize_t n = gated_pread(a, r->fd, buf.data(), r->len,
                                          static_cast<std::uint64_t>(r->fd_offset));
            if (n < 0)
                return static_cast<int>(-n);
            fuse_reply_buf(req, buf.data(), static_cast<std::size_t>(n));
        } else if (r->fd >= 0) {
            fuse_bufvec bv = FUSE_BUFVEC_INIT(r->len);
            bv.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
            bv.buf[0].fd = r->fd;
            bv.buf[0].pos = r->fd_offset;
            fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
        } else {
            fuse_reply_buf(req, buf.data(), r->len);
        }
        return 0;
    });
}

void op_write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in_buf, off_t off,
                  fuse_file_info* fi) noexcept {
    guarded(req, "write_buf", [&] {
        FileHandle& fh = file_of(fi);
        if (fh.control)
            return write_control(req, in_buf);
        BufvecSource src(in_buf, fi->writepage != 0);
        Adapter& a = adapter_of(req);
        if (const int refused = unless_online(a, EROFS))
            return refused;
        if (request_flags().kill_suidgid) {
            // The kernel clears the bits it knows of itself (a setattr
            // before the write). A backstop for bits we know of and it has
            // not seen yet; bits that neither saw (set behind the mount
            // since) stay, as they would have before HANDLE_KILLPRIV_V2:
            // finding them would cost a backing stat per write.
            const auto known = a.inodes.attr_of(ino);
            const int fd = backing_fd_of(fh);
            struct stat st {};
            if (known && fd >= 0 && mode_without_setid(known->st_mode) != known->st_mode &&
                backing::stat_fd(fd, st) == 0)
                if (const int err = kill_setid_bits(a, fd, st))
                    return err;
        }
        struct Inline {
            explicit Inline(fuse_req_t r) { t_answering_inline = r; }
            ~Inline() { t_answering_inline = nullptr; }
            Inline(const Inline&) = delete;
            Inline& operator=(const Inline&) = delete;
        } in_handler(req);
        a.data.write(*fh.open, src, off, [req, gate = a.control_gate](Result<std::size_t> r) {
            if (t_answering_inline == req)
                return reply_write_result(req, r);
            std::lock_guard lk(gate->mu);
            if (gate->open)
                reply_write_result(req, r);
        });
        return 0;
    });
}

void op_flush(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) noexcept {
    guarded(req, "flush", [&] {
        FileHandle& fh = file_of(fi);
        const int fd = fh.control ? -1 : backing_fd_of(fh);
        if (fd < 0) {
            // The control file, or a read-only open made without the
            // backing that never needed it: nothing of it is on the backing.
            fuse_reply_err(req, 0);
            return 0;
        }
        // close(2) of a duplicate makes the backing do what it does on close
        // (NFS writes back and reports errors there) without closing ours.
        // A backing that cannot answer has nothing to report for a
        // read-only open; a writer learns its close did not reach it.
        const int err = gated_flush(adapter_of(req), fd);
        const bool read_only = (fh.flags & O_ACCMODE) == O_RDONLY;
        fuse_reply_err(req, err == kNoAnswer ? (read_only ? 0 : EIO) : err);
        return 0;
    });
}

void op_release(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) noexcept {
    guarded(req, "release", [&] {
        Adapter& a = adapter_of(req);
        std::unique_ptr<FileHandle> gone = a.files.take(&file_of(fi)); // freed outside the lock
        if (gone && !gone->control)
            --a.open_files;
        if (gone && gone->writer != 0) // its writes changed what was seen
            a.inodes.add_writer(gone->writer, -1);
        if (gone) {
            // The DataPath's open goes first (it borrows the fd); the fd is
            // closed on the gate: a backing may answer a close late.
            gone->open.reset();
            close_later(a, std::move(gone->fd));
        }
        fuse_reply_err(req, 0);
        return 0;
    });
}

void op_fsync(fuse_req_t req, fuse_ino_t /*ino*/, int datasync, fuse_file_info* fi) noexcept {
    guarded(req, "fsync", [&] {
        FileHandle& fh = file_of(fi);
        if (fh.control) {
            fuse_reply_err(req, 0);
            return 0;
        }
        // Opened offline, the backing cannot be synced.
        if (const int err = need_backing(adapter_of(req), fh))
            return err;
        adapter_of(req).data.fsync(*fh.open, datasync != 0, [req](Result<void> r) {
            fuse_reply_err(req, r ? 0 : errno_of(r.error()));
        });
        return 0;
    });
}

void op_fallocate(fuse_req_t req, fuse_ino_t /*ino*/, int mode, off_t offset, off_t length,
                  fuse_file_info* fi) noexcept {
    guarded(req, "fallocate", [&] {
        FileHandle& fh = file_of(fi);
        if (fh.control)
            return EBADF;
        if (backing_fd_of(fh) < 0 || !adapter_of(req).gate.online())
            return EROFS;
        if (auto r = adapter_of(req).data.fallocate(*fh.open, mode, offset, length); !r)
            return errno_of(r.error());
        fuse_reply_err(req, 0);
        return 0;
    });
}

void op_lseek(fuse_req_t req, fuse_ino_t /*ino*/, off_t off, int whence,
              fuse_file_info* fi) noexcept {
    guarded(req, "lseek", [&] {
        FileHandle& fh = file_of(fi);
        if (fh.control)
            return ENXIO; // an empty file has no data and no hole past its end
        // Holes are the backing's to say.
        if (const int err = need_backing(adapter_of(req), fh))
            return err;
        auto r = adapter_of(req).data.lseek(*fh.open, off, whence);
        if (!r)
            return errno_of(r.error());
        fuse_reply_lseek(req, *r);
        return 0;
    });
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t /*ino_in*/, off_t off_in, fuse_file_info* fi_in,
                        fuse_ino_t /*ino_out*/, off_t off_out, fuse_file_info* fi_out, size_t len,
                        int flags) noexcept {
    guarded(req, "copy_file_range", [&] {
        FileHandle& in = file_of(fi_in);
        FileHandle& out = file_of(fi_out);
        if (in.control || out.control)
            return EBADF;
        if (!adapter_of(req).gate.online())
            return EROFS;
        // Only a read-only open is made from kept attributes: `in` may be.
        if (need_backing(adapter_of(req), in) != 0 || !out.fd)
            return EROFS;
        auto r = adapter_of(req).data.copy_file_range(*in.open, off_in, *out.open, off_out, len,
                                                      static_cast<unsigned>(flags));
        if (!r)
            return errno_of(r.error());
        fuse_reply_write(req, *r);
        return 0;
    });
}

} // namespace overcache::fuse
