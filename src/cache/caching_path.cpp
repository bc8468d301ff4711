// DOC: the caching DataPath. Reads are served chunk by chunk (fill_size,
// aligned): a chunk fully covered by valid extents is a hit read from the
// cache device into the caller's buffer; otherwise the whole aligned chunk is
// read from the backing, the reply is built from it, and the chunk is handed
// to the fill executor, which inserts it unless a write to the file happened
// since the backing read began (FileState::write_seq, checked under
// FileState::mu, which also serialises every index change of a file, so a
// stale fill can never win against a write). An in-flight set keyed by
// (FileId, chunk) keeps concurrent readers from filling a chunk twice.
// Coherency is close-to-open: open() compares the backing's fstat with the
// file record and, on any difference, gives the file a new FileId (the old
// extents are dropped by GC in the background). Lock order: FileState::mu,
// then files_mu_; inflight_mu_ and the allocator lock are leaves.
#include "overcache/cache/caching_path.hpp"

#include "overcache/bg/executors.hpp"
#include "overcache/bg/gc.hpp"
#include "overcache/cache/extent_index.hpp"
#include "overcache/meta/key_codec.hpp"
#include "util/file_io.hpp"
#include "util/log.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio/post.hpp>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

namespace overcache::cache {
namespace {

using meta::FileId;
using Counter = std::atomic<std::uint64_t>;

std::int64_t ns(const struct timespec& t) {
    return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

meta::FileRecord record_of(FileId id, const struct stat& st) {
    return meta::FileRecord{.file_id = id,
                            .size = static_cast<std::uint64_t>(st.st_size),
                            .mtime_ns = ns(st.st_mtim),
                            .ctime_ns = ns(st.st_ctim),
                            .ino = static_cast<std::uint64_t>(st.st_ino)};
}

bool same_file(const meta::FileRecord& r, const struct stat& st) {
    return r.size == static_cast<std::uint64_t>(st.st_size) && r.mtime_ns == ns(st.st_mtim) &&
           r.ctime_ns == ns(st.st_ctim) && r.ino == static_cast<std::uint64_t>(st.st_ino);
}

// One backing file as the cache knows it, shared by all its opens.
struct FileState {
    FileId fid = 0;
    meta::FileKey key;
    std::mutex mu;                     // serialises index changes of this file; before files_mu_
    Counter write_seq{0};              // bumped (under mu) by every change of the file's bytes
    Counter size{0};                   // the backing's size as of open or our last write
    std::atomic<bool> obsolete{false}; // the record moved on: serve from the backing only
};

class CachedFile final : public OpenFile {
public:
    CachedFile(int fd, std::shared_ptr<FileState> st) : fd_(fd), st_(std::move(st)) {}
    int fd() const { return fd_; }
    FileState& state() const { return *st_; }
    const std::shared_ptr<FileState>& state_ptr() const { return st_; }

    // Sequential-stream detection: true once this open has read more than
    // `cutoff` bytes in a row without a seek.
    bool note_read(std::uint64_t off, std::uint64_t len, std::uint64_t cutoff) {
        std::lock_guard lk(mu_);
        seq_bytes_ = off == next_off_ ? seq_bytes_ + len : len;
        next_off_ = off + len;
        return cutoff != 0 && seq_bytes_ > cutoff;
    }

private:
    int fd_; // borrowed from the adapter
    std::shared_ptr<FileState> st_;
    std::mutex mu_; // FUSE threads may read one open concurrently
    std::uint64_t next_off_ = 0;
    std::uint64_t seq_bytes_ = 0;
};

struct ChunkKey {
    FileId fid;
    std::uint64_t chunk;
    bool operator==(const ChunkKey&) const = default;
};
struct ChunkHash {
    std::size_t operator()(const ChunkKey& k) const noexcept {
        return std::hash<std::uint64_t>()(k.fid * 0x9e3779b97f4a7c15ull ^ k.chunk);
    }
};

class CachingPath final : public DataPath, public CacheControl {
public:
    CachingPath(std::unique_ptr<store::CacheDevice> dev, const CachingParams& p);
    ~CachingPath() override { stop(); }

    Result<OpenOut> open(int fd, const struct stat& st, int open_flags) override;
    Result<ReadOut> read(OpenFile& f, char* buf, std::size_t size, off_t off) override;
    bool wants_write_data(const OpenFile& /*f*/) const override {
        return p_.mode == config::CacheMode::writethrough;
    }
    void wrote(OpenFile& f, const char* data, std::size_t len, off_t off) override;
    void invalidate(FileRef file, std::uint64_t off, std::uint64_t len) override;
    void touched(FileRef file) override;
    void removed(FileRef file) override;
    std::vector<std::pair<std::string, std::string>> stats() const override;
    void stop() override;

    void gc_now() override {
        gc_.trigger();
        gc_.wait_idle();
    }
    void drain_fills() override {
        std::unique_lock lk(pending_mu_);
        pending_cv_.wait(lk, [this] { return pending_fills_ == 0; });
    }

private:
    std::uint64_t fsid_of(int fd, dev_t dev);
    meta::FileKey key_of(int fd, const struct stat& st) {
        return meta::FileKey{fsid_of(fd, st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
    }
    std::shared_ptr<FileState> live_state(FileId fid); // files_mu_ held
    // The record of `key` and its open state, if any.
    std::pair<std::optional<meta::FileRecord>, std::shared_ptr<FileState>>
    find(const meta::FileKey& key);
    // Records what the backing looks like after our own change. st.mu held.
    void refresh_record(FileState& st, int fd);
    // Makes `st` serve from the backing only and forgets its record.
    void abandon(FileState& st, const Error& why);

    bool try_hit(FileState& st, std::uint64_t start, std::uint64_t end, char* out);
    ssize_t miss_chunk(CachedFile& f, std::uint64_t chunk, std::uint64_t start, std::uint64_t end,
                       std::uint64_t fsize, char* out);
    void fill(const std::shared_ptr<FileState>& st, std::uint64_t chunk, std::uint64_t start,
              std::shared_ptr<std::vector<char>> data, std::uint64_t seq);
    void finish_fill(FileId fid, std::uint64_t chunk, std::uint64_t bytes);
    std::uint64_t pending_fills() const {
        std::lock_guard lk(pending_mu_);
        return pending_fills_;
    }

    std::unique_ptr<store::CacheDevice> dev_;
    const CachingParams p_;
    store::Allocator alloc_;
    ExtentIndex index_;
    bg::IoPool fill_pool_{"oc-fill"};
    bg::IoPool gc_pool_{"oc-gc"};
    bg::Gc gc_;
    std::atomic<bool> stopped_{false};

    std::mutex files_mu_; // guards live_ and file records; after FileState::mu
    std::unordered_map<FileId, std::weak_ptr<FileState>> live_;
    std::uint64_t next_fid_ = 1; // guarded by files_mu_

    std::mutex fsid_mu_;
    std::unordered_map<dev_t, std::uint64_t> fsids_; // guarded by fsid_mu_

    std::mutex inflight_mu_;
    std::unordered_set<ChunkKey, ChunkHash> inflight_; // guarded by inflight_mu_
    std::uint64_t pending_bytes_ = 0;                  // guarded by inflight_mu_

    mutable std::mutex pending_mu_;
    std::condition_variable pending_cv_;
    std::uint64_t pending_fills_ = 0; // guarded by pending_mu_

    mutable Counter hits_{0}, misses_{0}, hit_bytes_{0}, miss_bytes_{0};
    mutable Counter bypass_hits_{0}, bypass_misses_{0}, read_errors_{0}, stale_reads_{0};
    mutable Counter fills_{0}, fills_skipped_full_{0}, fills_raced_{0}, fill_errors_{0};
    mutable Counter fills_skipped_busy_{0};
    mutable Counter files_invalidated_{0};
};

bg::GcParams gc_params(std::uint32_t total, std::uint32_t reserve, const CachingParams& p) {
    bg::GcParams g;
    g.low_free = std::max<std::size_t>(reserve + 1, std::uint64_t{total} * p.gc_low_percent / 100);
    g.high_free =
        std::max<std::size_t>(g.low_free + 1, std::uint64_t{total} * p.gc_high_percent / 100);
    g.high_free = std::min<std::size_t>(g.high_free, total);
    return g;
}

std::uint32_t reserve_for(std::uint64_t total) {
    return static_cast<std::uint32_t>(std::clamp<std::uint64_t>(total / 100, 1, 8));
}

CachingPath::CachingPath(std::unique_ptr<store::CacheDevice> dev, const CachingParams& p)
    : dev_(std::move(dev)), p_([&] {
          CachingParams q = p;
          q.fill_size = std::min<std::uint64_t>(q.fill_size, dev_->superblock().bucket_size);
          return q;
      }()),
      alloc_(static_cast<std::uint32_t>(dev_->superblock().bucket_count),
             dev_->superblock().bucket_size, reserve_for(dev_->superblock().bucket_count)),
      index_(*dev_, alloc_),
      gc_(gc_pool_.make_strand(), alloc_, dev_->meta(),
          gc_params(static_cast<std::uint32_t>(dev_->superblock().bucket_count),
                    reserve_for(dev_->superblock().bucket_count), p)) {
    // Start-up reads the bucket records (one per bucket at most), never the
    // data device or the extents.
    auto cur = dev_->meta().cursor(meta::Cf::buckets);
    for (cur.seek_to_first(); cur.valid(); cur.next()) {
        std::uint32_t b = 0;
        auto r = meta::decode_bucket(cur.value());
        if (meta::decode_bucket_key(cur.key(), b) && r)
            alloc_.load(b, *r);
        else if (meta::decode_bucket_key(cur.key(), b)) {
            // A damaged record: treat the bucket as full with an unknown gen;
            // bumping it past any gen in use would need a scan, so keep it out
            // of use until GC reclaims it (which bumps and rewrites it).
            alloc_.load(b, meta::BucketRecord{0xffff0000u, meta::BucketState::full, 0, 0});
        }
    }
    if (auto s = cur.status(); !s)
        log::error("cache: reading bucket records: ", to_string(s.error()));
    alloc_.finish_load();
    if (auto v = dev_->meta().get(meta::Cf::meta, meta::kNextFileIdKey);
        v && v->has_value() && (*v)->size() == 8)
        next_fid_ = std::max<std::uint64_t>(1, meta::get_be64((*v)->data()));
    fill_pool_.start(1);
    gc_pool_.start(1);
    gc_.kick();
}

std::uint64_t CachingPath::fsid_of(int fd, dev_t dev) {
    {
        std::lock_guard lk(fsid_mu_);
        if (auto it = fsids_.find(dev); it != fsids_.end())
            return it->second;
    }
    struct statfs sfs {};
    std::uint64_t id = static_cast<std::uint64_t>(dev); // fallback: st_dev
    if (::fstatfs(fd, &sfs) == 0) {
        std::uint64_t a = static_cast<std::uint32_t>(sfs.f_fsid.__val[0]);
        std::uint64_t b = static_cast<std::uint32_t>(sfs.f_fsid.__val[1]);
        if (a != 0 || b != 0)
            id = (a << 32) | b;
    }
    std::lock_guard lk(fsid_mu_);
    fsids_.emplace(dev, id);
    return id;
}

std::shared_ptr<FileState> CachingPath::live_state(FileId fid) {
    auto it = live_.find(fid);
    if (it == live_.end())
        return nullptr;
    auto sp = it->second.lock();
    if (!sp)
        live_.erase(it);
    return sp;
}

std::pair<std::optional<meta::FileRecord>, std::shared_ptr<FileState>>
CachingPath::find(const meta::FileKey& key) {
    std::lock_guard lk(files_mu_);
    auto v = dev_->meta().get(meta::Cf::files, meta::file_key(key));
    if (!v || !v->has_value())
        return {};
    auto rec = meta::decode_file_record(**v);
    if (!rec)
        return {};
    return {rec, live_state(rec->file_id)};
}

Result<OpenOut> CachingPath::open(int fd, const struct stat& st, int /*open_flags*/) {
    const auto key = key_of(fd, st);
    const auto kstr = meta::file_key(key);
    std::lock_guard lk(files_mu_);
    auto v = dev_->meta().get(meta::Cf::files, kstr);
    std::optional<meta::FileRecord> rec;
    if (v && v->has_value())
        rec = meta::decode_file_record(**v);
    bool valid = rec && same_file(*rec, st);
    std::shared_ptr<FileState> state;
    if (valid) {
        state = live_state(rec->file_id);
        if (state && state->obsolete)
            state.reset();
    }
    if (!state) {
        state = std::make_shared<FileState>();
        state->key = key;
        state->size = static_cast<std::uint64_t>(st.st_size);
        if (valid) {
            state->fid = rec->file_id;
        } else {
            // New FileId: the old one's extents can never be found again and
            // are deleted in the background.
            state->fid = next_fid_++;
            auto b = dev_->meta().batch();
            b.put(meta::Cf::files, kstr, meta::encode(record_of(state->fid, st)));
            std::string next;
            meta::put_be64(next, next_fid_);
            b.put(meta::Cf::meta, meta::kNextFileIdKey, next);
            if (auto r = dev_->meta().write(b); !r) {
                log::warn("cache: cannot record a file; serving it uncached: ",
                          to_string(r.error()));
                state->obsolete = true;
            }
            if (rec) {
                if (auto old = live_state(rec->file_id))
                    old->obsolete = true;
                gc_.drop_file(rec->file_id);
                ++files_invalidated_;
            }
        }
        if (!state->obsolete)
            live_[state->fid] = state;
    }
    return OpenOut{std::make_unique<CachedFile>(fd, std::move(state)), valid};
}

bool CachingPath::try_hit(FileState& st, std::uint64_t start, std::uint64_t end, char* out) {
    // Reused by every hit of this thread: no allocation once warm.
    thread_local std::vector<Piece> pieces;
    if (auto r = index_.lookup(st.fid, start, end, pieces); !r) {
        ++read_errors_;
        log::warn("cache: ", to_string(r.error()));
        return false;
    }
    std::uint64_t at = start;
    for (const auto& p : pieces) {
        if (p.start > at)
            return false; // a hole
        const std::uint64_t seg_end = std::min(end, p.end());
        // Only the checksum blocks covering [at, seg_end) are read.
        switch (index_.read_range(p, at, seg_end, out + (at - start))) {
        case PieceRead::ok:
            break;
        case PieceRead::stale:
            ++stale_reads_;
            return false;
        case PieceRead::bad_checksum:
        case PieceRead::io_error:
            ++read_errors_;
            return false;
        }
        alloc_.touch(p.v.bucket);
        at = seg_end;
        if (at >= end)
            break;
    }
    return at >= end;
}

Result<ReadOut> CachingPath::read(OpenFile& of, char* buf, std::size_t size, off_t off_signed) {
    auto& f = static_cast<CachedFile&>(of);
    FileState& st = f.state();
    if (size == 0 || off_signed < 0)
        return ReadOut{-1, 0, 0};
    const auto off = static_cast<std::uint64_t>(off_signed);
    const std::uint64_t fsize = st.size.load();
    if (st.obsolete || off >= fsize) {
        // Past what we know of the file, or a file we no longer track: the
        // backing answers, spliced.
        if (st.obsolete) {
            ++misses_;
            miss_bytes_ += size;
        }
        return ReadOut{f.fd(), off_signed, size};
    }
    const std::uint64_t end = std::min<std::uint64_t>(off + size, fsize);
    const bool bypass = f.note_read(off, size, p_.sequential_cutoff);
    const std::uint64_t fill = p_.fill_size;
    bool all_hit = true;
    std::uint64_t done = 0; // bytes of the reply ready in buf
    bool short_read = false;
    for (std::uint64_t c = off / fill; c * fill < end; ++c) {
        const std::uint64_t ps = std::max(off, c * fill);
        const std::uint64_t pe = std::min(end, (c + 1) * fill);
        char* out = buf + (ps - off);
        if (try_hit(st, ps, pe, out)) {
            hit_bytes_ += pe - ps;
            done = pe - off;
            continue;
        }
        all_hit = false;
        ssize_t n =
            bypass ? pread_upto(f.fd(), out, pe - ps, ps) : miss_chunk(f, c, ps, pe, fsize, out);
        if (n < 0) {
            if (done == 0)
                return fail_sys(static_cast<int>(-n), "read from the backing");
            short_read = true;
            break;
        }
        miss_bytes_ += static_cast<std::uint64_t>(n);
        done = ps - off + static_cast<std::uint64_t>(n);
        if (static_cast<std::uint64_t>(n) < pe - ps) {
            short_read = true; // the backing is shorter than we knew
            break;
        }
    }
    if (!short_read && end < off + size) {
        // The read crosses the size we know: the backing has the last word.
        ssize_t n = pread_upto(f.fd(), buf + done, off + size - end, end);
        if (n > 0)
            done += static_cast<std::uint64_t>(n);
    }
    if (bypass)
        ++(all_hit ? bypass_hits_ : bypass_misses_);
    else
        ++(all_hit ? hits_ : misses_);
    return ReadOut{-1, 0, static_cast<std::size_t>(done)};
}

ssize_t CachingPath::miss_chunk(CachedFile& f, std::uint64_t chunk, std::uint64_t start,
                                std::uint64_t end, std::uint64_t fsize, char* out) {
    FileState& st = f.state();
    const std::uint64_t cs = chunk * p_.fill_size;
    const std::uint64_t ce = std::min(cs + p_.fill_size, fsize);
    const ChunkKey key{st.fid, chunk};
    bool mine = false;
    {
        std::lock_guard lk(inflight_mu_);
        // Someone else filling this chunk, or fills backed up: read just what
        // was asked, without filling.
        if (inflight_.count(key) == 0 && !stopped_) {
            if (pending_bytes_ + (ce - cs) <= p_.max_pending_fill_bytes) {
                inflight_.insert(key);
                pending_bytes_ += ce - cs;
                mine = true;
            } else {
                ++fills_skipped_busy_; // the fill thread is behind: memory stays bounded
            }
        }
    }
    if (!mine)
        return pread_upto(f.fd(), out, end - start, start);
    // Read the write sequence before the backing: a write that lands after
    // this point makes the fill stand down.
    const std::uint64_t seq = st.write_seq.load();
    auto data = std::make_shared<std::vector<char>>(ce - cs);
    ssize_t n = pread_upto(f.fd(), data->data(), ce - cs, cs);
    if (n < 0) {
        finish_fill(st.fid, chunk, ce - cs);
        return n;
    }
    const auto got = static_cast<std::uint64_t>(n);
    const std::uint64_t avail = got > start - cs ? std::min(end, cs + got) - start : 0;
    std::memcpy(out, data->data() + (start - cs), avail);
    if (got != ce - cs) {
        finish_fill(st.fid, chunk, ce - cs); // the file shrank: don't cache a guess
        return static_cast<ssize_t>(avail);
    }
    {
        std::lock_guard lk(pending_mu_);
        ++pending_fills_;
    }
    boost::asio::post(fill_pool_.executor(), [this, sp = f.state_ptr(), chunk, cs, data, seq] {
        fill(sp, chunk, cs, data, seq);
    });
    return static_cast<ssize_t>(avail);
}

void CachingPath::finish_fill(FileId fid, std::uint64_t chunk, std::uint64_t bytes) {
    std::lock_guard lk(inflight_mu_);
    inflight_.erase(ChunkKey{fid, chunk});
    pending_bytes_ -= bytes;
}

void CachingPath::fill(const std::shared_ptr<FileState>& sp, std::uint64_t chunk,
                       std::uint64_t start, std::shared_ptr<std::vector<char>> data,
                       std::uint64_t seq) {
    FileState& st = *sp;
    {
        std::lock_guard lk(st.mu);
        if (st.obsolete || st.write_seq.load() != seq) {
            ++fills_raced_;
        } else {
            auto r = index_.insert(st.fid, start, data->data(),
                                   static_cast<std::uint32_t>(data->size()));
            if (!r) {
                ++fill_errors_;
                log::warn("cache: fill failed: ", to_string(r.error()));
            } else if (!*r) {
                ++fills_skipped_full_;
            } else {
                ++fills_;
            }
        }
    }
    gc_.kick();
    finish_fill(st.fid, chunk, data->size());
    std::lock_guard lk(pending_mu_);
    if (--pending_fills_ == 0)
        pending_cv_.notify_all();
}

void CachingPath::refresh_record(FileState& st, int fd) {
    struct stat now {};
    if (::fstat(fd, &now) != 0) {
        abandon(st, Error::from_errno("fstat after a write"));
        return;
    }
    st.size = static_cast<std::uint64_t>(now.st_size);
    std::lock_guard lk(files_mu_);
    if (st.obsolete)
        return;
    auto b = dev_->meta().batch();
    b.put(meta::Cf::files, meta::file_key(st.key), meta::encode(record_of(st.fid, now)));
    if (auto r = dev_->meta().write(b); !r)
        log::warn("cache: cannot update a file record: ", to_string(r.error()));
}

void CachingPath::abandon(FileState& st, const Error& why) {
    log::warn("cache: forgetting a file after an error: ", to_string(why));
    std::lock_guard lk(files_mu_);
    st.obsolete = true;
    auto b = dev_->meta().batch();
    b.del(meta::Cf::files, meta::file_key(st.key));
    (void)dev_->meta().write(b);
    gc_.drop_file(st.fid);
}

void CachingPath::wrote(OpenFile& of, const char* data, std::size_t len, off_t off_signed) {
    auto& f = static_cast<CachedFile&>(of);
    FileState& st = f.state();
    const auto off = static_cast<std::uint64_t>(off_signed);
    std::lock_guard lk(st.mu);
    ++st.write_seq; // any fill that read the backing before now stands down
    if (st.obsolete)
        return;
    if (p_.mode == config::CacheMode::writethrough && data != nullptr) {
        // Chunk-aligned pieces, like fills, so extents never cross a chunk.
        for (std::uint64_t at = off; at < off + len;) {
            const std::uint64_t next =
                std::min<std::uint64_t>(off + len, (at / p_.fill_size + 1) * p_.fill_size);
            auto r =
                index_.insert(st.fid, at, data + (at - off), static_cast<std::uint32_t>(next - at));
            if (!r || !*r) {
                // No room (or an error): the rest of the range must not keep
                // what it held before the write.
                if (auto pr = index_.punch(st.fid, at, off + len); !pr) {
                    abandon(st, pr.error());
                    return;
                }
                break;
            }
            at = next;
        }
        gc_.kick();
    } else if (auto r = index_.punch(st.fid, off, off + len); !r) {
        abandon(st, r.error());
        return;
    }
    refresh_record(st, f.fd());
}

void CachingPath::invalidate(FileRef file, std::uint64_t off, std::uint64_t len) {
    auto [rec, st] = find(key_of(file.fd, file.st));
    if (!rec)
        return;
    if (!st) {
        // Not open here, so we cannot know the record was still true before
        // this change: forget the file (its next open starts afresh).
        std::lock_guard lk(files_mu_);
        auto b = dev_->meta().batch();
        b.del(meta::Cf::files, meta::file_key(key_of(file.fd, file.st)));
        if (auto r = dev_->meta().write(b); !r)
            log::warn("cache: ", to_string(r.error()));
        gc_.drop_file(rec->file_id);
        ++files_invalidated_;
        return;
    }
    std::lock_guard lk(st->mu);
    ++st->write_seq;
    const std::uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
    if (auto r = index_.punch(st->fid, off, end); !r) {
        abandon(*st, r.error());
        return;
    }
    refresh_record(*st, file.fd);
}

void CachingPath::touched(FileRef file) {
    auto [rec, st] = find(key_of(file.fd, file.st));
    if (!rec || !st)
        return; // not open: the next open compares and decides
    std::lock_guard lk(st->mu);
    refresh_record(*st, file.fd);
}

void CachingPath::removed(FileRef file) {
    const auto key = key_of(file.fd, file.st);
    std::lock_guard lk(files_mu_);
    auto v = dev_->meta().get(meta::Cf::files, meta::file_key(key));
    if (!v || !v->has_value())
        return;
    auto rec = meta::decode_file_record(**v);
    auto b = dev_->meta().batch();
    b.del(meta::Cf::files, meta::file_key(key));
    if (auto r = dev_->meta().write(b); !r)
        log::warn("cache: ", to_string(r.error()));
    if (rec) {
        if (auto st = live_state(rec->file_id))
            st->obsolete = true;
        gc_.drop_file(rec->file_id);
    }
}

std::vector<std::pair<std::string, std::string>> CachingPath::stats() const {
    const auto& sb = dev_->superblock();
    const auto gs = gc_.stats();
    const std::uint64_t h = hits_, m = misses_;
    auto u = [](std::uint64_t v) { return std::to_string(v); };
    return {
        {"cache_mode", config::to_string(p_.mode)},
        {"cache_hits", u(h)},
        {"cache_misses", u(m)},
        {"cache_hit_ratio", u(h + m == 0 ? 0 : h * 100 / (h + m))},
        {"cache_hit_bytes", u(hit_bytes_)},
        {"cache_miss_bytes", u(miss_bytes_)},
        {"cache_bypass_hits", u(bypass_hits_)},
        {"cache_bypass_misses", u(bypass_misses_)},
        {"cache_read_errors", u(read_errors_)},
        {"cache_stale_reads", u(stale_reads_)},
        {"cache_read_bytes", u(index_.read_bytes())},
        {"buckets_total", u(alloc_.bucket_count())},
        {"buckets_free", u(alloc_.free_count())},
        {"buckets_reserve", u(alloc_.reserve())},
        {"cache_used_bytes", u(alloc_.used_bytes())},
        {"dirty_data", "0"},
        {"fills", u(fills_)},
        {"fills_skipped_full", u(fills_skipped_full_)},
        {"fills_skipped_busy", u(fills_skipped_busy_)},
        {"fills_pending", u(pending_fills())},
        {"fills_raced", u(fills_raced_)},
        {"fill_errors", u(fill_errors_)},
        {"files_invalidated", u(files_invalidated_)},
        {"gc_runs", u(gs.runs)},
        {"gc_buckets_reclaimed", u(gs.buckets_reclaimed)},
        {"gc_stale_extents_removed", u(gs.stale_extents_removed)},
        {"bucket_size", u(sb.bucket_size)},
        {"cache_size", u(sb.cache_size)},
        {"fill_size", u(p_.fill_size)},
        {"sequential_cutoff", u(p_.sequential_cutoff)},
        {"index_memory_bytes", u(dev_->meta().memory_bytes())},
    };
}

void CachingPath::stop() {
    if (stopped_.exchange(true))
        return;
    fill_pool_.stop(); // fills already queued still run: their data is in memory
    gc_.stop();
    gc_pool_.stop();
    // Persist the LRU order (hits only touched memory) so the next mount
    // reclaims in the same order.
    auto b = dev_->meta().batch();
    for (std::uint32_t i = 0; i < alloc_.bucket_count(); ++i)
        if (auto r = alloc_.record(i); r.state != meta::BucketState::free)
            b.put(meta::Cf::buckets, meta::bucket_key(i), meta::encode(r));
    if (auto r = dev_->meta().write(b); !r)
        log::warn("cache: saving bucket records at stop: ", to_string(r.error()));
    if (auto r = dev_->meta().flush(); !r)
        log::warn("cache: flushing the index at stop: ", to_string(r.error()));
}

} // namespace

std::unique_ptr<DataPath> make_caching_path(std::unique_ptr<store::CacheDevice> dev,
                                            const CachingParams& p) {
    return std::make_unique<CachingPath>(std::move(dev), p);
}

} // namespace overcache::cache
