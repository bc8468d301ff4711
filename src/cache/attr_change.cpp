// DOC: see attr_change.hpp. Lock order as everywhere: write_mu, backing_mu,
// then mu for each step; mu is never held across the change itself.
#include "cache/attr_change.hpp"

#include "backing/backing_fs.hpp"
#include "util/log.hpp"

#include <sys/stat.h>

namespace overcache::cache {
namespace {

bool same_mtime(const struct stat& a, const struct stat& b) {
    return a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec;
}

} // namespace

Result<std::unique_ptr<AttrChange>> FileAttrChange::begin(CacheCore& core, StateRef ref, int fd) {
    std::unique_lock wl(ref->write_mu);
    auto bl = lock_backing(*ref);
    if (!bl)
        return fail(std::move(bl).error());
    return std::unique_ptr<AttrChange>(std::make_unique<FileAttrChange>(
        core, std::move(ref), fd, std::move(wl), std::move(*bl)));
}

FileAttrChange::FileAttrChange(CacheCore& core, StateRef ref, int fd,
                               std::unique_lock<std::mutex> wl, BackingLock bl)
    : core_(core), ref_(std::move(ref)), fd_(fd), wl_(std::move(wl)), bl_(std::move(bl)) {
    FileState& st = *ref_;
    have_before_ = backing::stat_fd(fd_, before_) == 0;
    std::lock_guard lk(st.mu);
    if (auto r = core_.records.load(st); !r) {
        log::warn("cache: ", to_string(r.error()));
        return;
    }
    if (!st.rec || !have_before_)
        return;
    if (auto changed = core_.records.revalidate(st, before_); !changed) {
        log::warn("cache: ", to_string(changed.error()));
    } else if (*changed) {
        ++core_.c.backing_changes;
        found_.backing_changed = true;
    }
    if (st.rec && (st.rec->flags & meta::kFileAhead) != 0 &&
        (st.rec->flags & meta::kFileWritingBack) == 0) {
        meta::FileRecord rec = *st.rec;
        rec.flags |= meta::kFileWritingBack;
        auto t = core_.index.txn();
        if (auto r = core_.records.commit(st, t, rec, true); !r)
            log::warn("cache: cannot update a file record: ", to_string(r.error()));
        else
            marked_ = true;
    }
}

FileAttrChange::~FileAttrChange() {
    if (!finished_)
        (void)finish(false);
}

ChangeOut FileAttrChange::finish(bool renamed) {
    if (finished_)
        return found_;
    finished_ = true;
    FileState& st = *ref_;
    std::lock_guard lk(st.mu);
    if (!st.loaded || !st.rec)
        return found_;
    struct stat now {};
    if (backing::stat_fd(fd_, now) != 0) {
        // We cannot say how the backing looks now: stop trusting the record.
        st.uncached.store(true);
        return found_;
    }
    if ((st.rec->flags & meta::kFileAhead) != 0) {
        // Still ahead: the new attributes are the backing's; an mtime the
        // change set (utimes) is the file's from now on, and writeback puts
        // it on the backing when it is done.
        meta::FileRecord rec = *st.rec;
        take_attrs(rec, now);
        if (marked_)
            rec.flags &= ~meta::kFileWritingBack;
        if (have_before_ && !same_mtime(before_, now))
            rec.cache_mtime_ns =
                static_cast<std::int64_t>(now.st_mtim.tv_sec) * 1000000000 + now.st_mtim.tv_nsec;
        auto t = core_.index.txn();
        if (auto r = core_.records.commit(st, t, rec, marked_); !r)
            log::warn("cache: cannot update a file record: ", to_string(r.error()));
    } else {
        if (auto r = core_.records.record_after(st, now); !r)
            log::warn("cache: cannot update a file record: ", to_string(r.error()));
        st.size.store(static_cast<std::uint64_t>(now.st_size));
    }
    if (renamed)
        if (auto r = core_.records.update_path(st, fd_); !r)
            log::warn("cache: cannot update the path of a file record: ", to_string(r.error()));
    return found_;
}

} // namespace overcache::cache
