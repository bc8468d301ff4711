// DOC: file records and coherency (NFS close-to-open plus weak cache
// consistency). A record holds the backing's size, mtime, ctime and inode
// as the cache last saw them. At open, and before every change made through
// the mount, the backing's fresh attributes are compared with it: a
// difference means someone changed the file behind the mount, so its
// extents are dropped (one DeleteRange, with the buckets' live bytes in the
// same batch), its epoch bumped and the new attributes recorded. After our
// own change the record takes the attributes the change left, so a write
// never invalidates its own cache. The FileId stays for the life of the
// backing identity; fills carry the epoch and write_seq they read under and
// stand down if either moved. Only the owner (FileState::mu) calls in here.
#include "cache/file_records.hpp"

#include "overcache/meta/key_codec.hpp"
#include "util/log.hpp"

#include <climits>
#include <ctime>
#include <fcntl.h>
#include <unistd.h>
#include <vector>

namespace overcache::cache {
namespace {

std::int64_t ns(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

// handle_type (be32) then the handle bytes, or empty where the backing has
// no persistent handles.
std::string file_handle_of(int fd) {
    // struct file_handle ends in a flexible array: room for the largest.
    alignas(struct file_handle) unsigned char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
    auto* h = reinterpret_cast<struct file_handle*>(buf);
    h->handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    if (::name_to_handle_at(fd, "", h, &mount_id, AT_EMPTY_PATH) != 0)
        return {};
    std::string out;
    meta::put_be32(out, static_cast<std::uint32_t>(h->handle_type));
    out.append(reinterpret_cast<const char*>(buf + sizeof(struct file_handle)), h->handle_bytes);
    return out;
}

} // namespace

void take_attrs(meta::FileRecord& r, const struct stat& st) {
    r.size = static_cast<std::uint64_t>(st.st_size);
    r.mtime_ns = ns(st.st_mtim);
    r.ctime_ns = ns(st.st_ctim);
    r.ino = static_cast<std::uint64_t>(st.st_ino);
}

std::int64_t now_ns() {
    struct timespec t {};
    ::clock_gettime(CLOCK_REALTIME, &t);
    return ns(t);
}

bool same_file(const meta::FileRecord& r, const struct stat& st) {
    return r.size == static_cast<std::uint64_t>(st.st_size) && r.mtime_ns == ns(st.st_mtim) &&
           r.ctime_ns == ns(st.st_ctim) && r.ino == static_cast<std::uint64_t>(st.st_ino);
}

FileRecords::FileRecords(meta::MetaStore& meta, ExtentIndex& index, DirtyFiles& dirty,
                         std::string backing_root)
    : meta_(meta), index_(index), dirty_(dirty), root_(std::move(backing_root)) {}

Result<void> FileRecords::start() {
    auto v = meta_.get(meta::Cf::meta, meta::kNextFileIdKey);
    if (!v)
        return fail(v.error());
    std::lock_guard lk(id_mu_);
    if (v->has_value() && (*v)->size() == 8)
        next_fid_ = std::max<std::uint64_t>(1, meta::get_be64((*v)->data()));
    return {};
}

std::string FileRecords::rel_path(int fd) const {
    char link[64];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    std::vector<char> buf(PATH_MAX + 1);
    const ssize_t n = ::readlink(link, buf.data(), buf.size() - 1);
    if (n <= 0)
        return {};
    std::string p(buf.data(), static_cast<std::size_t>(n));
    if (root_.empty() || p.compare(0, root_.size(), root_) != 0 || p.size() <= root_.size() ||
        p[root_.size()] != '/')
        return {};
    return p.substr(root_.size() + 1);
}

void FileRecords::publish(FileState& st, const meta::FileRecord& rec) {
    const bool ahead = (rec.flags & meta::kFileAhead) != 0;
    st.rec = rec;
    st.fid.store(rec.file_id);
    st.epoch.store(rec.epoch);
    st.size.store(ahead ? rec.cache_size : rec.size);
    st.ahead.store(ahead);
    st.uncached.store(false);
    if (ahead) {
        DirtyView v{rec.file_id, rec.cache_size, rec.cache_mtime_ns, now_ns()};
        if (auto old = dirty_.find(st.key); old && old->fid == rec.file_id)
            v.since_ns = old->since_ns;
        dirty_.set(st.key, v);
    } else {
        dirty_.erase(st.key);
    }
}

Result<void> FileRecords::commit(FileState& st, ExtentTxn& t, const meta::FileRecord& rec,
                                 bool sync) {
    const bool ahead = (rec.flags & meta::kFileAhead) != 0;
    const bool was_ahead = st.rec && (st.rec->flags & meta::kFileAhead) != 0 &&
                           st.rec->file_id == rec.file_id;
    // FileRecords is the only writer of the record, so st.rec is what the
    // index holds: an unchanged record (an overwrite inside the file's size
    // under the kernel's writeback cache) is not written again, which saves
    // every such write a memtable insert and its bytes in the WAL.
    if (!st.rec || !(*st.rec == rec))
        t.batch.put(meta::Cf::files, meta::file_key(st.key), meta::encode(rec));
    if (ahead && !was_ahead) {
        std::string since;
        meta::put_be64(since, static_cast<std::uint64_t>(now_ns()));
        t.batch.put(meta::Cf::dirty, meta::dirty_key(rec.file_id, 0), since);
    } else if (!ahead && st.rec && (st.rec->flags & meta::kFileAhead) != 0) {
        t.batch.del(meta::Cf::dirty, meta::dirty_key(st.rec->file_id, 0));
    }
    if (auto r = index_.commit(t, sync); !r) {
        // The index keeps what it had; memory stops trusting it.
        st.uncached.store(true);
        return r;
    }
    publish(st, rec);
    return {};
}

Result<void> FileRecords::load(FileState& st) {
    if (st.loaded)
        return {};
    auto v = meta_.get(meta::Cf::files, meta::file_key(st.key));
    if (!v)
        return fail(v.error());
    st.loaded = true;
    st.rec.reset();
    if (v->has_value()) {
        if (auto rec = meta::decode_file_record(**v)) {
            publish(st, *rec);
        } else {
            // A damaged record: its extents cannot be found by FileId, so
            // start over with a new record (the old extents age out).
            log::warn("cache: damaged record of inode ", st.key.ino, "; caching it afresh");
        }
    }
    return {};
}

Result<bool> FileRecords::revalidate(FileState& st, const struct stat& backing) {
    if (!st.rec)
        return false;
    const bool same = same_file(*st.rec, backing);
    if (after_compare)
        after_compare(st);
    if (same)
        return false;
    if ((st.rec->flags & meta::kFileWritingBack) != 0) {
        // Our own writeback or change stopped between the backing and the
        // record (a crash): what differs is ours; dirty data is written
        // again.
        meta::FileRecord rec = *st.rec;
        take_attrs(rec, backing);
        rec.flags &= ~meta::kFileWritingBack;
        auto t = index_.txn();
        if (auto r = commit(st, t, rec, true); !r)
            return fail(r.error());
        return false;
    }
    const bool conflict = (st.rec->flags & meta::kFileAhead) != 0 && on_conflict;
    if (conflict && !on_conflict(st, backing))
        return fail(Errc::Sys, "a changed file's dirty data could not be saved; kept as it is");
    meta::FileRecord rec = *st.rec;
    if (conflict)
        rec.flags |= meta::kFileConflict; // user.overcache.state: conflict
    ++rec.epoch;
    take_attrs(rec, backing);
    rec.flags &= ~meta::kFileAhead;
    rec.flags |= meta::kFileKernelPagesStale;
    auto t = index_.txn();
    if (auto r = index_.stage_drop_all(t, rec.file_id); !r) {
        st.uncached.store(true);
        return fail(r.error());
    }
    ++st.write_seq; // fills that read the old bytes stand down
    if (auto r = commit(st, t, rec); !r)
        return fail(r.error());
    invalidated_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

Result<void> FileRecords::create(FileState& st, int fd, const struct stat& backing) {
    meta::FileRecord rec;
    auto t = index_.txn();
    {
        std::lock_guard lk(id_mu_);
        rec.file_id = next_fid_++;
        std::string next;
        meta::put_be64(next, next_fid_);
        t.batch.put(meta::Cf::meta, meta::kNextFileIdKey, next);
    }
    take_attrs(rec, backing);
    rec.handle = file_handle_of(fd);
    rec.path = rel_path(fd);
    t.batch.put(meta::Cf::file_ids, meta::file_id_key(rec.file_id), meta::file_key(st.key));
    // Extents a FileId left behind (a crash between its allocation and a
    // counter write cannot happen: both are in this batch) would be the
    // only way to find stale bytes under a new record: none can exist.
    return commit(st, t, rec);
}

Result<void> FileRecords::record_after(FileState& st, const struct stat& after) {
    if (!st.rec)
        return {};
    meta::FileRecord rec = *st.rec;
    take_attrs(rec, after);
    auto t = index_.txn();
    return commit(st, t, rec);
}

Result<void> FileRecords::drop(FileState& st, const struct stat& after, std::uint32_t set_flags) {
    if (!st.rec)
        return {};
    meta::FileRecord rec = *st.rec;
    ++rec.epoch;
    take_attrs(rec, after);
    // The dirty data goes too; so does a conflict (invalidate, O_TRUNC).
    rec.flags &= ~(meta::kFileAhead | meta::kFileWritingBack | meta::kFileConflict);
    rec.flags |= set_flags;
    auto t = index_.txn();
    if (auto r = index_.stage_drop_all(t, rec.file_id); !r) {
        st.uncached.store(true);
        return fail(r.error());
    }
    ++st.write_seq;
    return commit(st, t, rec);
}

Result<void> FileRecords::set_flags(FileState& st, std::uint32_t set, std::uint32_t clear) {
    if (!st.rec)
        return {};
    meta::FileRecord rec = *st.rec;
    const std::uint32_t flags = (rec.flags | set) & ~clear;
    if (flags == rec.flags)
        return {};
    rec.flags = flags;
    auto t = index_.txn();
    return commit(st, t, rec);
}

Result<void> FileRecords::update_path(FileState& st, int fd) {
    if (!st.rec || !st.rec->handle.empty())
        return {}; // the handle finds the file wherever it is
    std::string p = rel_path(fd);
    if (p.empty() || p == st.rec->path)
        return {};
    meta::FileRecord rec = *st.rec;
    rec.path = std::move(p);
    auto t = index_.txn();
    return commit(st, t, rec);
}

Result<void> FileRecords::remove(FileState& st) {
    ++st.write_seq;
    st.uncached.store(true);
    if (!st.rec)
        return {};
    auto t = index_.txn();
    if (auto r = index_.stage_drop_all(t, st.rec->file_id); !r)
        return r;
    t.batch.del(meta::Cf::files, meta::file_key(st.key));
    t.batch.del(meta::Cf::file_ids, meta::file_id_key(st.rec->file_id));
    t.batch.del(meta::Cf::dirty, meta::dirty_key(st.rec->file_id, 0));
    if (auto r = index_.commit(t); !r)
        return r;
    dirty_.erase(st.key);
    st.ahead.store(false);
    st.rec.reset();
    return {};
}

} // namespace overcache::cache
