// DataPath: the seam between the FUSE adapter and the cache. The adapter
// does all metadata on the backing itself and calls a DataPath for file
// data (read), and to tell it what the mount changed (wrote, invalidate,
// touched, removed), so the cache never serves bytes the backing no longer
// has. A passthrough DataPath serves every read from the backing; the
// caching one (issue #3) puts the cache device in between. Neither knows
// libfuse.
#pragma once

#include "overcache/util/result.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace overcache::cache {

// A backing file as the adapter holds it: any fd on it (O_PATH will do for
// everything but reading) and its attributes as of just now.
struct FileRef {
    int fd;
    const struct stat& st;
};

// State a DataPath keeps for one open of a file; owned by the FUSE file handle.
class OpenFile {
public:
    virtual ~OpenFile() = default;
};

// Where a read's reply comes from: either `len` bytes already in the
// caller's buffer (fd < 0), or `len` bytes to splice from `fd` at `fd_offset`
// (zero copy; the fd stays valid until the reply is sent).
struct ReadOut {
    int fd = -1;
    off_t fd_offset = 0;
    std::size_t len = 0;
};

struct OpenOut {
    std::unique_ptr<OpenFile> file;
    bool keep_page_cache = false; // the kernel may keep its cached pages of this file
};

class DataPath {
public:
    virtual ~DataPath() = default;

    // The adapter has opened the backing file: `fd` is readable if the open
    // was, and stays open until the OpenFile is destroyed. Compares the
    // backing's attributes with what the cache knew (close-to-open).
    virtual Result<OpenOut> open(int fd, const struct stat& st, int open_flags) = 0;

    // Reads up to `size` bytes at `off`; `buf` has room for `size` bytes.
    virtual Result<ReadOut> read(OpenFile& f, char* buf, std::size_t size, off_t off) = 0;

    // Whether wrote() wants the written bytes, so the adapter copies them
    // into memory instead of splicing them straight to the backing.
    virtual bool wants_write_data(const OpenFile& f) const = 0;

    // `len` bytes at `off` reached the backing through this open;
    // `data` holds them when wants_write_data() said so, else null.
    virtual void wrote(OpenFile& f, const char* data, std::size_t len, off_t off) = 0;

    // The mount changed bytes [off, off + len) of the file by other means
    // (truncate: off = new size, len = UINT64_MAX; fallocate; copy_file_range).
    virtual void invalidate(FileRef file, std::uint64_t off, std::uint64_t len) = 0;

    // The mount changed the file's attributes (chmod, chown, utimes, link)
    // but not its bytes; the cache refreshes what it compares at open.
    virtual void touched(FileRef file) = 0;

    // The last name of the file is gone (`st` is as before the unlink).
    virtual void removed(FileRef file) = 0;

    // `key value` lines for the control file, in a stable order.
    virtual std::vector<std::pair<std::string, std::string>> stats() const = 0;

    // Stops background work and makes everything durable; called once,
    // after the FUSE session has ended and before destruction.
    virtual void stop() = 0;
};

} // namespace overcache::cache
