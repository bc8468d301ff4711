// The cache device's data I/O: the only code that reads or writes the data
// file (or block device). Its bytes are kept out of the page cache, because
// the mount's own page cache (keep_cache) already holds what is hot: with
// O_DIRECT where the filesystem takes it, else buffered I/O followed by
// POSIX_FADV_DONTNEED. See src/store/data_file.cpp for the trade-offs.
#pragma once

#include "overcache/util/result.hpp"
#include "util/unique_fd.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace overcache::store {

// How the data file is opened.
enum class IoMode {
    automatic, // O_DIRECT if the filesystem accepts it, else buffered + DONTNEED
    direct,    // O_DIRECT or fail to open
    buffered,  // never O_DIRECT: buffered + DONTNEED (tests, odd filesystems)
};

struct DataFileOptions {
    IoMode mode = IoMode::automatic;
    bool create = false; // O_CREAT, mode 0600 (a file; a block device must exist)
};

// Which I/O a fault hook is asked about.
enum class DataOp { read, write, sync };

struct DataFileStats {
    std::uint64_t reads = 0;         // read() calls that succeeded
    std::uint64_t writes = 0;        // write() calls that succeeded
    std::uint64_t bytes_read = 0;    // bytes handed to callers (not the aligned cover)
    std::uint64_t bytes_written = 0; // caller's bytes (not the zero tail)
    std::uint64_t read_errors = 0;   // read() calls that failed, injected faults included
    std::uint64_t write_errors = 0;  // write() and sync() calls that failed
};

// Test seam: called before every I/O while set (a sync as off 0, len 0); a
// non-zero return is taken as that errno and the I/O fails, counted as an
// error, without touching the file. May be called from several threads.
using FaultHook = std::function<int(DataOp op, std::uint64_t off, std::size_t len)>;

// Thread-safe: read(), write() and sync() may run concurrently from any
// thread. Movable (the state lives behind a pointer), not copyable. A
// default-constructed DataFile is closed: valid() is false and I/O fails
// with EBADF.
class DataFile {
public:
    // Opens `path` (a regular file or a block device) read-write.
    static Result<DataFile> open(const std::string& path, const DataFileOptions& opt = {});
    // Takes over an fd opened O_RDWR (with or without O_DIRECT); switches
    // O_DIRECT on or off with fcntl(F_SETFL) as `mode` asks. The file's
    // flags are shared with every dup() of the fd. Clean pages of the file
    // left in the page cache by earlier buffered I/O are dropped.
    static Result<DataFile> adopt(UniqueFd fd, IoMode mode = IoMode::automatic);

    DataFile();
    DataFile(DataFile&&) noexcept;
    DataFile& operator=(DataFile&&) noexcept;
    DataFile(const DataFile&) = delete;
    DataFile& operator=(const DataFile&) = delete;
    ~DataFile();

    bool valid() const noexcept;
    // True when the file is read and written with O_DIRECT.
    bool direct() const noexcept;
    // The alignment write() requires of `off`, and the unit a write owns:
    // a power of two, at least 4096 (so the 4 KiB checksum grid lines up),
    // at least the device's logical block / the filesystem's O_DIRECT
    // offset alignment.
    std::size_t block_size() const noexcept;
    // Bytes in the file (st_size) or on the block device (BLKGETSIZE64).
    Result<std::uint64_t> size() const;

    // Reads exactly [off, off+len) into `out`; any alignment of off, len and
    // out. EINTR and short transfers are retried; reaching the end of the
    // device first is an error (EIO). Every failure is an Errc::Sys Error
    // with its errno. With O_DIRECT the covering blocks go through a
    // per-thread aligned buffer (no allocation once warm) unless off, len and
    // out are all aligned, in which case they are read in place.
    Result<void> read(std::uint64_t off, std::size_t len, char* out) const;

    // Writes [off, off+len) and zeroes the rest of its last block.
    // Contract: `off` is a multiple of block_size() (else EINVAL, nothing
    // written), and the caller owns the whole block range
    // [off, round_up(off+len, block_size())) exclusively: no one else writes
    // it, and no one reads it expecting older bytes, until this returns.
    // Not durable until sync(): clean data needs no sync (its checksum
    // catches a torn write); dirty data does, before its index entry.
    Result<void> write(std::uint64_t off, const char* data, std::size_t len);

    // fdatasync: makes what was written durable, O_DIRECT writes included
    // (they may sit in the device's volatile cache, and writes into
    // preallocated extents need their extent conversion committed).
    Result<void> sync();

    DataFileStats stats() const noexcept;

    // Test seam; pass {} to clear. Cheap while unset: one relaxed load.
    void set_fault(FaultHook hook);

private:
    struct State;
    explicit DataFile(std::unique_ptr<State> s);
    int fault(DataOp op, std::uint64_t off, std::size_t len) const;

    std::unique_ptr<State> s_;
};

} // namespace overcache::store
