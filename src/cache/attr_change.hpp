// FileAttrChange: the caching path's side of DataPath::begin_attr_change.
// A change of a file's inode made through the mount (chmod, chown, utimes,
// xattrs, link, unlink of one name, rename) follows the protocol of every
// change of ours: under the file's write_mu and backing_mu, compare the
// backing with the record (a change behind the mount found first), mark a
// file with dirty data kFileWritingBack (synced, so a crash mid-change is
// not taken for someone else's), let the change happen, then record the
// backing as it left it. Without the locks, a writeback batch or an open
// between the change and its record would see our own new ctime as a
// change behind the mount: a false conflict.
#pragma once

#include "cache/backing_lock.hpp"
#include "cache/cache_core.hpp"
#include "overcache/cache/data_path.hpp"

#include <mutex>

namespace overcache::cache {

class FileAttrChange final : public AttrChange {
public:
    // `fd`: any fd of the file (O_PATH will do), open until finish().
    // Fails when the file's backing lock cannot be had (lock_backing()).
    static Result<std::unique_ptr<AttrChange>> begin(CacheCore& core, StateRef ref, int fd);
    FileAttrChange(CacheCore& core, StateRef ref, int fd, std::unique_lock<std::mutex> wl,
                   BackingLock bl);
    ~FileAttrChange() override;
    ChangeOut finish(bool renamed) override;

private:
    CacheCore& core_;
    StateRef ref_;
    const int fd_;
    std::unique_lock<std::mutex> wl_;
    BackingLock bl_;
    struct stat before_ {};  // the backing under the locks, before the change
    bool have_before_ = false;
    bool marked_ = false;    // we set kFileWritingBack
    bool finished_ = false;
    ChangeOut found_;        // a change behind the mount found at the start
};

} // namespace overcache::cache
