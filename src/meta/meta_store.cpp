// DOC: MetaStore, the only code that includes RocksDB. It opens the index
// with one column family a Cf (schema.hpp), a shared LRU block cache of
// block_cache_size bytes and at most two write buffers of write_buffer_bytes
// a column family, so the daemon's memory is bounded by options. Writes go
// through the WAL (not synced unless asked): a killed daemon loses nothing,
// a power loss may lose the newest clean extents, which is harmless because
// the data they point at is checksummed. to_error() is the one place a
// rocksdb::Status becomes an Error.
// Stale extents are dropped lazily by a compaction filter on Cf::extents
// (kvrocks' SubKeyFilter idea): a bucket's gen bump invalidates its extents at
// once, and compaction removes their keys later, one key version at a time, so
// it cannot race with a fresh fill of the same key the way a scan-and-delete
// sweep does. The predicate comes from above (set_extent_filter); each
// compaction takes a snapshot of it when it starts.
// The index directory is 0700 and its files 0600: format 3 stores paths and
// file handles of the backing, which are its owner's business only.
#include "overcache/meta/meta_store.hpp"

#include "overcache/meta/key_codec.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <mutex>
#include <rocksdb/cache.h>
#if __has_include(<rocksdb/advanced_cache.h>)
#include <rocksdb/advanced_cache.h>
#endif
#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace overcache::meta {
namespace {

Error to_error(const rocksdb::Status& s, const std::string& what) {
    if (s.IsCorruption())
        return Error::make(Errc::MetaCorrupt, what + ": index damaged: " + s.ToString());
    if (s.IsIOError())
        return Error::make(Errc::Sys, what + ": " + s.ToString());
    return Error::make(Errc::MetaCorrupt, what + ": " + s.ToString());
}

rocksdb::Slice slice(std::string_view s) {
    return {s.data(), s.size()};
}

// ---- the stale-extent compaction filter ---------------------------------------

// Shared by MetaStore::Impl (which sets the predicate and reads the counters)
// and the factory RocksDB owns (which may outlive neither, but shared_ptr
// keeps the question moot).
struct ExtentFilterState {
    mutable std::mutex mu; // guards is_current only
    std::shared_ptr<const MetaStore::ExtentIsCurrent> is_current;
    std::atomic<std::uint64_t> dropped{0};
    std::atomic<std::uint64_t> undecodable{0};

    std::shared_ptr<const MetaStore::ExtentIsCurrent> snapshot() const {
        std::lock_guard lk(mu);
        return is_current;
    }
};

// One per compaction (or subcompaction).
class StaleExtentFilter final : public rocksdb::CompactionFilter {
public:
    StaleExtentFilter(std::shared_ptr<ExtentFilterState> state,
                      std::shared_ptr<const MetaStore::ExtentIsCurrent> is_current)
        : state_(std::move(state)), is_current_(std::move(is_current)) {}

    bool Filter(int /*level*/, const rocksdb::Slice& key, const rocksdb::Slice& value,
                std::string* /*new_value*/, bool* /*value_changed*/) const override {
        ExtentKey k;
        if (!decode_extent_key({key.data(), key.size()}, k))
            return false; // not an extent key: not ours to judge
        // Reused across keys and compactions of this RocksDB thread.
        thread_local ExtentValue v_;
        if (!decode_extent({value.data(), value.size()}, v_)) {
            state_->undecodable.fetch_add(1, std::memory_order_relaxed);
            return false; // damaged: the read path reports it, never guessed at here
        }
        if ((v_.flags & kExtentDirty) != 0)
            return false; // the only copy of data the backing does not have yet
        bool current = true;
        try {
            current = (*is_current_)(v_.bucket, v_.gen);
        } catch (...) {
            current = true; // in doubt, keep
        }
        if (current)
            return false;
        state_->dropped.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    const char* Name() const override { return "overcache.StaleExtentFilter"; }

private:
    std::shared_ptr<ExtentFilterState> state_;
    std::shared_ptr<const MetaStore::ExtentIsCurrent> is_current_;
};

class StaleExtentFilterFactory final : public rocksdb::CompactionFilterFactory {
public:
    explicit StaleExtentFilterFactory(std::shared_ptr<ExtentFilterState> state)
        : state_(std::move(state)) {}

    std::unique_ptr<rocksdb::CompactionFilter>
    CreateCompactionFilter(const rocksdb::CompactionFilter::Context& /*ctx*/) override {
        auto fn = state_->snapshot();
        if (!fn || !*fn)
            return nullptr; // no predicate yet: keep everything
        return std::make_unique<StaleExtentFilter>(state_, std::move(fn));
    }
    const char* Name() const override { return "overcache.StaleExtentFilterFactory"; }

private:
    std::shared_ptr<ExtentFilterState> state_;
};

// ---- owner-only files ------------------------------------------------------------

constexpr mode_t kDirMode = 0700;
constexpr mode_t kFileMode = 0600;

Result<void> make_private_dir(const std::string& dir, bool create) {
    if (create && ::mkdir(dir.c_str(), kDirMode) != 0 && errno != EEXIST)
        return fail_errno("cannot create the index directory " + dir);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
        if (errno == ENOENT && !create)
            return {}; // RocksDB reports the missing index in its own words
        return fail_errno("cannot stat the index directory " + dir);
    }
    if (!S_ISDIR(st.st_mode))
        return fail(Errc::BadValue, dir + " is not a directory");
    // Exactly 0700 whatever the umask was at mkdir (which may also have taken
    // the owner's own bits away).
    if ((st.st_mode & 07777) != kDirMode && ::chmod(dir.c_str(), kDirMode) != 0)
        return fail_errno("cannot make the index directory " + dir + " private");
    return {};
}

// Every file RocksDB creates is 0600 and every directory 0700, not 0644 &
// ~umask: the directory's 0700 already keeps others out, and this keeps each
// file private should the index be copied or its directory opened up.
class OwnerOnlyFs final : public rocksdb::FileSystemWrapper {
public:
    using FileSystemWrapper::FileSystemWrapper;
    const char* Name() const override { return "OverCacheOwnerOnlyFs"; }

    rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& fo,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* dbg) override {
        return owner_only(f, kFileMode, target()->NewWritableFile(f, fo, r, dbg));
    }
    rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& fo,
                                         std::unique_ptr<rocksdb::FSWritableFile>* r,
                                         rocksdb::IODebugContext* dbg) override {
        return owner_only(f, kFileMode, target()->ReopenWritableFile(f, fo, r, dbg));
    }
    rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                        const rocksdb::FileOptions& fo,
                                        std::unique_ptr<rocksdb::FSWritableFile>* r,
                                        rocksdb::IODebugContext* dbg) override {
        return owner_only(f, kFileMode, target()->ReuseWritableFile(f, old, fo, r, dbg));
    }
    rocksdb::IOStatus NewRandomRWFile(const std::string& f, const rocksdb::FileOptions& fo,
                                      std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                                      rocksdb::IODebugContext* dbg) override {
        return owner_only(f, kFileMode, target()->NewRandomRWFile(f, fo, r, dbg));
    }
    rocksdb::IOStatus NewLogger(const std::string& f, const rocksdb::IOOptions& io,
                                std::shared_ptr<rocksdb::Logger>* r,
                                rocksdb::IODebugContext* dbg) override {
        return owner_only(f, kFileMode, target()->NewLogger(f, io, r, dbg));
    }
    rocksdb::IOStatus CreateDir(const std::string& d, const rocksdb::IOOptions& io,
                                rocksdb::IODebugContext* dbg) override {
        return owner_only(d, kDirMode, target()->CreateDir(d, io, dbg));
    }
    rocksdb::IOStatus CreateDirIfMissing(const std::string& d, const rocksdb::IOOptions& io,
                                         rocksdb::IODebugContext* dbg) override {
        return owner_only(d, kDirMode, target()->CreateDirIfMissing(d, io, dbg));
    }

private:
    static rocksdb::IOStatus owner_only(const std::string& path, mode_t mode,
                                        rocksdb::IOStatus made) {
        if (!made.ok())
            return made;
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0)
            return rocksdb::IOStatus::IOError("stat " + path, std::strerror(errno));
        if ((st.st_mode & 07777) != mode && ::chmod(path.c_str(), mode) != 0)
            return rocksdb::IOStatus::IOError("chmod " + path, std::strerror(errno));
        return made;
    }
};

// Files made before the index was private (or by another tool): group and
// others lose every bit.
Result<void> make_private_files(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr)
        return fail_errno("cannot list the index directory " + dir);
    const int dfd = ::dirfd(d);
    Result<void> r;
    while (const dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st {};
        if (::fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || S_ISLNK(st.st_mode))
            continue;
        const mode_t want = S_ISDIR(st.st_mode) ? kDirMode : (st.st_mode & kFileMode);
        if ((st.st_mode & 077) != 0 && ::fchmodat(dfd, e->d_name, want, 0) != 0) {
            r = fail_errno("cannot make " + dir + "/" + e->d_name + " private");
            break;
        }
    }
    ::closedir(d);
    return r;
}

} // namespace

// ---- Batch -------------------------------------------------------------------

struct Batch::Impl {
    rocksdb::WriteBatch wb;
    const std::vector<rocksdb::ColumnFamilyHandle*>* cfs = nullptr;
    rocksdb::ColumnFamilyHandle* h(Cf cf) const { return (*cfs)[static_cast<std::size_t>(cf)]; }
};

Batch::Batch(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Batch::Batch(Batch&&) noexcept = default;
Batch& Batch::operator=(Batch&&) noexcept = default;
Batch::~Batch() = default;

void Batch::put(Cf cf, std::string_view key, std::string_view value) {
    impl_->wb.Put(impl_->h(cf), slice(key), slice(value));
}
void Batch::del(Cf cf, std::string_view key) {
    impl_->wb.Delete(impl_->h(cf), slice(key));
}
void Batch::del_range(Cf cf, std::string_view begin, std::string_view end) {
    impl_->wb.DeleteRange(impl_->h(cf), slice(begin), slice(end));
}
std::size_t Batch::count() const {
    return impl_->wb.Count();
}

// ---- Cursor ------------------------------------------------------------------

struct Cursor::Impl {
    std::string upper; // must outlive the iterator: ReadOptions keeps a Slice to it
    rocksdb::Slice upper_slice;
    std::unique_ptr<rocksdb::Iterator> it;
};

Cursor::Cursor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cursor::Cursor(Cursor&&) noexcept = default;
Cursor& Cursor::operator=(Cursor&&) noexcept = default;
Cursor::~Cursor() = default;

void Cursor::seek(std::string_view key) {
    impl_->it->Seek(slice(key));
}
Result<void> Cursor::refresh() {
    auto s = impl_->it->Refresh();
    if (!s.ok())
        return fail(to_error(s, "index cursor refresh"));
    return {};
}
void Cursor::seek_to_first() {
    impl_->it->SeekToFirst();
}
bool Cursor::valid() const {
    return impl_->it->Valid();
}
void Cursor::next() {
    impl_->it->Next();
}
std::string_view Cursor::key() const {
    auto k = impl_->it->key();
    return {k.data(), k.size()};
}
std::string_view Cursor::value() const {
    auto v = impl_->it->value();
    return {v.data(), v.size()};
}
Result<void> Cursor::status() const {
    auto s = impl_->it->status();
    if (!s.ok())
        return fail(to_error(s, "index scan"));
    return {};
}

// ---- MetaStore ---------------------------------------------------------------

struct MetaStore::Impl {
    std::unique_ptr<rocksdb::Env> env; // outlives db: ~Impl closes db first
    std::shared_ptr<ExtentFilterState> extent_filter = std::make_shared<ExtentFilterState>();
    std::shared_ptr<rocksdb::Cache> block_cache;
    std::vector<rocksdb::ColumnFamilyHandle*> cfs; // indexed by Cf
    std::unique_ptr<rocksdb::DB> db;

    ~Impl() {
        for (auto* h : cfs)
            if (h != nullptr && db)
                db->DestroyColumnFamilyHandle(h);
        cfs.clear();
        if (db)
            db->Close().PermitUncheckedError();
    }
};

MetaStore::MetaStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetaStore::~MetaStore() = default;

bool MetaStore::exists(const std::string& dir) {
    struct stat st {};
    return ::stat((dir + "/CURRENT").c_str(), &st) == 0;
}

Result<std::unique_ptr<MetaStore>> MetaStore::open(const std::string& dir, const StoreOptions& o) {
    if (auto r = make_private_dir(dir, o.create_if_missing); !r)
        return fail(r.error());
    auto impl = std::make_unique<Impl>();
    impl->env = NewCompositeEnv(std::make_shared<OwnerOnlyFs>(rocksdb::FileSystem::Default()));
    impl->block_cache = rocksdb::NewLRUCache(o.block_cache_bytes);

    rocksdb::DBOptions dbo;
    dbo.env = impl->env.get();
    dbo.create_if_missing = o.create_if_missing;
    // A family added by a later version (policy) is created in an index
    // made before it; a missing index is still created only on request.
    dbo.create_missing_column_families = true;
    dbo.max_background_jobs = 2;
    dbo.keep_log_file_num = 2;
    dbo.max_total_wal_size = 4 * o.write_buffer_bytes * kAllCfs.size();
    dbo.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;

    rocksdb::BlockBasedTableOptions tbl;
    tbl.block_cache = impl->block_cache;
    tbl.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    tbl.cache_index_and_filter_blocks = true; // index memory counts against the block cache
    rocksdb::ColumnFamilyOptions cfo;
    cfo.write_buffer_size = o.write_buffer_bytes;
    cfo.max_write_buffer_number = 2;
    cfo.table_factory.reset(rocksdb::NewBlockBasedTableFactory(tbl));

    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    descs.emplace_back(rocksdb::kDefaultColumnFamilyName, cfo);
    for (Cf cf : kAllCfs) {
        descs.emplace_back(cf_name(cf), cfo);
        if (cf == Cf::extents)
            descs.back().options.compaction_filter_factory =
                std::make_shared<StaleExtentFilterFactory>(impl->extent_filter);
    }

    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(dbo, dir, descs, &handles, &raw);
    if (!s.ok())
        return fail(to_error(s, "cannot open the index at " + dir));
    impl->db.reset(raw);
    // handles[0] is the default family, unused: keep the rest by Cf.
    impl->db->DestroyColumnFamilyHandle(handles[0]);
    impl->cfs.assign(handles.begin() + 1, handles.end());
    if (auto r = make_private_files(dir); !r)
        return fail(r.error());
    return std::unique_ptr<MetaStore>(new MetaStore(std::move(impl)));
}

namespace {
// peek() must not even rotate the LOG of an index it only looks at.
class NullLogger final : public rocksdb::Logger {
public:
    using rocksdb::Logger::Logv;
    void Logv(const char* /*format*/, va_list /*ap*/) override {}
};

// An index opened read-only for peek(), with every family it has (an
// index of another format may have other ones), closed at scope exit.
struct ReadOnlyIndex {
    std::unique_ptr<rocksdb::DB> db;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::ColumnFamilyHandle* want = nullptr; // nullptr: the index has no such family

    ~ReadOnlyIndex() {
        if (!db)
            return;
        for (auto* h : handles)
            db->DestroyColumnFamilyHandle(h);
        db->Close().PermitUncheckedError();
    }
};

Result<void> open_read_only(const std::string& dir, Cf cf, ReadOnlyIndex& out) {
    rocksdb::DBOptions dbo;
    dbo.info_log = std::make_shared<NullLogger>();
    std::vector<std::string> names;
    auto s = rocksdb::DB::ListColumnFamilies(dbo, dir, &names);
    if (!s.ok())
        return fail(to_error(s, "cannot read the index at " + dir));
    const auto want = std::find(names.begin(), names.end(), cf_name(cf));
    if (want == names.end())
        return {};
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const auto& n : names)
        descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* raw = nullptr;
    s = rocksdb::DB::OpenForReadOnly(dbo, dir, descs, &out.handles, &raw);
    if (!s.ok())
        return fail(to_error(s, "cannot read the index at " + dir));
    out.db.reset(raw);
    out.want = out.handles[static_cast<std::size_t>(want - names.begin())];
    return {};
}

} // namespace

Result<std::optional<std::string>> MetaStore::peek(const std::string& dir, Cf cf,
                                                   std::string_view key) {
    ReadOnlyIndex idx;
    if (auto r = open_read_only(dir, cf, idx); !r)
        return fail(r.error());
    if (idx.want == nullptr)
        return std::optional<std::string>{};
    std::string v;
    auto s = idx.db->Get(rocksdb::ReadOptions(), idx.want, slice(key), &v);
    if (s.IsNotFound())
        return std::optional<std::string>{};
    if (!s.ok())
        return fail(to_error(s, std::string("index read (") + cf_name(cf) + ")"));
    return std::optional<std::string>{std::move(v)};
}

Result<void> MetaStore::peek_each(
    const std::string& dir, Cf cf,
    const std::function<bool(std::string_view key, std::string_view value)>& each) {
    ReadOnlyIndex idx;
    if (auto r = open_read_only(dir, cf, idx); !r)
        return fail(r.error());
    if (idx.want == nullptr)
        return {};
    std::unique_ptr<rocksdb::Iterator> it(idx.db->NewIterator(rocksdb::ReadOptions(), idx.want));
    for (it->SeekToFirst(); it->Valid(); it->Next())
        if (!each(std::string_view(it->key().data(), it->key().size()),
                  std::string_view(it->value().data(), it->value().size())))
            break;
    if (auto s = it->status(); !s.ok())
        return fail(to_error(s, std::string("index read (") + cf_name(cf) + ")"));
    return {};
}

Result<void> MetaStore::destroy(const std::string& dir) {
    rocksdb::Options opts;
    auto s = rocksdb::DestroyDB(dir, opts);
    if (!s.ok())
        return fail(to_error(s, "cannot delete the index at " + dir));
    return {};
}

Result<std::optional<std::string>> MetaStore::get(Cf cf, std::string_view key) const {
    std::string v;
    auto s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cfs[static_cast<std::size_t>(cf)],
                            slice(key), &v);
    if (s.IsNotFound())
        return std::optional<std::string>{};
    if (!s.ok())
        return fail(to_error(s, std::string("index read (") + cf_name(cf) + ")"));
    return std::optional<std::string>{std::move(v)};
}

Batch MetaStore::batch() const {
    auto impl = std::make_unique<Batch::Impl>();
    impl->cfs = &impl_->cfs;
    return Batch(std::move(impl));
}

Result<void> MetaStore::write(Batch& b, bool sync) {
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    auto s = impl_->db->Write(wo, &b.impl_->wb);
    if (!s.ok())
        return fail(to_error(s, "index write"));
    return {};
}

Cursor MetaStore::cursor(Cf cf, std::optional<std::string> upper) const {
    auto impl = std::make_unique<Cursor::Impl>();
    rocksdb::ReadOptions ro;
    if (upper) {
        impl->upper = std::move(*upper);
        impl->upper_slice = rocksdb::Slice(impl->upper);
        ro.iterate_upper_bound = &impl->upper_slice;
    }
    impl->it.reset(impl_->db->NewIterator(ro, impl_->cfs[static_cast<std::size_t>(cf)]));
    return Cursor(std::move(impl));
}

Result<void> MetaStore::sync_wal() {
    auto s = impl_->db->SyncWAL();
    if (!s.ok() && !s.IsNotSupported())
        return fail(to_error(s, "index WAL sync"));
    return {};
}

Result<void> MetaStore::flush() {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    auto s = impl_->db->Flush(fo, impl_->cfs);
    if (!s.ok())
        return fail(to_error(s, "index flush"));
    s = impl_->db->SyncWAL();
    if (!s.ok() && !s.IsNotSupported())
        return fail(to_error(s, "index WAL sync"));
    return {};
}

std::uint64_t MetaStore::sequence() const {
    return impl_->db->GetLatestSequenceNumber();
}

std::uint64_t MetaStore::memory_bytes() const {
    std::uint64_t total = impl_->block_cache->GetUsage();
    for (auto* h : impl_->cfs) {
        std::uint64_t v = 0;
        if (impl_->db->GetIntProperty(h, rocksdb::DB::Properties::kCurSizeAllMemTables, &v))
            total += v;
    }
    return total;
}

std::uint64_t MetaStore::approximate_bytes(Cf cf) const {
    // Every key of every family sorts before 64 bytes of 0xff.
    const std::string end(64, '\xff');
    const rocksdb::Range all{rocksdb::Slice(), rocksdb::Slice(end)};
    rocksdb::SizeApproximationOptions o;
    o.include_memtables = true;
    o.include_files = true;
    std::uint64_t size = 0;
    auto s = impl_->db->GetApproximateSizes(o, impl_->cfs[static_cast<std::size_t>(cf)], &all, 1,
                                           &size);
    return s.ok() ? size : 0;
}

Result<void> MetaStore::compact(Cf cf) {
    rocksdb::CompactRangeOptions co;
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    auto s = impl_->db->CompactRange(co, impl_->cfs[static_cast<std::size_t>(cf)], nullptr, nullptr);
    if (!s.ok())
        return fail(to_error(s, std::string("index compaction (") + cf_name(cf) + ")"));
    return {};
}

void MetaStore::set_extent_filter(ExtentIsCurrent is_current) {
    std::shared_ptr<const ExtentIsCurrent> fn;
    if (is_current)
        fn = std::make_shared<const ExtentIsCurrent>(std::move(is_current));
    std::lock_guard lk(impl_->extent_filter->mu);
    impl_->extent_filter->is_current = std::move(fn);
}

Result<void> MetaStore::compact_extents() {
    rocksdb::CompactRangeOptions co;
    // Rewrite the last level too, or extents already there are never filtered.
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    auto s = impl_->db->CompactRange(co, impl_->cfs[static_cast<std::size_t>(Cf::extents)], nullptr,
                                     nullptr);
    if (!s.ok())
        return fail(to_error(s, "index compaction (extents)"));
    return {};
}

std::uint64_t MetaStore::stale_extents_dropped() const {
    return impl_->extent_filter->dropped.load(std::memory_order_relaxed);
}

std::uint64_t MetaStore::undecodable_extents_kept() const {
    return impl_->extent_filter->undecodable.load(std::memory_order_relaxed);
}

} // namespace overcache::meta
