// DOC: DirStream (dir_stream.hpp): getdents64 batches through the gate.
#include "fuse/dir_stream.hpp"

#include "fuse/backing_calls.hpp"

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <sys/syscall.h>
#include <unistd.h>

namespace overcache::fuse {
namespace {

// The kernel's record (linux_dirent64), read field by field: the buffer
// gives no alignment guarantee to a struct view.
constexpr std::size_t kInoAt = 0, kOffAt = 8, kReclenAt = 16, kTypeAt = 18, kNameAt = 19;
// One batch: as much as glibc's DIR reads at once.
constexpr std::size_t kBatch = 32 * 1024;

template <class T> T field(const char* rec, std::size_t at) {
    T v;
    std::memcpy(&v, rec + at, sizeof v);
    return v;
}

} // namespace

DirHandle::DirHandle(std::unique_ptr<DirStream> s, bool root, std::optional<meta::FileKey> key)
    : stream(std::move(s)), is_root(root), listed(key) {}

DirHandle::~DirHandle() {
    recorder.reset(); // before the stream it reads
}

DirStream::DirStream(UniqueFd fd) : s_(std::make_shared<Shared>()) {
    s_->fd = std::move(fd);
    s_->buf.resize(kBatch);
}

int DirStream::fd() const noexcept {
    return s_->fd.get();
}

void DirStream::seek(off_t off) {
    if (lost_)
        return;
    // A directory's position is the filesystem's cookie, set without a
    // call to the server (NFS, FUSE): no gate needed.
    (void)::lseek(s_->fd.get(), off, SEEK_SET);
    pos_ = len_ = 0;
}

int DirStream::next(Adapter& a, Entry& out) {
    if (lost_)
        return EIO;
    if (pos_ >= len_) {
        auto got = a.gate.call([s = s_]() -> long {
            const long n = ::syscall(SYS_getdents64, s->fd.get(), s->buf.data(), s->buf.size());
            return n < 0 ? -errno : n;
        });
        if (!got) {
            lost_ = true;
            return kNoAnswer;
        }
        if (*got < 0) {
            const int err = static_cast<int>(-*got);
            return a.gate.judge(err) ? kNoAnswer : err;
        }
        if (*got == 0)
            return ENOENT;
        pos_ = 0;
        len_ = static_cast<std::size_t>(*got);
    }
    const char* rec = s_->buf.data() + pos_;
    const auto reclen = field<std::uint16_t>(rec, kReclenAt);
    if (reclen < kNameAt + 1 || pos_ + reclen > len_) {
        lost_ = true; // not what getdents64 writes
        return EIO;
    }
    out.ino = static_cast<ino_t>(field<std::uint64_t>(rec, kInoAt));
    out.next = static_cast<off_t>(field<std::int64_t>(rec, kOffAt));
    out.type = static_cast<unsigned char>(rec[kTypeAt]);
    out.name = std::string_view(rec + kNameAt, ::strnlen(rec + kNameAt, reclen - kNameAt));
    pos_ += reclen;
    return 0;
}

} // namespace overcache::fuse
