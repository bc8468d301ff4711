// DOC: directory listings in the index (see meta_cache.hpp). Writes are
// not synced: a listing lost in a crash is read from the backing again. A
// recording starts by dropping the listing's record (not whole), writes
// what it reads over the old entries, and at its end drops the entries it
// did not read, then writes the record that makes it whole again: a
// listing is never whole with entries of two readings mixed.
#include "overcache/cache/meta_cache.hpp"

#include "util/log.hpp"
#include "util/wall_clock.hpp"

#include <algorithm>
#include <ctime>
#include <dirent.h>

namespace overcache::cache {
namespace {

// Entries a recording writes in one batch.
constexpr std::uint64_t kBatchEntries = 512;

unsigned char dtype_of(mode_t mode) noexcept {
    return static_cast<unsigned char>((mode & S_IFMT) >> 12); // DT_* == S_IF* >> 12
}

struct timespec ts_of(std::int64_t ns) noexcept {
    struct timespec t {};
    t.tv_sec = static_cast<time_t>(ns / 1000000000);
    t.tv_nsec = static_cast<long>(ns % 1000000000);
    if (t.tv_nsec < 0) { // before 1970
        t.tv_nsec += 1000000000;
        --t.tv_sec;
    }
    return t;
}

meta::AttrRecord record_of(const struct stat& st, std::uint64_t seq, std::string_view target,
                           std::int64_t seen_ns, std::uint8_t xattrs = meta::kXattrsUnknown) {
    meta::AttrRecord r;
    r.xattrs = xattrs;
    r.seen_ns = seen_ns != 0 ? seen_ns : wall_ns();
    r.mode = st.st_mode;
    r.uid = st.st_uid;
    r.gid = st.st_gid;
    r.blksize = static_cast<std::uint32_t>(st.st_blksize);
    r.nlink = st.st_nlink;
    r.size = static_cast<std::uint64_t>(st.st_size);
    r.blocks = static_cast<std::uint64_t>(st.st_blocks);
    r.rdev = st.st_rdev;
    r.atime_ns = ns_of(st.st_atim);
    r.mtime_ns = ns_of(st.st_mtim);
    r.ctime_ns = ns_of(st.st_ctim);
    r.seen_seq = seq;
    if (S_ISLNK(st.st_mode))
        r.target.assign(target);
    return r;
}

MetaCache::SeenAttr seen_of(const meta::AttrRecord& r, const meta::FileKey& key) {
    MetaCache::SeenAttr a;
    a.st.st_ino = static_cast<ino_t>(key.ino);
    a.st.st_mode = r.mode;
    a.st.st_uid = r.uid;
    a.st.st_gid = r.gid;
    a.st.st_blksize = static_cast<blksize_t>(r.blksize);
    a.st.st_nlink = static_cast<nlink_t>(r.nlink);
    a.st.st_size = static_cast<off_t>(r.size);
    a.st.st_blocks = static_cast<blkcnt_t>(r.blocks);
    a.st.st_rdev = static_cast<dev_t>(r.rdev);
    a.st.st_atim = ts_of(r.atime_ns);
    a.st.st_mtim = ts_of(r.mtime_ns);
    a.st.st_ctim = ts_of(r.ctime_ns);
    a.target = r.target;
    a.seen_ns = r.seen_ns;
    a.xattrs = r.xattrs;
    return a;
}

} // namespace

MetaCache::MetaCache(meta::MetaStore& meta, KeyOf key_of, KnownKey known_key,
                     std::chrono::nanoseconds racy_window)
    : meta_(meta), key_of_(std::move(key_of)), known_key_(std::move(known_key)),
      racy_ns_(racy_window.count()) {}

MetaCache::Recorder::Recorder(MetaCache& owner, meta::FileKey dir, const struct stat& began)
    : owner_(owner), dir_(dir), mtime_ns_(ns_of(began.st_mtim)), ctime_ns_(ns_of(began.st_ctim)),
      began_ns_(wall_ns()), began_seq_(owner.meta_.sequence()), batch_(owner.meta_.batch()) {
    // Not whole from now until finish(). The old entries stay for handles
    // already listing them (opened while it was whole); the reading
    // overwrites them, and finish() drops those it did not see.
    batch_.del(meta::Cf::dirs, meta::file_key(dir_));
}

MetaCache::Recorder::~Recorder() {
    owner_.done_recording(dir_);
}

void MetaCache::Recorder::add(std::string_view name, ino_t ino, unsigned char type) {
    if (failed_ || name.empty())
        return;
    seen_.insert(meta::name_hash(name));
    batch_.put(meta::Cf::dentries, meta::dentry_key(dir_, name),
               meta::encode(meta::DentryValue{{dir_.fsid, static_cast<std::uint64_t>(ino)}, type}));
    if (++entries_ % kBatchEntries == 0)
        flush();
}

void MetaCache::Recorder::flush() {
    if (failed_ || batch_.count() == 0)
        return;
    if (auto r = owner_.meta_.write(batch_); !r) {
        failed_ = true;
        log::warn("index: cannot record a directory listing: ", to_string(r.error()));
    }
    batch_ = owner_.meta_.batch();
}

void MetaCache::Recorder::finish(const struct stat& now) {
    // Changed in the window before the reading began (or after, by its
    // clock): a change in the same tick may not show in the times.
    const bool settled = std::max(mtime_ns_, ctime_ns_) < began_ns_ - owner_.racy_ns_;
    const bool unchanged = ns_of(now.st_mtim) == mtime_ns_ &&
                           ns_of(now.st_ctim) == ctime_ns_ && settled;
    if (unchanged && !failed_) {
        flush(); // what was read, before looking for what was not
        auto cur = owner_.meta_.cursor(meta::Cf::dentries, meta::dentry_key_end(dir_));
        for (cur.seek(meta::dentry_seek_key(dir_, 0)); cur.valid(); cur.next()) {
            meta::DentryKey k;
            if (!meta::decode_dentry_key(cur.key(), k) || !seen_.contains(k.hash))
                batch_.del(meta::Cf::dentries, cur.key()); // gone, or damaged
        }
        if (!cur.status())
            failed_ = true;
        else
            batch_.put(meta::Cf::dirs, meta::file_key(dir_),
                       meta::encode(meta::DirRecord{mtime_ns_, ctime_ns_, entries_, began_seq_}));
    }
    flush();
    std::lock_guard lk(owner_.mu_);
    if (!unchanged)
        ++owner_.stats_.listings_changed;
    else if (!failed_)
        ++owner_.stats_.listings_recorded;
}

std::optional<meta::FileKey> MetaCache::current_listing(int dir_fd, const struct stat& st) {
    const meta::FileKey dir = key_of_(dir_fd, st);
    if (auto w = whole(dir); w && w->mtime_ns == ns_of(st.st_mtim) && w->ctime_ns == ns_of(st.st_ctim))
        return dir;
    return std::nullopt;
}

std::unique_ptr<MetaCache::Recorder> MetaCache::record_listing(int dir_fd, const struct stat& st) {
    if (current_listing(dir_fd, st))
        return nullptr; // the index has this very listing
    const meta::FileKey dir = key_of_(dir_fd, st);
    {
        std::lock_guard lk(mu_);
        if (!recording_.emplace(dir.fsid, dir.ino).second)
            return nullptr;
    }
    return std::unique_ptr<Recorder>(new Recorder(*this, dir, st));
}

void MetaCache::done_recording(const meta::FileKey& dir) noexcept {
    std::lock_guard lk(mu_);
    recording_.erase({dir.fsid, dir.ino});
}

std::optional<meta::DirRecord> MetaCache::whole(const meta::FileKey& dir) const {
    auto v = meta_.get(meta::Cf::dirs, meta::file_key(dir));
    if (!v || !*v)
        return std::nullopt;
    return meta::decode_dir_record(**v);
}

int MetaCache::list(const meta::FileKey& dir, off_t off,
                    const std::function<bool(const Entry&)>& emit, bool require_whole) {
    if (require_whole && !whole(dir))
        return ENOENT;
    auto cur = meta_.cursor(meta::Cf::dentries, meta::dentry_key_end(dir));
    cur.seek(meta::dentry_seek_key(dir, off > 0 ? static_cast<std::uint64_t>(off) : 0));
    for (; cur.valid(); cur.next()) {
        meta::DentryKey k;
        auto v = meta::decode_dentry(cur.value());
        if (!meta::decode_dentry_key(cur.key(), k) || !v) {
            log::warn("index: a damaged directory entry is skipped");
            continue;
        }
        if (!emit(Entry{k.name, *v, static_cast<off_t>(k.hash + 1)}))
            break;
    }
    if (!cur.status())
        return EIO;
    return 0;
}

MetaCache::Found MetaCache::find(const meta::FileKey& dir, std::string_view name) {
    Found f;
    if (!whole(dir))
        return f;
    auto v = meta_.get(meta::Cf::dentries, meta::dentry_key(dir, name));
    if (!v)
        return f;
    if (!*v) {
        f.state = Found::State::absent;
        return f;
    }
    if (auto d = meta::decode_dentry(**v)) {
        f.state = Found::State::present;
        f.value = *d;
    }
    return f;
}

namespace {

// `rec` moved to `dir_now`'s times with `delta` entries more.
meta::DirRecord moved(meta::DirRecord rec, const struct stat& dir_now, int delta) {
    rec.mtime_ns = ns_of(dir_now.st_mtim);
    rec.ctime_ns = ns_of(dir_now.st_ctim);
    if (delta > 0 || rec.entries > 0)
        rec.entries += static_cast<std::uint64_t>(static_cast<std::int64_t>(delta));
    return rec;
}

} // namespace

void MetaCache::name_added(const meta::FileKey& dir, const struct stat& dir_before,
                           const struct stat& dir_now, std::string_view name,
                           const struct stat& child, std::int64_t child_seen_ns) {
    const meta::FileKey child_key{dir.fsid, static_cast<std::uint64_t>(child.st_ino)};
    std::unique_lock dir_lk(key_mu(dir), std::defer_lock);
    std::unique_lock child_lk(key_mu(child_key), std::defer_lock);
    if (dir_lk.mutex() == child_lk.mutex())
        dir_lk.lock();
    else
        std::lock(dir_lk, child_lk);
    auto b = meta_.batch();
    b.put(meta::Cf::dentries, meta::dentry_key(dir, name),
          meta::encode(meta::DentryValue{{dir.fsid, static_cast<std::uint64_t>(child.st_ino)},
                                         dtype_of(child.st_mode)}));
    // The new name's file, as it is now: vouched for by the listing.
    b.put(meta::Cf::attrs, meta::file_key(child_key),
          meta::encode(record_of(child, meta_.sequence(), {}, child_seen_ns)));
    keep_whole(b, dir, dir_before, dir_now, 1);
    if (auto r = meta_.write(b); !r)
        log::warn("index: cannot record a new name: ", to_string(r.error()));
}

void MetaCache::name_removed(const meta::FileKey& dir, const struct stat& dir_before,
                             const struct stat& dir_now, std::string_view name) {
    std::lock_guard kl(key_mu(dir));
    auto b = meta_.batch();
    b.del(meta::Cf::dentries, meta::dentry_key(dir, name));
    keep_whole(b, dir, dir_before, dir_now, -1);
    if (auto r = meta_.write(b); !r)
        log::warn("index: cannot drop a name: ", to_string(r.error()));
}

void MetaCache::keep_whole(meta::Batch& b, const meta::FileKey& dir,
                           const struct stat& dir_before, const struct stat& dir_now, int delta) {
    auto w = whole(dir);
    if (!w)
        return;
    if (w->mtime_ns == ns_of(dir_before.st_mtim) && w->ctime_ns == ns_of(dir_before.st_ctim))
        b.put(meta::Cf::dirs, meta::file_key(dir), meta::encode(moved(*w, dir_now, delta)));
    else // changed behind the mount since it was kept: read it again
        b.del(meta::Cf::dirs, meta::file_key(dir));
}

void MetaCache::forget_listing(const meta::FileKey& dir) {
    std::lock_guard kl(key_mu(dir));
    auto b = meta_.batch();
    b.del(meta::Cf::dirs, meta::file_key(dir));
    b.del_range(meta::Cf::dentries, meta::dentry_seek_key(dir, 0), meta::dentry_key_end(dir));
    if (auto r = meta_.write(b); !r)
        log::warn("index: cannot drop a removed directory's listing: ", to_string(r.error()));
}

void MetaCache::note_attr(const meta::FileKey& key, const struct stat& st,
                          std::string_view target, std::int64_t seen_ns, std::uint8_t xattrs) {
    {
        std::lock_guard kl(key_mu(key));
        auto b = meta_.batch();
        b.put(meta::Cf::attrs, meta::file_key(key),
              meta::encode(record_of(st, meta_.sequence(), target, seen_ns, xattrs)));
        if (auto r = meta_.write(b); !r) {
            log::warn("index: cannot record attributes: ", to_string(r.error()));
            return;
        }
    }
    std::lock_guard lk(mu_);
    ++stats_.attrs_recorded;
}

std::optional<MetaCache::SeenAttr> MetaCache::attr(const meta::FileKey& key) const {
    auto v = meta_.get(meta::Cf::attrs, meta::file_key(key));
    if (!v || !*v)
        return std::nullopt;
    auto r = meta::decode_attr_record(**v);
    if (!r)
        return std::nullopt;
    return seen_of(*r, key);
}

std::optional<MetaCache::SeenAttr> MetaCache::vouched_attr(const meta::DirRecord& rec,
                                                           const meta::FileKey& child) const {
    auto v = meta_.get(meta::Cf::attrs, meta::file_key(child));
    if (!v || !*v)
        return std::nullopt;
    auto r = meta::decode_attr_record(**v);
    if (!r || r->seen_seq < rec.began_seq)
        return std::nullopt;
    return seen_of(*r, child);
}

void MetaCache::forget_attr(const meta::FileKey& key) {
    std::lock_guard kl(key_mu(key));
    auto b = meta_.batch();
    b.del(meta::Cf::attrs, meta::file_key(key));
    if (auto r = meta_.write(b); !r)
        log::warn("index: cannot drop a removed file's attributes: ", to_string(r.error()));
}

void MetaCache::note_attr_served() noexcept {
    std::lock_guard lk(mu_);
    ++stats_.attrs_served;
}

void MetaCache::note_kept_answer() noexcept {
    std::lock_guard lk(mu_);
    ++stats_.kept_answers;
}

MetaCache::Stats MetaCache::stats() const {
    std::lock_guard lk(mu_);
    return stats_;
}

void MetaCache::note_served() noexcept {
    std::lock_guard lk(mu_);
    ++stats_.listings_served;
}

} // namespace overcache::cache
