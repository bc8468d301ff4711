// DOC: MetaStore, the only code that includes RocksDB. It opens the index
// with one column family a Cf (schema.hpp), a shared LRU block cache of
// block_cache_size bytes and at most two write buffers of write_buffer_bytes
// a column family, so the daemon's memory is bounded by options. Writes go
// through the WAL (not synced unless asked): a killed daemon loses nothing,
// a power loss may lose the newest clean extents, which is harmless because
// the data they point at is checksummed. to_error() is the one place a
// rocksdb::Status becomes an Error.
#include "overcache/meta/meta_store.hpp"

#include <rocksdb/cache.h>
#if __has_include(<rocksdb/advanced_cache.h>)
#include <rocksdb/advanced_cache.h>  // RocksDB >= 8 defines rocksdb::Cache here
#endif
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sys/stat.h>
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
    auto impl = std::make_unique<Impl>();
    impl->block_cache = rocksdb::NewLRUCache(o.block_cache_bytes);

    rocksdb::DBOptions dbo;
    dbo.create_if_missing = o.create_if_missing;
    dbo.create_missing_column_families = o.create_if_missing;
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
    for (Cf cf : kAllCfs)
        descs.emplace_back(cf_name(cf), cfo);

    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(dbo, dir, descs, &handles, &raw);
    if (!s.ok())
        return fail(to_error(s, "cannot open the index at " + dir));
    impl->db.reset(raw);
    // handles[0] is the default family, unused: keep the rest by Cf.
    impl->db->DestroyColumnFamilyHandle(handles[0]);
    impl->cfs.assign(handles.begin() + 1, handles.end());
    return std::unique_ptr<MetaStore>(new MetaStore(std::move(impl)));
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

std::uint64_t MetaStore::memory_bytes() const {
    std::uint64_t total = impl_->block_cache->GetUsage();
    for (auto* h : impl_->cfs) {
        std::uint64_t v = 0;
        if (impl_->db->GetIntProperty(h, rocksdb::DB::Properties::kCurSizeAllMemTables, &v))
            total += v;
    }
    return total;
}

} // namespace overcache::meta
