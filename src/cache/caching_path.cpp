// DOC: the caching DataPath: wires the mechanisms of the cache to the
// adapter's calls. Reads and fills: read_path.cpp; changes of bytes:
// write_path.cpp; file records and the coherency rule: file_records.cpp;
// the files in use: file_table.cpp; bucket state: store/allocator.cpp;
// reclaim and moving GC: bg/gc.cpp with cache/mover.cpp. Here: open (close-to-open check), getattr and
// attribute changes (a backing change noticed there drops the file's
// extents and asks the kernel to drop its pages), unlink, invalidate,
// stats and stop.
// Lock order: FileState::write_mu, FileState::mu, the Allocator's locks;
// the file table's and the read path's mutexes are leaves.
#include "overcache/cache/caching_path.hpp"

#include "backing/backing_fs.hpp"
#include "backing/file_ops.hpp"
#include "cache/backing_lock.hpp"
#include "cache/attr_change.hpp"
#include "cache/cache_core.hpp"
#include "cache/conflict_copy.hpp"
#include "cache/live_resize.hpp"
#include "cache/meta_budget.hpp"
#include "cache/mover.hpp"
#include "cache/pin.hpp"
#include "cache/prefetcher.hpp"
#include "cache/read_path.hpp"
#include "cache/write_path.hpp"
#include "cache/writeback.hpp"
#include "overcache/bg/gc.hpp"
#include "overcache/meta/key_codec.hpp"
#include "util/log.hpp"

#include <algorithm>
#include <cmath>
#include <future>
#include <fcntl.h>
#include <sys/statfs.h>

namespace overcache::cache {
namespace {

// Buckets only GC's write point may take: 1 %, at least 1, at most 8.
std::uint32_t reserve_for(std::uint64_t total) {
    return static_cast<std::uint32_t>(std::clamp<std::uint64_t>(total / 100, 1, 8));
}

} // namespace

CacheCore::CacheCore(std::unique_ptr<store::CacheDevice> device, const CachingParams& params)
    : dev(std::move(device)), p([&] {
          CachingParams q = params;
          q.fill_size = std::min<std::uint64_t>(q.fill_size, dev->superblock().bucket_size);
          return q;
      }()),
      alloc(dev->meta(), static_cast<std::uint32_t>(dev->superblock().bucket_count),
            dev->superblock().bucket_size, reserve_for(dev->superblock().bucket_count),
            dev->block_size()),
      index(*dev, alloc), records(dev->meta(), index, dirty, p.backing_root), policy(dev->meta()),
      names(
          dev->meta(), [this](int fd, const struct stat& st) { return key_of(fd, st); },
          [this](dev_t d, ino_t i) { return known_key(d, i); }, p.dir_settle),
      budget(store::ErrorBudgetParams{static_cast<double>(p.io_error_limit),
                                      std::chrono::seconds(p.io_error_halflife_s)}) {
    alloc.set_space(dev->space()); // before the bucket records are loaded
}

void CacheCore::device_error(const Error& e) {
    if (budget.record_error()) {
        degraded.store(true);
        index.stop_device_reads();
        // The count decays between errors: 3 errors read back as 2.999...
        const auto errors = static_cast<std::uint64_t>(std::llround(budget.error_count()));
        log::error("cache: the cache device failed ", errors,
                   " times recently (last: ", to_string(e),
                   "); running as a passthrough until the next mount (cache_state degraded)");
    }
}

Result<void> CacheCore::sync_dirty() {
    if (auto r = dev->sync(); !r) {
        device_error(r.error());
        return r;
    }
    return dev->meta().sync_wal();
}

void CacheCore::note_file_mode(const meta::FileKey& k, std::optional<config::CacheMode> m) {
    std::lock_guard lk(mode_mu_);
    if (m)
        file_modes_[{k.fsid, k.ino}] = *m;
    else
        file_modes_.erase({k.fsid, k.ino});
}

void CacheCore::prune_file_modes() {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> keys;
    {
        std::lock_guard lk(mode_mu_);
        for (const auto& [id, m] : file_modes_)
            keys.push_back(id);
    }
    for (const auto& id : keys) {
        const meta::FileKey k{id.first, id.second};
        if (dirty.find(k) || files.find(k))
            continue; // still dirty or in use: writeback may ask
        std::lock_guard lk(mode_mu_);
        file_modes_.erase(id);
    }
}

config::CacheMode CacheCore::file_mode(const meta::FileKey& k) const {
    {
        std::lock_guard lk(mode_mu_);
        if (auto it = file_modes_.find({k.fsid, k.ino}); it != file_modes_.end())
            return it->second;
    }
    return p.mode;
}

std::optional<meta::FileKey> CacheCore::known_key(dev_t st_dev, ino_t ino) {
    std::lock_guard lk(fsid_mu_);
    if (auto it = fsids_.find(st_dev); it != fsids_.end())
        return meta::FileKey{it->second, static_cast<std::uint64_t>(ino)};
    return std::nullopt;
}

void CacheCore::watch_backing(BackingWatch w) {
    std::unique_lock lk(backing_watch_mu_);
    backing_watch_idle_.wait(lk, [this] { return backing_watch_users_ == 0; });
    backing_watch_ = std::move(w);
}

void CacheCore::end_backing_watch_use() {
    std::lock_guard lk(backing_watch_mu_);
    if (--backing_watch_users_ == 0)
        backing_watch_idle_.notify_all();
}

// unsettled() reads an atomic of the gate's: asked with the mutex held.
bool CacheCore::backing_unsettled() const {
    std::lock_guard lk(backing_watch_mu_);
    return backing_watch_.unsettled && backing_watch_.unsettled();
}

void CacheCore::close_backing_fd(UniqueFd fd) {
    // post() runs the job here when the gate cannot take it (offline_ok=0):
    // a close that waits for the backing, so not under the mutex.
    std::function<void(std::function<void()>)> post;
    {
        std::lock_guard lk(backing_watch_mu_);
        post = backing_watch_.post;
        if (post)
            ++backing_watch_users_;
    }
    if (!post)
        return; // `fd` closes here
    struct Used {
        CacheCore& core;
        ~Used() { core.end_backing_watch_use(); }
    } used{*this};
    post([f = std::make_shared<UniqueFd>(std::move(fd))] {});
}

meta::FileKey CacheCore::key_of(int fd, const struct stat& st) {
    std::uint64_t fsid = static_cast<std::uint64_t>(st.st_dev); // fallback: st_dev
    {
        std::lock_guard lk(fsid_mu_);
        if (auto it = fsids_.find(st.st_dev); it != fsids_.end())
            return meta::FileKey{it->second, static_cast<std::uint64_t>(st.st_ino)};
    }
    struct statfs sfs {};
    if (::fstatfs(fd, &sfs) == 0) {
        std::uint64_t a = static_cast<std::uint32_t>(sfs.f_fsid.__val[0]);
        std::uint64_t b = static_cast<std::uint32_t>(sfs.f_fsid.__val[1]);
        if (a != 0 || b != 0)
            fsid = (a << 32) | b;
    }
    std::lock_guard lk(fsid_mu_);
    fsids_.emplace(st.st_dev, fsid);
    return meta::FileKey{fsid, static_cast<std::uint64_t>(st.st_ino)};
}

namespace {

store::ReplacementPolicy to_store(config::ReplacementPolicy p) {
    switch (p) {
    case config::ReplacementPolicy::fifo:
        return store::ReplacementPolicy::fifo;
    case config::ReplacementPolicy::random:
        return store::ReplacementPolicy::random;
    case config::ReplacementPolicy::lru:
        break;
    }
    return store::ReplacementPolicy::lru;
}

bg::GcParams gc_params(std::uint32_t total, std::uint32_t reserve, const CachingParams& p) {
    bg::GcParams g;
    g.low_free = std::max<std::size_t>(reserve + 1, std::uint64_t{total} * p.gc_low_percent / 100);
    g.high_free =
        std::max<std::size_t>(g.low_free + 1, std::uint64_t{total} * p.gc_high_percent / 100);
    g.high_free = std::min<std::size_t>(g.high_free, total);
    return g;
}

// What the mount shows of a file ahead of the backing: the cache's size and
// mtime (ctime no older), and blocks for at least its bytes.
void overlay(struct stat& st, const DirtyView& v) {
    st.st_size = static_cast<off_t>(v.size);
    st.st_mtim.tv_sec = v.mtime_ns / 1000000000;
    st.st_mtim.tv_nsec = v.mtime_ns % 1000000000;
    if (st.st_ctim.tv_sec < st.st_mtim.tv_sec ||
        (st.st_ctim.tv_sec == st.st_mtim.tv_sec && st.st_ctim.tv_nsec < st.st_mtim.tv_nsec))
        st.st_ctim = st.st_mtim;
    const auto blocks = static_cast<blkcnt_t>((v.size + 4095) / 4096 * 8);
    st.st_blocks = std::max(st.st_blocks, blocks);
}

struct GcWatermarks {
    std::atomic<std::size_t> high_free{0}; // buckets GC keeps free
    // Orders recomputations (a gc_*_percent change, a resize), so the last
    // one stored is computed from the latest count and percents. A leaf.
    std::mutex mu;
};

class CachingPath final : public DataPath, public CacheControl {
public:
    CachingPath(std::unique_ptr<store::CacheDevice> dev, const CachingParams& p,
                bg::Executors& ex, CacheHooks hooks);
    ~CachingPath() override {
        stop();
        // Close the index (it waits for its compactions, which call the
        // filter above) while the allocator is still there.
        core_.dev->meta().set_extent_filter({});
        core_.index.release_cursors();
        core_.dev.reset();
    }

    using DataPath::open;
    Result<OpenOut> open_offline(const struct stat& st, int open_flags,
                                 const FilePolicy& policy) override {
        return open_without_backing(st, open_flags, policy, false);
    }
    Result<OpenOut> open_kept(const struct stat& st, int open_flags,
                              const FilePolicy& policy) override {
        return open_without_backing(st, open_flags, policy, true);
    }
    Result<void> attach_backing(OpenFile& f, int fd, const struct stat& st) override;
    bool attrs_current(const struct stat& st) override;
    Result<OpenOut> open(int fd, const struct stat& st, int open_flags,
                         const FilePolicy& policy) override;
    bool has_path_settings() const override { return core_.policy.any(); }
    MetaCache* listings() override { return &core_.names; }
    std::optional<PathSettings> path_settings(FileRef file) override {
        if (!core_.policy.any())
            return std::nullopt;
        if (file.fd < 0) {
            auto k = core_.known_key(file.st.st_dev, file.st.st_ino);
            return k ? core_.policy.get(*k) : std::nullopt;
        }
        return core_.policy.get(core_.key_of(file.fd, file.st));
    }
    Result<void> set_path_settings(FileRef file, const PathSettings& s) override {
        return core_.policy.set(core_.key_of(file.fd, file.st), s);
    }
    Result<void> repin(FileRef file, bool pin) override;
    using DataPath::read;
    Result<ReadOut> read(OpenFile& f, char* buf, std::size_t size, off_t off,
                         const BackingRead& backing) override {
        return reader_.read(static_cast<CachedFile&>(f), buf, size, off, backing);
    }
    void write(OpenFile& f, WriteSource& src, off_t off, Done<std::size_t> done) override {
        writer_.write(static_cast<CachedFile&>(f), src, off, std::move(done));
        gc_.kick();
    }
    // Writeback kicks itself only when dirty data passed its target.
    void kick_writeback_if_over();
    // invalidate: writes the file back if dirty, then drops its extents.
    Result<void> drop_cached(FileRef file);
    void fsync(OpenFile& f, bool datasync, Done<void> done) override {
        writer_.fsync(static_cast<CachedFile&>(f), datasync, std::move(done));
    }
    Result<ChangeOut> truncate(int fd, bool fd_is_open, std::uint64_t size) override {
        return writer_.truncate(fd, fd_is_open, size);
    }
    Result<void> fallocate(OpenFile& f, int mode, off_t off, off_t len) override {
        return writer_.fallocate(static_cast<CachedFile&>(f), mode, off, len);
    }
    Result<std::size_t> copy_file_range(OpenFile& in, off_t off_in, OpenFile& out, off_t off_out,
                                        std::size_t len, unsigned flags) override {
        return writer_.copy_file_range(static_cast<CachedFile&>(in), off_in,
                                       static_cast<CachedFile&>(out), off_out, len, flags);
    }
    Result<off_t> lseek(OpenFile& f, off_t off, int whence) override {
        return writer_.lseek(static_cast<CachedFile&>(f), off, whence);
    }
    ChangeOut getattr(FileRef file, struct stat& st) override;
    ChangeOut check_attrs(FileState& fs, FileRef file);
    void show_attrs(FileRef file, struct stat& st) override {
        if (core_.dirty.size() == 0)
            return;
        // Without a descriptor (the backing offline) only a filesystem
        // seen before has a key: learning one needs the backing.
        const auto key = file.fd >= 0 ? std::optional(core_.key_of(file.fd, file.st))
                                       : core_.known_key(file.st.st_dev, file.st.st_ino);
        if (!key)
            return;
        if (auto v = core_.dirty.find(*key))
            overlay(st, *v);
    }
    bool keep_mtime(FileRef file, const struct timespec& mtime) override;
    Result<std::unique_ptr<AttrChange>> begin_attr_change(FileRef file) override {
        return FileAttrChange::begin(core_, core_.files.acquire(core_.key_of(file.fd, file.st)),
                                     file.fd);
    }
    void removed(FileRef file) override;
    std::vector<std::pair<std::string, std::string>> stats() const override;
    void reset_stats() override;
    Result<FileCacheInfo> file_info(FileRef file) override;
    config::CacheMode mode() const override { return core_.p.mode; }
    void invalidate(FileRef file, Done<void> done) override { done(drop_cached(file)); }
    using DataPath::prefetch;
    void prefetch(FileRef file, const FilePolicy& policy, Done<void> done) override;
    // Clean bytes the cache holds at most now: the buckets GC keeps in use
    // (all but its high watermark of free ones), less the dirty data.
    std::uint64_t room_bytes() const;
    void apply_settings(const config::Config& c) override;
    void watch_backing(BackingWatch w) override { core_.watch_backing(std::move(w)); }
    Result<void> save_setting(const std::string& name, const std::string& value) override;
    Result<std::vector<std::pair<std::string, std::string>>> saved_settings() const override;
    void flush(Done<void> done) override;
    void stop() override;
    std::uint64_t stop_progress() const override { return writeback_.moved(); }
    Result<void> sync_for_exit() override { return core_.sync_dirty(); }
    void resize(std::uint64_t size, Done<std::uint64_t> done) override {
        resize_.resize(size, std::move(done));
    }
    std::uint64_t cache_size() const override { return core_.dev->cache_size(); }

    void gc_now() override {
        meta_budget_.check_now();
        reader_.drain();
        gc_.trigger();
        gc_.wait_idle();
    }
    void drain_fills() override { reader_.drain(); }
    void writeback_now() override { writeback_.pass_now(); }

private:
    CacheHooks hooks_;
    CacheCore core_;
    Mover mover_; // moving GC's half that knows files: before gc_, which calls it
    bg::Gc gc_;
    ReadPath reader_;
    WritePath writer_;
    Writeback writeback_;
    GcWatermarks wm_;       // what room_bytes() leaves free; the gc_ params' values
    LiveResize resize_;     // `set cache_size`; uses gc_
    MetaBudget meta_budget_; // metadata_max
    // After a live resize: the reserve and GC's watermarks follow the count.
    void sizes_changed();
    // open_offline (`lazy` false) and open_kept (true).
    Result<OpenOut> open_without_backing(const struct stat& st, int open_flags,
                                         const FilePolicy& policy, bool lazy);
    Prefetcher prefetcher_; // last: its thread uses the rest until stop()
};

bool CachingPath::keep_mtime(FileRef file, const struct timespec& mtime) {
    if (core_.dirty.size() == 0)
        return false;
    StateRef ref = core_.files.acquire(core_.key_of(file.fd, file.st));
    FileState& st = *ref;
    // Only mu: this comes with every fsync and close, and must not wait for
    // a writeback batch's backing I/O (backing_mu). A batch in flight has
    // read the old mtime; counted as a write, the new one keeps the file
    // ahead when that batch ends, and the next batch puts it on the backing.
    std::lock_guard lk(st.mu);
    if (auto r = core_.records.load(st); !r || !st.rec || (st.rec->flags & meta::kFileAhead) == 0)
        return false;
    ++st.write_seq;
    meta::FileRecord rec = *st.rec;
    rec.cache_mtime_ns = static_cast<std::int64_t>(mtime.tv_sec) * 1000000000 + mtime.tv_nsec;
    auto t = core_.index.txn();
    if (auto r = core_.records.commit(st, t, rec); !r) {
        log::warn("cache: cannot update a file record: ", to_string(r.error()));
        return false;
    }
    return true;
}

CachingPath::CachingPath(std::unique_ptr<store::CacheDevice> dev, const CachingParams& p,
                         bg::Executors& ex, CacheHooks hooks)
    : hooks_(std::move(hooks)), core_(std::move(dev), p), mover_(core_),
      gc_(ex.gc().make_strand(), core_.alloc, core_.dev->meta(),
          gc_params(core_.alloc.bucket_count(), core_.alloc.reserve(), core_.p), &mover_),
      reader_(core_, ex.fill().executor(), hooks_),
      writer_(core_, hooks_, ex.fill().make_strand()),
      writeback_(core_, ex.writeback().make_strand()),
      wm_{static_cast<std::size_t>(
              gc_params(core_.alloc.bucket_count(), core_.alloc.reserve(), core_.p).high_free),
          {}},
      resize_(core_, gc_, ex.gc().make_strand(), [this] { sizes_changed(); }),
      meta_budget_(core_, ex.meta().make_strand()),
      prefetcher_(core_,
                  Prefetcher::Deps{reader_, hooks_,
                                   [this](int fd, const struct stat& st, const FilePolicy& policy) {
                                       return open(fd, st, O_RDONLY, policy);
                                   },
                                   [this] { gc_now(); }, [this] { return room_bytes(); }}) {
    // Start-up reads the bucket records (one per bucket at most), never the
    // data device or the extents.
    if (auto r = core_.alloc.load_all(); !r)
        log::error("cache: reading bucket records: ", to_string(r.error()));
    if (auto r = core_.policy.load(); !r)
        log::error("cache: reading per-path settings: ", to_string(r.error()));
    if (auto r = core_.records.start(); !r)
        log::error("cache: reading the file id counter: ", to_string(r.error()));
    core_.index.after_device_write = hooks_.after_device_write;
    core_.alloc.before_reclaim = hooks_.before_reclaim;
    core_.alloc.set_replacement(to_store(core_.p.replacement_policy));
    core_.alloc.after_free = [this] { writer_.wake_parked(); };
    resize_.stall_limit = std::chrono::milliseconds(core_.p.resize_stall_limit_ms);
    resize_.between_rounds = hooks_.between_resize_rounds;
    if (hooks_.after_compare)
        core_.records.after_compare = [h = hooks_.after_compare](FileState&) { h(); };
    // Stale extents (their bucket's gen moved on) leave the index when it
    // compacts: nobody deletes a key it read earlier.
    core_.dev->meta().set_extent_filter(
        [this](std::uint32_t bucket, std::uint32_t gen) { return core_.alloc.current(bucket, gen); });
    core_.kick_gc = [this] { gc_.kick(); };
    meta_budget_.start();
    core_.index.on_io_error = [this](const Error& e) { core_.device_error(e); };
    core_.write_back_file = [this](FileState& st) { return writeback_.write_back_file(st); };
    core_.kick_writeback = [this] { kick_writeback_if_over(); };
    writeback_.hooks_before_copy = hooks_.before_writeback_copy;
    writeback_.hooks_before_batch = hooks_.before_writeback_batch;
    core_.records.on_conflict = [this](FileState& st, const struct stat& b) {
        log::debug("conflict: recorded size ", st.rec->size, " mtime ", st.rec->mtime_ns, " ctime ",
                   st.rec->ctime_ns, " ino ", st.rec->ino, "; backing size ", b.st_size, " mtime ",
                   b.st_mtim.tv_sec, ".", b.st_mtim.tv_nsec, " ctime ", b.st_ctim.tv_sec, ".",
                   b.st_ctim.tv_nsec, " ino ", b.st_ino, " flags ", st.rec->flags);
        // Someone else changed the file while we held dirty data for it:
        // the backing keeps theirs, ours goes beside the cache.
        const std::string name = st.rec->path.empty() ? "inode " + std::to_string(st.key.ino)
                                                       : st.rec->path;
        auto copy = save_dirty_copy(core_, st, core_.p.lost_found_dir);
        if (!copy) {
            log::error("writeback conflict: ", name, " changed on the backing while the cache "
                       "held dirty data for it, and that data could not be saved (",
                       to_string(copy.error()), "); both kept, the cache's served");
            return false;
        }
        ++core_.c.writeback_conflicts;
        log::warn("writeback conflict: ", name, " changed on the backing while the cache held "
                  "dirty data for it; the backing's version is kept, the cache's is in ", *copy);
        return true;
    };
    // Recovery reads the dirty list from the index, never the cache device.
    if (auto r = core_.dirty.load(core_.dev->meta()); !r)
        log::error("cache: reading the dirty list: ", to_string(r.error()));
    gc_.kick();
    writeback_.start();
}

void CachingPath::sizes_changed() {
    std::lock_guard lk(wm_.mu);
    const std::uint32_t total = core_.alloc.bucket_count();
    core_.alloc.set_reserve(reserve_for(total));
    const auto g = gc_params(total, core_.alloc.reserve(), core_.p);
    gc_.set_watermarks(g.low_free, g.high_free);
    wm_.high_free.store(g.high_free);
}

void CachingPath::kick_writeback_if_over() {
    const std::uint64_t capacity =
        std::uint64_t{core_.alloc.bucket_count()} * core_.alloc.bucket_size();
    if (core_.alloc.dirty_bytes() > capacity / 100 * core_.p.writeback_percent)
        writeback_.kick();
}

Result<OpenOut> CachingPath::open(int fd, const struct stat& st, int open_flags,
                                  const FilePolicy& policy) {
    const meta::FileKey key = core_.key_of(fd, st);
    core_.note_file_mode(key, policy.mode);
    StateRef ref = core_.files.acquire(key);
    FileState& fs = *ref;
    bool keep = false;
    // The adapter's open has emptied the backing already: a write of ours in
    // flight would otherwise cache its bytes after our drop, past the end.
    std::unique_lock<std::mutex> wl;
    if ((open_flags & O_TRUNC) != 0)
        wl = std::unique_lock(fs.write_mu);
    {
        // Writeback copies under backing_mu: the comparison below must not
        // see half a copy, and an O_TRUNC must not be undone by one.
        auto bl = lock_backing(fs);
        if (!bl)
            return fail(std::move(bl).error());
        std::lock_guard lk(fs.mu);
        // The caller's attributes were taken before these locks; a writeback
        // batch may have moved the backing since: compare what it is now.
        struct stat now = st;
        (void)backing::stat_fd(fd, now);
        if ((open_flags & O_TRUNC) != 0 && (open_flags & O_ACCMODE) != O_RDONLY &&
            now.st_size != 0) {
            // A writeback batch wrote to the file after the open emptied it
            // (it may even have finished and found the file clean): empty
            // it again, under the lock that keeps writeback out.
            if (backing::truncate_file(fd, true, 0))
                (void)backing::stat_fd(fd, now);
        }
        if (auto r = core_.records.load(fs); !r) {
            log::warn("cache: ", to_string(r.error()), "; serving the file uncached");
            fs.uncached.store(true);
        } else if (fs.rec && (open_flags & O_TRUNC) != 0) {
            // The open itself emptied the file: our change, not one behind
            // the mount.
            if (auto dropped = core_.records.drop(fs, now); !dropped)
                log::warn("cache: ", to_string(dropped.error()));
        } else if (fs.rec) {
            auto changed = core_.records.revalidate(fs, now);
            if (!changed)
                log::warn("cache: ", to_string(changed.error()));
            const bool stale_pages = (fs.rec && (fs.rec->flags & meta::kFileKernelPagesStale) != 0);
            keep = changed && !*changed && !stale_pages;
            if (stale_pages)
                (void)core_.records.set_flags(fs, 0, meta::kFileKernelPagesStale);
        } else if (auto made = core_.records.create(fs, fd, now); !made) {
            log::warn("cache: cannot record a file; serving it uncached: ",
                      to_string(made.error()));
        }
        if (!fs.rec)
            fs.uncached.store(true);
        if (!fs.ahead.load())
            fs.size.store(static_cast<std::uint64_t>(now.st_size));
        // The pin it runs under now (a rename may have moved it into or out
        // of a pinned tree): its extents follow (pin.cpp).
        if (auto r = apply_pin(core_, fs, policy.pin.value_or(false)); !r)
            log::warn("cache: cannot mark the extents of a file for its pin: ",
                      to_string(r.error()));
    }
    return OpenOut{
        std::make_unique<CachedFile>(fd, std::move(ref), (open_flags & O_DSYNC) != 0, policy),
        keep};
}

Result<OpenOut> CachingPath::open_without_backing(const struct stat& st, int open_flags,
                                                  const FilePolicy& policy, bool lazy) {
    const int never_cached = lazy ? ENODATA : EIO;
    const char* const why = lazy ? "the file was never cached"
                                 : "the backing is offline and the file was never cached";
    // The file's key needs its filesystem's id, which only a backing call
    // could learn for a filesystem never seen.
    const auto key = core_.known_key(st.st_dev, st.st_ino);
    if (!key)
        return fail_sys(never_cached, why);
    // Online, an open as any other to the settings: a dirty file that left
    // writeback is written back now.
    if (lazy)
        core_.note_file_mode(*key, policy.mode);
    StateRef ref = core_.files.acquire(*key);
    FileState& fs = *ref;
    bool keep = false;
    {
        // No backing_mu: a writeback batch stuck in the backing holds it.
        std::lock_guard lk(fs.mu);
        if (auto r = core_.records.load(fs); !r)
            return fail(std::move(r).error());
        if (!fs.rec)
            return fail_sys(never_cached, why);
        if (fs.ahead.load()) {
            // Dirty: the cache holds the newest version; its size is ours.
            keep = true;
        } else {
            // Clean: the cache's extents must be of the version the mount
            // last saw (`st`); if not they go, and reads fail.
            auto changed = core_.records.revalidate(fs, st);
            if (!changed)
                return fail(std::move(changed).error());
            keep = !*changed && (fs.rec->flags & meta::kFileKernelPagesStale) == 0;
            if (fs.opens.load() == 0)
                fs.size.store(static_cast<std::uint64_t>(st.st_size));
        }
        // The pin it runs under now, as at open().
        if (lazy && fs.rec)
            if (auto r = apply_pin(core_, fs, policy.pin.value_or(false)); !r)
                log::warn("cache: cannot mark the extents of a file for its pin: ",
                          to_string(r.error()));
    }
    (void)open_flags;
    return OpenOut{std::make_unique<CachedFile>(-1, std::move(ref), false, policy, lazy), keep};
}

bool CachingPath::attrs_current(const struct stat& st) {
    const auto key = core_.known_key(st.st_dev, st.st_ino);
    if (!key)
        return true; // a filesystem never seen: nothing cached of it
    StateRef ref = core_.files.acquire(*key);
    std::lock_guard lk(ref->mu);
    if (auto r = core_.records.load(*ref); !r)
        return false; // cannot tell: ask the backing
    // The record holds the backing's attributes as the cache last saw
    // them: after a writeback of ours, or a change found at an open, they
    // moved on from what was kept.
    return !ref->rec || same_file(*ref->rec, st);
}

Result<void> CachingPath::attach_backing(OpenFile& f, int fd, const struct stat& st) {
    auto& file = static_cast<CachedFile&>(f);
    FileState& fs = file.state();
    {
        // As at open: the comparison must not see half a writeback copy.
        auto bl = lock_backing(fs);
        if (!bl)
            return fail(std::move(bl).error());
        std::lock_guard lk(fs.mu);
        struct stat now = st;
        (void)backing::stat_fd(fd, now);
        if (fs.rec && !fs.ahead.load()) {
            // Changed behind the mount since it was kept: the cache's
            // extents of the old version go, and the rest of this open
            // reads the new one.
            if (auto changed = core_.records.revalidate(fs, now); !changed)
                log::warn("cache: ", to_string(changed.error()));
        }
        if (!fs.ahead.load())
            fs.size.store(static_cast<std::uint64_t>(now.st_size));
    }
    file.attach(fd);
    return {};
}

ChangeOut CachingPath::getattr(FileRef file, struct stat& st) {
    ChangeOut out;
    const meta::FileKey key = core_.key_of(file.fd, file.st);
    // Only files in use are compared: a file that is not will be at its
    // next open.
    cache::StateRef ref = core_.files.find(key);
    if (ref)
        out = check_attrs(*ref, file);
    if (auto v = core_.dirty.find(key))
        overlay(st, *v);
    return out;
}

ChangeOut CachingPath::check_attrs(FileState& fs, FileRef file) {
    ChangeOut out;
    FileState* ref = &fs;
    // A change of ours in flight explains any difference; it checks itself.
    std::unique_lock wl(ref->write_mu, std::try_to_lock);
    if (!wl.owns_lock())
        return out;
    std::unique_lock bl(ref->backing_mu, std::try_to_lock);
    if (!bl.owns_lock())
        return out; // writeback is copying: the difference may be its own
    std::lock_guard lk(ref->mu);
    if (!ref->loaded || !ref->rec)
        return out;
    // The caller's attributes were taken before these locks: a writeback
    // batch or a change of ours may have moved the backing since. Compare
    // what the backing holds now.
    struct stat now {};
    if (backing::stat_fd(file.fd, now) != 0)
        return out;
    auto changed = core_.records.revalidate(*ref, now);
    if (changed && *changed) {
        ++core_.c.backing_changes;
        ref->size.store(static_cast<std::uint64_t>(now.st_size));
        out.backing_changed = true;
    }
    return out;
}

void CachingPath::removed(FileRef file) {
    const meta::FileKey key = core_.key_of(file.fd, file.st);
    // Its per-path settings go with its last name: a later file that gets
    // the same inode number must not inherit them.
    if (core_.policy.get(key))
        if (auto r = core_.policy.set(key, PathSettings{}); !r)
            log::warn("cache: dropping the settings of a removed file: ", to_string(r.error()));
    cache::StateRef ref = core_.files.acquire(key);
    // The file's write lock is held from the look at its state to the
    // removal of its record: a write of an open handle that commits dirty
    // bytes in between would have them dropped with the record, unwritten,
    // and its holder read the backing's older ones. A write that waits here
    // finds no record afterwards and goes to the backing.
    std::lock_guard wl(ref->write_mu);
    if (ref->opens.load() > 0) {
        // Still open: the file lives on without a name, and whoever holds
        // it reads the backing from now on, which must have its bytes.
        // Writeback into the nameless inode is ours, not an orphan's.
        ref->unlinked_here.store(true);
    }
    if (ref->opens.load() > 0 && ref->ahead.load()) {
        if (auto bl = lock_backing(*ref)) {
            // The unlink moved the ctime: ours, not a change behind the mount.
            std::lock_guard lk(ref->mu);
            struct stat now {};
            if (ref->rec && backing::stat_fd(file.fd, now) == 0) {
                meta::FileRecord rec = *ref->rec;
                take_attrs(rec, now);
                auto t = core_.index.txn();
                (void)core_.records.commit(*ref, t, rec);
            }
        }
        if (auto r = core_.write_back_file(*ref); !r) {
            // Its holders read the cache's bytes while the record stays, and
            // writeback puts them into the nameless inode once it can.
            log::warn("cache: writing back an unlinked file that is still open: ",
                      to_string(r.error()), "; its dirty data stays in the cache until then");
            return;
        }
    }
    if (hooks_.before_unlinked_drop)
        hooks_.before_unlinked_drop();
    auto bl = lock_backing(*ref);
    if (!bl) {
        // Writeback is stuck in the backing with this file. Its record
        // stays: writeback finds the file unlinked once the backing answers
        // (its dirty data then goes to lost+found, never lost), and a new
        // file that gets its inode number is a change behind the mount.
        log::warn("cache: inode ", key.ino, " was unlinked while writeback of it waits for the "
                  "backing (", to_string(bl.error()), "); its record is kept until then");
        return;
    }
    std::lock_guard lk(ref->mu);
    if (auto r = core_.records.load(*ref); !r)
        log::warn("cache: ", to_string(r.error()));
    if (auto r = core_.records.remove(*ref); !r)
        log::warn("cache: dropping an unlinked file: ", to_string(r.error()));
    ref->wb_fd.reset();
    // Its inode number may come back with a new file at once.
    core_.files.detach(*ref);
}

std::vector<std::pair<std::string, std::string>> CachingPath::stats() const {
    const auto& sb = core_.dev->superblock();
    const auto gs = gc_.stats();
    const MetaCache::Stats ls = core_.names.stats();
    const auto as = core_.alloc.stats();
    const auto hist = core_.alloc.histogram();
    const auto ws = writeback_.stats();
    const auto ps = writer_.parked_stats();
    const auto wset = core_.working_set.estimate();
    const auto& c = core_.c;
    const std::uint64_t h = c.hits, m = c.misses;
    auto u = [](std::uint64_t v) { return std::to_string(v); };
    return {
        {"cache_state", core_.degraded ? "degraded" : "running"},
        {"cache_hits", u(h)},
        {"cache_misses", u(m)},
        {"cache_hit_ratio", u(h + m == 0 ? 0 : h * 100 / (h + m))},
        {"cache_hit_bytes", u(c.hit_bytes)},
        {"cache_miss_bytes", u(c.miss_bytes)},
        {"cache_bypass_hits", u(c.bypass_hits)},
        {"cache_bypass_misses", u(c.bypass_misses)},
        {"cache_bypass_bytes", u(c.bypass_bytes)},
        {"cache_read_errors", u(c.read_errors)},
        {"cache_read_latency_us", u(core_.dev->read_latency_us())},
        {"cache_write_latency_us", u(core_.dev->write_latency_us())},
        {"congested_bypasses", u(c.congested_bypasses)},
        {"cache_stale_reads", u(c.stale_reads)},
        {"cache_read_bytes", u(core_.index.read_bytes())},
        {"cache_io_errors", u(core_.index.io_errors())},
        {"buckets_total", u(core_.alloc.bucket_count())},
        {"buckets_free", u(core_.alloc.free_count())},
        {"buckets_reserve", u(core_.alloc.reserve())},
        {"buckets_pinned", u(as.pinned)},
        {"cache_used_bytes", u(as.used_bytes)},
        {"cache_live_bytes", u(as.live_bytes)},
        {"dirty_data", u(as.dirty_bytes)},
        {"dirty_files", u(core_.dirty.size())},
        {"buckets_dirty", u(hist.dirty)}, // with unused and clean: one count of all
        {"buckets_unused", u(hist.unused)},
        {"buckets_clean", u(hist.clean)},
        {"bucket_age_min", u(hist.age[0])},
        {"bucket_age_q25", u(hist.age[1])},
        {"bucket_age_median", u(hist.age[2])},
        {"bucket_age_q75", u(hist.age[3])},
        {"bucket_age_max", u(hist.age[4])},
        {"writes_dirty", u(c.writes_dirty)},
        {"writes_around", u(c.writes_around)},
        {"foreground_waits", u(ps.waits)},
        {"foreground_waiting", u(ps.waiting)},
        {"foreground_wait_max_ms", u(ps.wait_max_ms)},
        {"foreground_waits_around", u(ps.written_around)},
        {"writeback_rate", ws.rate == UINT64_MAX ? "max" : u(ws.rate)},
        {"writeback_target", u(ws.target)},
        {"writeback_bytes", u(ws.bytes)},
        {"writeback_errors", u(ws.errors)},
        {"last_writeback_error", ws.last_error.empty() ? "-" : ws.last_error},
        {"writeback_conflicts", u(c.writeback_conflicts)},
        {"writeback_lost_bytes", u(ws.lost)},
        {"fills", u(c.fills)},
        {"fills_skipped_full", u(c.fills_skipped_full)},
        {"fills_skipped_busy", u(c.fills_skipped_busy)},
        {"fills_skipped_unpromoted", u(c.fills_skipped_unpromoted)},
        {"fills_pending", u(reader_.pending())},
        {"prefetch_bytes", u(c.prefetch_bytes)},
        {"prefetch_files_queued", u(prefetcher_.queued())},
        {"pinned_bytes", u(as.pinned_bytes)},
        {"pinned_cap", u(core_.alloc.pinned_cap())},
        {"pin_over_cap", u(c.pin_over_cap)},
        {"cache_miss_collisions", u(c.fills_raced)},
        {"fill_errors", u(c.fill_errors)},
        {"writes_cached", u(c.writes_cached)},
        {"writes_punched", u(c.writes_punched)},
        {"files_tracked", u(core_.files.size())},
        {"files_invalidated", u(core_.records.invalidated())},
        {"backing_changes_seen", u(c.backing_changes)},
        {"listings_recorded", u(ls.listings_recorded)},
        {"listings_changed", u(ls.listings_changed)},
        {"listings_served", u(ls.listings_served)},
        {"attrs_recorded", u(ls.attrs_recorded)},
        {"attrs_served", u(ls.attrs_served)},
        {"kept_answers", u(ls.kept_answers)},
        {"metadata_bytes", u(core_.names.bytes())},
        {"metadata_max", u(meta_budget_.budget())},
        {"metadata_trims", u(ls.trims)},
        {"listings_dropped", u(ls.listings_dropped)},
        {"attrs_dropped", u(ls.attrs_dropped)},
        {"gc_runs", u(gs.runs)},
        {"gc_last_duration_us", u(gs.last_run_us)},
        {"gc_buckets_reclaimed", u(gs.buckets_reclaimed)},
        {"gc_moved_bytes", u(gs.moved_bytes)},
        {"gc_buckets_moved", u(gs.buckets_moved)},
        {"gc_buckets_given_back", u(gs.buckets_given_back)},
        {"gc_stale_extents_removed", u(core_.dev->meta().stale_extents_dropped())},
        {"bucket_size", u(sb.bucket_size)},
        {"cache_size", u(core_.dev->cache_size())},
        {"cache_allocated_bytes", u(as.backed_buckets * sb.bucket_size)},
        {"fill_size", u(core_.p.fill_size)},
        {"index_memory_bytes", u(core_.dev->meta().memory_bytes())},
        {"five_minute.working_set_bytes", u(wset.five_minute)},
        {"hour.working_set_bytes", u(wset.hour)},
        {"day.working_set_bytes", u(wset.day)},
    };
}

void CachingPath::reset_stats() {
    core_.working_set.clear();
}

// TODO(#8): the write-back of a dirty file runs on the calling (FUSE)
// thread, as fallocate's and copy_file_range's do; it could be parked and
// finished from the writeback strand instead.
Result<void> CachingPath::drop_cached(FileRef file) {
    StateRef ref = core_.files.acquire(core_.key_of(file.fd, file.st));
    FileState& fs = *ref;
    // Under write_mu no write can make the file dirty again between the
    // write-back and the drop.
    std::lock_guard wl(fs.write_mu);
    bool dirty = false;
    {
        // A file not open now has its record read only here.
        std::lock_guard lk(fs.mu);
        if (auto r = core_.records.load(fs); !r)
            return r;
        dirty = fs.rec && (fs.rec->flags & meta::kFileAhead) != 0;
    }
    if (dirty)
        if (auto w = core_.write_back_file(fs); !w) {
            Error e = std::move(w).error();
            e.message = "writing its dirty data back first (nothing was dropped): " + e.message;
            return fail(std::move(e));
        }
    auto bl = lock_backing(fs);
    if (!bl)
        return fail(std::move(bl).error());
    std::lock_guard lk(fs.mu);
    if (auto r = core_.records.load(fs); !r)
        return r;
    if (!fs.rec)
        return {}; // never cached
    if ((fs.rec->flags & meta::kFileAhead) != 0)
        return fail_sys(EBUSY,
                        "it still has dirty data after writing it back; nothing was dropped");
    struct stat now = file.st;
    (void)backing::stat_fd(file.fd, now);
    // A new epoch: a fill in flight cannot bring the old bytes back. The
    // kernel's pages of the file go at its next open.
    return core_.records.drop(fs, now, meta::kFileKernelPagesStale);
}

Result<DataPath::FileCacheInfo> CachingPath::file_info(FileRef file) {
    FileCacheInfo info;
    StateRef ref = core_.files.acquire(core_.key_of(file.fd, file.st));
    meta::FileId fid = 0;
    {
        std::lock_guard lk(ref->mu);
        if (auto r = core_.records.load(*ref); !r)
            return fail(r.error());
        if (!ref->rec)
            return info; // never cached
        info.conflict = (ref->rec->flags & meta::kFileConflict) != 0;
        // A file changed behind the mount loses its clean extents at its
        // next open: they are not counted as cached. Dirty data (a record
        // ahead of the backing) always is.
        if ((ref->rec->flags & meta::kFileAhead) == 0 && !same_file(*ref->rec, file.st))
            return info;
        fid = ref->rec->file_id;
    }
    auto pieces = core_.index.lookup(fid, 0, UINT64_MAX);
    if (!pieces)
        return fail(pieces.error());
    for (const auto& p : *pieces) {
        // An extent whose bucket was reclaimed since is no longer there.
        if (!core_.alloc.current(p.v.bucket, p.v.gen))
            continue;
        info.cached_bytes += p.v.len;
        if ((p.v.flags & meta::kExtentDirty) != 0)
            info.dirty_bytes += p.v.len;
        ++info.extents;
    }
    return info;
}

void CachingPath::apply_settings(const config::Config& c) {
    const auto& p = core_.p;
    // Reads, writes and prefetches take the chunk size once per request;
    // extents of the old size stay valid (lookups need no alignment). The
    // option table holds it to bucket_size, which a mount checks is the
    // cache's own.
    p.fill_size.set(std::min<std::uint64_t>(c.fill_size, core_.dev->superblock().bucket_size));
    p.mode.set(c.cache_mode);
    p.sequential_cutoff.set(c.sequential_cutoff);
    p.promote_after_hits.set(c.promote_after_hits);
    p.congested_read_threshold_us.set(c.congested_read_threshold_us);
    p.congested_write_threshold_us.set(c.congested_write_threshold_us);
    p.replacement_policy.set(c.cache_replacement_policy);
    core_.alloc.set_replacement(to_store(c.cache_replacement_policy));
    p.writeback_percent.set(c.writeback_percent);
    p.writeback_delay_s.set(c.writeback_delay_s);
    p.writeback_rate_minimum.set(c.writeback_rate_minimum);
    p.writeback_running.set(c.writeback_running);
    p.fsync_to_backing.set(c.fsync_to_backing);
    p.flush_on_unmount.set(c.flush_on_unmount);
    p.writeback_wait_max_s.set(c.writeback_wait_max_s);
    writer_.set_wait_max(c.writeback_wait_max_s);
    if (p.gc_low_percent != c.gc_low_percent || p.gc_high_percent != c.gc_high_percent) {
        std::lock_guard lk(wm_.mu);
        p.gc_low_percent.set(c.gc_low_percent);
        p.gc_high_percent.set(c.gc_high_percent);
        const auto g = gc_params(core_.alloc.bucket_count(), core_.alloc.reserve(), p);
        gc_.set_watermarks(g.low_free, g.high_free);
        wm_.high_free.store(g.high_free);
    }
    // A new mode, delay, share or a resumed writeback: the next pass sees it
    // now, not at its next tick.
    writeback_.kick();
}

Result<void> CachingPath::save_setting(const std::string& name, const std::string& value) {
    auto& meta = core_.dev->meta();
    auto b = meta.batch();
    b.put(meta::Cf::meta, std::string(meta::kSettingPrefix) + name, value);
    return meta.write(b, true);
}

Result<std::vector<std::pair<std::string, std::string>>> CachingPath::saved_settings() const {
    std::vector<std::pair<std::string, std::string>> out;
    const std::string prefix(meta::kSettingPrefix);
    std::string upper = prefix;
    upper.back() = static_cast<char>(upper.back() + 1);
    auto cur = core_.dev->meta().cursor(meta::Cf::meta, upper);
    for (cur.seek(prefix); cur.valid(); cur.next())
        out.emplace_back(std::string(cur.key().substr(prefix.size())), std::string(cur.value()));
    if (auto r = cur.status(); !r)
        return fail(r.error());
    return out;
}

Result<void> CachingPath::repin(FileRef file, bool pin) {
    StateRef ref = core_.files.acquire(core_.key_of(file.fd, file.st));
    FileState& fs = *ref;
    std::lock_guard lk(fs.mu);
    if (auto r = core_.records.load(fs); !r)
        return r;
    return apply_pin(core_, fs, pin);
}

void CachingPath::prefetch(FileRef file, const FilePolicy& policy, Done<void> done) {
    if (core_.p.mode == config::CacheMode::none)
        return done(fail(Errc::BadValue, "cache_mode is none on this mount: nothing is cached"));
    if (policy.mode == config::CacheMode::none)
        return done(fail(Errc::BadValue, "the file's cache mode is none (user.overcache.mode, "
                                         "set on it or a directory above it): it is not cached"));
    if (core_.degraded.load())
        return done(
            fail_sys(EIO, "the cache is degraded (cache device errors): nothing is cached"));
    // Our own fd: the caller's may close before the prefetch runs.
    const int dup = ::fcntl(file.fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0)
        return done(fail_errno("duplicating the file's fd"));
    prefetcher_.enqueue(core_.key_of(file.fd, file.st), UniqueFd(dup), file.st, policy,
                        std::move(done));
}

std::uint64_t CachingPath::room_bytes() const {
    const std::uint64_t total = core_.alloc.bucket_count();
    const std::uint64_t keep_free =
        std::max<std::uint64_t>(wm_.high_free.load(), core_.alloc.reserve());
    const std::uint64_t buckets = total > keep_free ? total - keep_free : 0;
    const std::uint64_t bytes = buckets * core_.alloc.bucket_size();
    const std::uint64_t dirty = core_.alloc.dirty_bytes();
    return bytes > dirty ? bytes - dirty : 0;
}

void CachingPath::flush(Done<void> done) {
    writeback_.flush(std::move(done));
}

void CachingPath::stop() {
    if (core_.stopped.exchange(true))
        return;
    meta_budget_.stop();
    // A resize in flight stops first (a shrink gives its buckets back).
    resize_.stop();
    // A prefetch in flight stops between chunks (ESHUTDOWN); it holds no
    // lock the rest of stop needs.
    prefetcher_.stop();
    // Parked writes first: each is answered (around the cache), and a
    // flush below then finds their bytes where they went.
    writer_.stop();
    if (core_.p.flush_on_unmount && core_.dirty.size() > 0) {
        log::info("cache: flushing ", core_.alloc.stats().dirty_bytes,
                  " bytes of dirty data before unmounting");
        std::promise<Result<void>> flushed;
        writeback_.flush([&](Result<void> r) { flushed.set_value(std::move(r)); });
        if (auto r = flushed.get_future().get(); !r)
            log::error("cache: the flush at unmount failed: ", to_string(r.error()),
                       "; the dirty data stays in the cache for the next mount");
    }
    writeback_.stop();
    if (const auto n = core_.dirty.size(); n > 0)
        log::info("cache: ", core_.alloc.stats().dirty_bytes, " bytes of dirty data in ", n,
                  " files stay in the cache for the next mount");
    reader_.drain(); // fills already queued still run: their data is in memory
    gc_.stop();
    gc_.wait_idle();
    // Persist the LRU order (hits only touched memory) so the next mount
    // reclaims in the same order.
    if (auto r = core_.alloc.save_all(); !r)
        log::warn("cache: saving bucket records at stop: ", to_string(r.error()));
    if (auto r = core_.dev->meta().flush(); !r)
        log::warn("cache: flushing the index at stop: ", to_string(r.error()));
}

} // namespace

std::unique_ptr<DataPath> make_caching_path(std::unique_ptr<store::CacheDevice> dev,
                                            const CachingParams& p, bg::Executors& ex,
                                            CacheHooks hooks) {
    return std::make_unique<CachingPath>(std::move(dev), p, ex, std::move(hooks));
}

} // namespace overcache::cache
