// Private to the FUSE adapter: a directory of the backing read in batches of
// entries, each batch one getdents64 through the gate (backing/gate.hpp),
// so that a backing that stops answering in the middle of a listing costs
// one deadline, not a request thread. glibc's DIR would make that call
// itself, on the request's thread, whenever its buffer runs dry.
//
// A batch whose call missed its deadline may still land later, in a buffer
// the abandoned call owns (shared with the stream) and at a position of the
// directory nobody knows: the stream is then lost, and every later read of
// it fails with EIO (a new opendir starts afresh).
#pragma once

#include "fuse/adapter.hpp"
#include "util/unique_fd.hpp"

#include <cstdint>
#include <memory>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace overcache::fuse {

class DirStream {
public:
    explicit DirStream(UniqueFd fd);

    struct Entry {
        std::string_view name; // NUL-terminated, into the stream's buffer
        ino_t ino = 0;
        unsigned char type = 0; // DT_*
        off_t next = 0;         // where the entry after it starts (seekdir)
    };
    // The next entry into `out`, valid until the next call: 0; ENOENT past
    // the last one; an errno; or kNoAnswer when the backing did not answer
    // in time (the stream is lost: EIO from then on).
    int next(Adapter& a, Entry& out);
    // Resumes at `off`, an Entry::next of this directory (or 0).
    void seek(off_t off);
    int fd() const noexcept;

private:
    // What a batch's call owns: it may outlive the stream, abandoned.
    struct Shared {
        UniqueFd fd;
        std::vector<char> buf;
    };
    std::shared_ptr<Shared> s_;
    std::size_t pos_ = 0; // next entry in s_->buf
    std::size_t len_ = 0; // bytes of entries in s_->buf
    bool lost_ = false;
};

} // namespace overcache::fuse
