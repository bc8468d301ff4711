// DOC: the cache device's data I/O, with the page cache bypassed. The mount
// keeps hot file data in its own page cache (keep_cache), so a second copy in
// the data file's page cache is RAM spent twice. Two ways to avoid it:
//  - O_DIRECT (preferred): nothing of the data file enters the page cache.
//    Transfers must be aligned (offset, length, memory), so reads go through
//    a per-thread aligned bounce buffer unless the caller's range and buffer
//    are aligned already; writes own whole blocks (the allocator places each
//    extent in blocks of its own) and zero the tail of the last one. Costs:
//    no readahead (the extents and the mount's cache provide locality), a
//    memcpy for unaligned reads, and writes that wait for the device.
//  - buffered + POSIX_FADV_DONTNEED, where O_DIRECT is refused (F_SETFL
//    EINVAL, or a probe read fails). Reads: pread, then DONTNEED over the
//    page-rounded range; FADV_RANDOM on the file stops readahead from pulling
//    in neighbours that DONTNEED would not cover. Writes: DONTNEED cannot drop
//    dirty pages or pages under writeback (it only starts writeback), so each
//    write first waits for its own range with sync_file_range(WAIT_BEFORE|
//    WRITE|WAIT_AFTER) — as synchronous as O_DIRECT, but no fdatasync: no
//    metadata commit, no device cache flush. The data still passes through
//    the page cache briefly, and pages another thread faults in meanwhile
//    are dropped by the next DONTNEED (they are clean: a re-read, not a loss).
// Either way durability needs sync() (fdatasync). tmpfs (kernel >= 6.6)
// accepts O_DIRECT, but there the file is the page cache; nothing helps.
#include "overcache/store/data_file.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/fs.h>
#include <mutex>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace overcache::store {
namespace {

constexpr std::size_t kMinBlock = 4096;
constexpr std::size_t kMaxBlock = 64 * 1024;    // the probe gives up past this
constexpr std::size_t kMaxBounce = 1024 * 1024; // per-thread buffer cap; longer I/O is chunked

constexpr std::uint64_t round_down(std::uint64_t v, std::uint64_t a) {
    return v - v % a;
}
constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t a) {
    return round_down(v + a - 1, a);
}

bool ptr_aligned(const void* p, std::size_t a) {
    return reinterpret_cast<std::uintptr_t>(p) % a == 0;
}

// One aligned buffer per thread, grown on demand and kept: no allocation in
// the I/O path once a thread has done its largest transfer.
class Bounce {
public:
    Bounce() = default;
    Bounce(const Bounce&) = delete;
    Bounce& operator=(const Bounce&) = delete;
    ~Bounce() { std::free(p_); }

    char* get(std::size_t len, std::size_t align) {
        if (len <= cap_ && align <= align_)
            return p_;
        const std::size_t a = std::max(align, align_);
        const std::size_t cap = round_up(std::max(len, cap_), a);
        void* p = std::aligned_alloc(a, cap);
        if (!p)
            return nullptr;
        std::free(p_);
        p_ = static_cast<char*>(p);
        cap_ = cap;
        align_ = a;
        return p_;
    }

private:
    char* p_ = nullptr;
    std::size_t cap_ = 0;
    std::size_t align_ = 0;
};

thread_local Bounce t_bounce;

// Reads [off, off+want) into buf, retrying EINTR and short reads. Succeeds
// once at least `need` bytes are in; end of device before that is EIO. With
// O_DIRECT a count that is not a whole number of blocks only happens at the
// end of the file, so it ends the loop rather than retrying misaligned.
int read_cover(int fd, char* buf, std::size_t want, std::size_t need, std::uint64_t off,
               bool direct, std::size_t block) {
    std::size_t done = 0;
    while (done < need) {
        const ssize_t n = ::pread(fd, buf + done, want - done, static_cast<off_t>(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO; // the device ends inside the range
        done += static_cast<std::size_t>(n);
        if (direct && done < need && done % block != 0)
            return EIO;
    }
    return 0;
}

int write_all(int fd, const char* buf, std::size_t len, std::uint64_t off) {
    std::size_t done = 0;
    while (done < len) {
        const ssize_t n = ::pwrite(fd, buf + done, len - done, static_cast<off_t>(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO;
        done += static_cast<std::size_t>(n);
    }
    return 0;
}

Result<std::uint64_t> device_bytes(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        return fail_errno("cannot stat the cache data device");
    if (S_ISBLK(st.st_mode)) {
        std::uint64_t sz = 0;
        if (::ioctl(fd, BLKGETSIZE64, &sz) != 0)
            return fail_errno("cannot get the size of the cache data device");
        return sz;
    }
    return static_cast<std::uint64_t>(st.st_size);
}

int set_direct(int fd, bool on) {
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0)
        return errno;
    const int want = on ? (fl | O_DIRECT) : (fl & ~O_DIRECT);
    if (want != fl && ::fcntl(fd, F_SETFL, want) != 0)
        return errno;
    return 0;
}

// Reads one block-sized, block-aligned range with O_DIRECT. 0, EINVAL (the
// alignment is refused) or another errno. A file shorter than one block
// cannot be probed: O_DIRECT reads at end of file return 0 before any
// alignment check, so acceptance by F_SETFL is all there is to go on.
int probe(int fd, std::size_t block, std::uint64_t file_bytes) {
    std::uint64_t off = 0;
    if (file_bytes >= 2 * block)
        off = block; // a misaligned-offset failure shows only away from 0
    else if (file_bytes < block)
        return 0;
    char* buf = t_bounce.get(block, block);
    if (!buf)
        return ENOMEM;
    for (;;) {
        const ssize_t n = ::pread(fd, buf, block, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 ? errno : 0;
    }
}

} // namespace

struct DataFile::State {
    UniqueFd fd;
    bool direct = false;
    std::size_t block = kMinBlock;
    std::size_t mem_align = kMinBlock; // O_DIRECT buffer alignment
    std::size_t page = kMinBlock;

    std::atomic<std::uint64_t> reads{0}, writes{0}, bytes_read{0}, bytes_written{0};
    std::atomic<std::uint64_t> read_errors{0}, write_errors{0};

    std::atomic<bool> fault_armed{false};
    std::mutex fault_mutex; // guards fault_hook
    FaultHook fault_hook;

    // Drops [off, off+len), rounded out to whole pages (DONTNEED keeps a
    // partial page), from the page cache. Advisory: errors are ignored.
    void drop_cached(std::uint64_t off, std::uint64_t len) const {
        const std::uint64_t s = round_down(off, page);
        const std::uint64_t e = round_up(off + len, page);
        (void)::posix_fadvise(fd.get(), static_cast<off_t>(s), static_cast<off_t>(e - s),
                              POSIX_FADV_DONTNEED);
    }
};

DataFile::DataFile() = default;
DataFile::DataFile(std::unique_ptr<State> s) : s_(std::move(s)) {}
DataFile::DataFile(DataFile&&) noexcept = default;
DataFile& DataFile::operator=(DataFile&&) noexcept = default;
DataFile::~DataFile() = default;

Result<DataFile> DataFile::open(const std::string& path, const DataFileOptions& opt) {
    int flags = O_RDWR | O_CLOEXEC;
    if (opt.create)
        flags |= O_CREAT;
    UniqueFd fd(::open(path.c_str(), flags, 0600));
    if (!fd)
        return fail_errno("cannot open the cache data device " + path);
    auto df = adopt(std::move(fd), opt.mode);
    if (!df) {
        Error e = std::move(df).error();
        e.message += " (" + path + ")";
        return fail(std::move(e));
    }
    return df;
}

Result<DataFile> DataFile::adopt(UniqueFd fd, IoMode mode) {
    if (!fd)
        return fail_sys(EBADF, "no cache data device fd");
    auto s = std::make_unique<State>();
    s->fd = std::move(fd);
    const int f = s->fd.get();
    const int fl = ::fcntl(f, F_GETFL);
    if (fl < 0)
        return fail_errno("cannot read the flags of the cache data device");
    if ((fl & O_ACCMODE) != O_RDWR)
        return fail(Errc::BadValue, "the cache data device is not open read-write");
    struct stat st {};
    if (::fstat(f, &st) != 0)
        return fail_errno("cannot stat the cache data device");
    if (S_ISBLK(st.st_mode)) {
        int lbs = 0;
        if (::ioctl(f, BLKSSZGET, &lbs) != 0)
            return fail_errno("cannot get the logical block size of the cache data device");
        s->block = std::max<std::size_t>(kMinBlock, static_cast<std::size_t>(lbs));
        s->mem_align = s->block;
    } else if (S_ISREG(st.st_mode)) {
        // statx knows the filesystem's O_DIRECT alignment (Linux >= 6.1);
        // without it 4096 is assumed and the probe checks it.
        struct statx sx {};
        if (::statx(f, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
            (sx.stx_mask & STATX_DIOALIGN) != 0 && sx.stx_dio_offset_align != 0) {
            s->block = std::max<std::size_t>(kMinBlock, sx.stx_dio_offset_align);
            s->mem_align = std::max<std::size_t>(sx.stx_dio_mem_align, 1);
        }
    } else {
        return fail(Errc::BadValue, "the cache data device is neither a file nor a block device");
    }
    if (const long pg = ::sysconf(_SC_PAGESIZE); pg > 0)
        s->page = static_cast<std::size_t>(pg);

    if (mode != IoMode::buffered) {
        const std::size_t assumed_block = s->block;
        int err = set_direct(f, true);
        if (err == 0) {
            auto bytes = device_bytes(f);
            if (!bytes)
                return fail(bytes.error());
            // Larger alignments are tried when the filesystem refuses the
            // assumed one (a device with big logical blocks, no statx).
            while ((err = probe(f, s->block, *bytes)) == EINVAL && s->block < kMaxBlock)
                s->block *= 2;
            if (err != 0 && err != EINVAL)
                return fail_sys(err, "cannot read the cache data device");
        }
        if (err == 0) {
            s->direct = true;
            s->mem_align = std::max(s->mem_align, std::size_t{512});
        } else if (mode == IoMode::direct) {
            return fail_sys(err, "the cache data device does not take O_DIRECT");
        } else {
            s->block = assumed_block; // the probe's escalation meant nothing
        }
    }
    if (!s->direct) {
        if (int err = set_direct(f, false); err != 0)
            return fail_sys(err, "cannot clear O_DIRECT on the cache data device");
        // No readahead: DONTNEED drops only the pages a read asked for.
        (void)::posix_fadvise(f, 0, 0, POSIX_FADV_RANDOM);
    }
    // What buffered I/O before adoption left in the page cache (the header
    // that formatting wrote and synced, validation's read) goes now; pages
    // still dirty would stay, and are the caller's to sync first.
    (void)::posix_fadvise(f, 0, 0, POSIX_FADV_DONTNEED);
    return DataFile(std::move(s));
}

bool DataFile::valid() const noexcept {
    return s_ && s_->fd.valid();
}
bool DataFile::direct() const noexcept {
    return s_ && s_->direct;
}
std::size_t DataFile::block_size() const noexcept {
    return s_ ? s_->block : kMinBlock;
}

Result<std::uint64_t> DataFile::size() const {
    if (!valid())
        return fail_sys(EBADF, "the cache data device is not open");
    return device_bytes(s_->fd.get());
}

int DataFile::fault(DataOp op, std::uint64_t off, std::size_t len) const {
    if (!s_->fault_armed.load(std::memory_order_relaxed))
        return 0;
    FaultHook hook;
    {
        std::lock_guard lock(s_->fault_mutex);
        hook = s_->fault_hook;
    }
    return hook ? hook(op, off, len) : 0;
}

void DataFile::set_fault(FaultHook hook) {
    if (!s_)
        return;
    std::lock_guard lock(s_->fault_mutex);
    s_->fault_armed.store(static_cast<bool>(hook), std::memory_order_relaxed);
    s_->fault_hook = std::move(hook);
}

Result<void> DataFile::read(std::uint64_t off, std::size_t len, char* out) const {
    if (!valid())
        return fail_sys(EBADF, "the cache data device is not open");
    State& s = *s_;
    auto failed = [&s](int err, const char* what) -> Result<void> {
        s.read_errors.fetch_add(1, std::memory_order_relaxed);
        return fail_sys(err, what);
    };
    if (len == 0)
        return {};
    if (off + len < off)
        return failed(EINVAL, "cache device read past the end of the address space");
    if (int err = fault(DataOp::read, off, len); err != 0)
        return failed(err, "cache device read failed (injected)");

    const int fd = s.fd.get();
    if (!s.direct) {
        const int err = read_cover(fd, out, len, len, off, false, s.block);
        s.drop_cached(off, len);
        if (err != 0)
            return failed(err, "cannot read the cache data device");
    } else if (off % s.block == 0 && len % s.block == 0 && ptr_aligned(out, s.mem_align)) {
        if (int err = read_cover(fd, out, len, len, off, true, s.block); err != 0)
            return failed(err, "cannot read the cache data device");
    } else {
        // The covering blocks, a bounce buffer at a time.
        const std::size_t chunk = std::max(s.block, round_down(kMaxBounce, s.block));
        std::uint64_t pos = off;
        const std::uint64_t end = off + len;
        while (pos < end) {
            const std::uint64_t bs = round_down(pos, s.block);
            const std::uint64_t be = std::min(round_up(end, s.block), bs + chunk);
            const std::uint64_t ue = std::min(end, be); // useful end
            char* buf = t_bounce.get(be - bs, s.block);
            if (!buf)
                return failed(ENOMEM, "no memory for the cache device read buffer");
            if (int err = read_cover(fd, buf, be - bs, ue - bs, bs, true, s.block); err != 0)
                return failed(err, "cannot read the cache data device");
            std::memcpy(out + (pos - off), buf + (pos - bs), ue - pos);
            pos = ue;
        }
    }
    s.reads.fetch_add(1, std::memory_order_relaxed);
    s.bytes_read.fetch_add(len, std::memory_order_relaxed);
    return {};
}

Result<void> DataFile::write(std::uint64_t off, const char* data, std::size_t len) {
    if (!valid())
        return fail_sys(EBADF, "the cache data device is not open");
    State& s = *s_;
    auto failed = [&s](int err, const char* what) -> Result<void> {
        s.write_errors.fetch_add(1, std::memory_order_relaxed);
        return fail_sys(err, what);
    };
    if (len == 0)
        return {};
    if (off % s.block != 0 || off + len < off)
        return failed(EINVAL, "cache device write not aligned to its block size");
    if (int err = fault(DataOp::write, off, len); err != 0)
        return failed(err, "cache device write failed (injected)");

    const int fd = s.fd.get();
    const std::uint64_t cover = round_up(len, s.block);
    std::size_t pos = 0; // bytes of `data` written
    if (ptr_aligned(data, s.mem_align)) {
        // Whole blocks straight from the caller's buffer; only the last,
        // partial one goes through the bounce buffer.
        pos = round_down(len, s.block);
        if (pos > 0)
            if (int err = write_all(fd, data, pos, off); err != 0)
                return failed(err, "cannot write the cache data device");
    }
    const std::size_t chunk = std::max(s.block, round_down(kMaxBounce, s.block));
    while (pos < len) {
        const std::size_t n = std::min(chunk, len - pos);
        const std::size_t padded = round_up(n, s.block);
        char* buf = t_bounce.get(padded, s.block);
        if (!buf)
            return failed(ENOMEM, "no memory for the cache device write buffer");
        std::memcpy(buf, data + pos, n);
        std::memset(buf + n, 0, padded - n);
        if (int err = write_all(fd, buf, padded, off + pos); err != 0)
            return failed(err, "cannot write the cache data device");
        pos += n;
    }
    if (!s.direct) {
        // Clean the range so that DONTNEED can drop it (see DOC).
        if (::sync_file_range(fd, static_cast<off_t>(off), static_cast<off_t>(cover),
                              SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                  SYNC_FILE_RANGE_WAIT_AFTER) != 0)
            return failed(errno, "cannot write back the cache data device");
        s.drop_cached(off, cover);
    }
    s.writes.fetch_add(1, std::memory_order_relaxed);
    s.bytes_written.fetch_add(len, std::memory_order_relaxed);
    return {};
}

Result<void> DataFile::sync() {
    if (!valid())
        return fail_sys(EBADF, "the cache data device is not open");
    State& s = *s_;
    int err = fault(DataOp::sync, 0, 0);
    if (err == 0 && ::fdatasync(s.fd.get()) != 0)
        err = errno;
    if (err != 0) {
        s.write_errors.fetch_add(1, std::memory_order_relaxed);
        return fail_sys(err, "cannot sync the cache data device");
    }
    return {};
}

DataFileStats DataFile::stats() const noexcept {
    DataFileStats st;
    if (!s_)
        return st;
    const auto ld = [](const std::atomic<std::uint64_t>& a) {
        return a.load(std::memory_order_relaxed);
    };
    st.reads = ld(s_->reads);
    st.writes = ld(s_->writes);
    st.bytes_read = ld(s_->bytes_read);
    st.bytes_written = ld(s_->bytes_written);
    st.read_errors = ld(s_->read_errors);
    st.write_errors = ld(s_->write_errors);
    return st;
}

} // namespace overcache::store
