// DOC: the request handlers' backing calls through the gate (see
// backing_calls.hpp), the gate's options and its probe.
#include "fuse/backing_calls.hpp"

#include "backing/backing_fs.hpp"
#include "fuse/reply.hpp"
#include "util/file_io.hpp"
#include "util/log.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <sys/xattr.h>
#include <vector>
#include <fcntl.h>
#include <memory>
#include <string>
#include <sys/statfs.h>
#include <unistd.h>

namespace overcache::fuse {
namespace {

// A duplicate the gate thread owns: the caller's descriptor may be closed
// (its request answered) before an abandoned call runs.
std::shared_ptr<UniqueFd> own_dup(int fd) {
    return std::make_shared<UniqueFd>(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

// Drops the caller's reference to a duplicate made for a call. A file of a
// FUSE backing is asked to flush at every close(2), and a stopped one never
// answers: if the call never took it (the gate refused it) or has let go
// already, the last close happens on a gate thread, not the caller's.
void drop_dup(Adapter& a, std::shared_ptr<UniqueFd> d) {
    if (d && *d && d.use_count() == 1)
        a.gate.post([d] {});
}

// `err` from a call through the gate, or kNoAnswer when it says the backing
// is offline (Gate::judge): the request is then answered as offline.
int judged(Adapter& a, int err) {
    return a.gate.judge(err) ? kNoAnswer : err;
}

struct StatOut {
    int err = 0;
    struct stat st {};
};

struct OpenOut {
    int err = 0;
    UniqueFd fd;
    struct stat st {};
};

} // namespace

namespace {

// Filesystems on a local disk: a call into them costs a microsecond or two
// when the disk is healthy, less than handing it to a gate thread and back
// (10-20 us on a virtual machine), and they do not stall as a server that
// stopped answering does. Any type not here (NFS, SMB, Ceph, 9p, FUSE,
// cluster filesystems, whatever is new) is gated.
const char* local_disk_fs(long type) noexcept {
    switch (static_cast<unsigned long>(type) & 0xffffffffu) {
    case 0xEF53: return "ext2/3/4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0xF2F52010: return "f2fs";
    case 0xCA451A4E: return "bcachefs";
    case 0x2FC12FC1: return "zfs";
    case 0x3153464A: return "jfs";
    case 0x52654973: return "reiserfs";
    case 0x01021994: return "tmpfs";
    case 0x858458F6: return "ramfs";
    case 0x4D44: return "vfat";
    case 0x2011BAB0: return "exfat";
    case 0x7366746E: return "ntfs3";
    case 0x3434: return "nilfs2";
    case 0x482B: return "hfsplus";
    case 0x73717368: return "squashfs";
    case 0xE0F5E1E2: return "erofs";
    default: return nullptr;
    }
}

} // namespace

backing::Gate& gate_of_request(fuse_req_t req) noexcept {
    return adapter_of(req).gate;
}

backing::Gate::Options gate_options(const config::Config& c, int root_fd) {
    backing::Gate::Options o;
    o.timeout = std::chrono::milliseconds(static_cast<long long>(c.backing_timeout_s * 1000.0));
    bool gated = c.backing_calls == config::BackingCalls::gated;
    if (c.backing_calls == config::BackingCalls::automatic) {
        struct statfs sfs {};
        const char* local = ::fstatfs(root_fd, &sfs) == 0 ? local_disk_fs(sfs.f_type) : nullptr;
        gated = local == nullptr;
        if (local && c.offline_ok)
            log::info("backing: on ", local, ", a local disk: its calls run inline, without "
                      "backing_timeout (backing_calls=gated to have it)");
    }
    // Inline calls wait as long as the backing takes: nothing is offline.
    o.offline_ok = c.offline_ok && gated;
    // More than the kernel keeps in flight of the calls that go through it
    // when the backing is healthy; when it is not, those stuck hold only
    // these.
    o.threads = 8;
    o.probe_interval = std::min(o.timeout, std::chrono::milliseconds(1000));
    return o;
}

const char* local_fs_name(int root_fd) noexcept {
    struct statfs sfs {};
    return ::fstatfs(root_fd, &sfs) == 0 ? local_disk_fs(sfs.f_type) : nullptr;
}

std::function<int()> backing_probe(int root_fd) {
    return [fd = own_dup(root_fd)] {
        struct statfs sfs {};
        return ::fstatfs(fd->get(), &sfs) == 0 ? 0 : errno;
    };
}

int gated_stat(Adapter& a, int fd, struct stat& st) {
    auto d = own_dup(fd);
    if (!*d)
        return errno;
    auto r = a.gate.call([d] {
        StatOut out;
        out.err = backing::stat_fd(d->get(), out.st);
        return out;
    });
    if (!r)
        return kNoAnswer;
    st = r->st;
    return judged(a, r->err);
}

int gated_open_path(Adapter& a, int dir_fd, const char* name, const CallerId& who, UniqueFd& out,
                    struct stat& st) {
    auto d = own_dup(dir_fd);
    if (!*d)
        return errno;
    auto r = a.gate.call([d, n = std::string(name), who] {
        CallerScope as(who);
        OpenOut o;
        auto fd = backing::open_path(d->get(), n.c_str());
        if (!fd) {
            o.err = errno_of(fd.error());
            return o;
        }
        if ((o.err = backing::stat_fd(fd->get(), o.st)) == 0)
            o.fd = std::move(*fd);
        return o;
    });
    if (!r)
        return kNoAnswer;
    if (r->err == 0) {
        out = std::move(r->fd);
        st = r->st;
    }
    return judged(a, r->err);
}

int gated_reopen(Adapter& a, int path_fd, int flags, const CallerId& who, UniqueFd& out,
                 struct stat* st) {
    auto d = own_dup(path_fd);
    if (!*d)
        return errno;
    auto r = a.gate.call([d, flags, who, want_stat = st != nullptr] {
        CallerScope as(who);
        OpenOut o;
        auto fd = backing::reopen(d->get(), flags);
        if (!fd) {
            o.err = errno_of(fd.error());
            return o;
        }
        // The open's attributes in the same hop, as the open saw them.
        if (want_stat && (o.err = backing::stat_fd(fd->get(), o.st)) != 0)
            return o; // fd closes here, on the gate thread
        o.fd = std::move(*fd);
        return o;
    });
    if (!r)
        return kNoAnswer;
    if (r->err == 0) {
        out = std::move(r->fd);
        if (st)
            *st = r->st;
    }
    return judged(a, r->err);
}

int gated_statfs(Adapter& a, int fd, struct statvfs& out) {
    auto d = own_dup(fd);
    if (!*d)
        return errno;
    struct Out {
        int err = 0;
        struct statvfs sv {};
    };
    auto r = a.gate.call([d] {
        Out o;
        if (::fstatvfs(d->get(), &o.sv) != 0)
            o.err = errno;
        return o;
    });
    if (!r)
        return kNoAnswer;
    out = r->sv;
    return judged(a, r->err);
}

int gated_getxattr(Adapter& a, int fd, const char* name, std::size_t size, const CallerId& who,
                   std::vector<char>& value, std::size_t& len) {
    auto d = own_dup(fd);
    if (!*d)
        return errno;
    struct Out {
        int err = 0;
        std::size_t len = 0;
        std::vector<char> value;
    };
    auto r = a.gate.call([d, n = std::string(name), size, who] {
        CallerScope as(who);
        Out o;
        o.value.resize(size);
        const backing::ProcPath p(d->get());
        const ssize_t got =
            ::getxattr(p.c_str(), n.c_str(), size == 0 ? nullptr : o.value.data(), size);
        o.err = got < 0 ? errno : 0;
        o.len = got < 0 ? 0 : static_cast<std::size_t>(got);
        o.value.resize(size == 0 ? 0 : o.len);
        return o;
    });
    if (!r)
        return kNoAnswer;
    value = std::move(r->value);
    len = r->len;
    return judged(a, r->err);
}

int gated_listxattr(Adapter& a, int fd, const CallerId& who, std::vector<char>& list) {
    auto d = own_dup(fd);
    if (!*d)
        return errno;
    struct Out {
        int err = 0;
        std::vector<char> list;
    };
    auto r = a.gate.call([d, who] {
        CallerScope as(who);
        Out o;
        const backing::ProcPath p(d->get());
        for (int attempt = 0;; ++attempt) {
            const ssize_t want = ::listxattr(p.c_str(), nullptr, 0);
            if (want < 0) {
                o.err = errno;
                return o;
            }
            o.list.resize(static_cast<std::size_t>(want));
            const ssize_t got = want == 0 ? 0 : ::listxattr(p.c_str(), o.list.data(), o.list.size());
            if (got >= 0) {
                o.list.resize(static_cast<std::size_t>(got));
                return o;
            }
            if (errno != ERANGE || attempt > 8) { // grew between the calls more than a few times
                o.err = errno;
                return o;
            }
        }
    });
    if (!r)
        return kNoAnswer;
    list = std::move(r->list);
    return judged(a, r->err);
}

ssize_t gated_pread(Adapter& a, int fd, char* out, std::size_t len, std::uint64_t off) {
    if (a.gate.offline_ok() && !a.gate.online())
        return -EIO; // nothing to duplicate, or to close
    auto d = own_dup(fd);
    if (!*d)
        return -errno;
    struct Out {
        ssize_t n = 0;
        std::vector<char> bytes;
    };
    auto r = a.gate.call([d, len, off] {
        Out o;
        o.bytes.resize(len);
        o.n = pread_upto(d->get(), o.bytes.data(), len, off);
        return o;
    });
    drop_dup(a, std::move(d));
    if (!r)
        return -EIO; // offline now
    if (r->n < 0)
        return a.gate.judge(static_cast<int>(-r->n)) ? -EIO : r->n;
    std::memcpy(out, r->bytes.data(), static_cast<std::size_t>(r->n));
    return r->n;
}

cache::DataPath::BackingRead backing_reader(Adapter& a) {
    if (!a.gate.offline_ok())
        return [](int fd, char* out, std::size_t len, std::uint64_t off) {
            return pread_upto(fd, out, len, off);
        };
    return [&a](int fd, char* out, std::size_t len, std::uint64_t off) {
        return gated_pread(a, fd, out, len, off);
    };
}

int gated_flush(Adapter& a, int fd) {
    if (a.gate.offline_ok() && !a.gate.online())
        return kNoAnswer; // nothing to duplicate, or to close
    auto d = own_dup(fd);
    if (!*d)
        return errno;
    // A close makes an NFS client write back what it holds of the file:
    // as long as that takes, while the backing answers.
    auto r = a.gate.call([d] { return ::close(d->release()) == 0 ? 0 : errno; },
                         backing::Gate::Patience::while_alive);
    drop_dup(a, std::move(d));
    return r ? judged(a, *r) : kNoAnswer;
}

void close_later(Adapter& a, UniqueFd fd) {
    if (!fd)
        return;
    auto owned = std::make_shared<UniqueFd>(std::move(fd));
    a.gate.post([owned] { owned->reset(); });
}

} // namespace overcache::fuse
