// MetaStore: the one owner of RocksDB. Everything above sees column
// families (Cf), string keys and values, Batch and Cursor; no RocksDB type
// leaves src/meta.
#pragma once

#include "overcache/meta/schema.hpp"
#include "overcache/util/result.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace overcache::meta {

struct StoreOptions {
    std::uint64_t block_cache_bytes = 32u << 20;
    std::uint64_t write_buffer_bytes = 8u << 20; // per column family, at most 2 of them
    bool create_if_missing = false;
};

class MetaStore;

// One atomic change: every put/delete lands together or not at all.
class Batch {
public:
    Batch(Batch&&) noexcept;
    Batch& operator=(Batch&&) noexcept;
    ~Batch();

    void put(Cf cf, std::string_view key, std::string_view value);
    void del(Cf cf, std::string_view key);
    // Deletes [begin, end) in one tombstone.
    void del_range(Cf cf, std::string_view begin, std::string_view end);
    std::size_t count() const;

private:
    friend class MetaStore;
    struct Impl;
    explicit Batch(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// An iterator over one column family, optionally bounded above.
class Cursor {
public:
    Cursor(Cursor&&) noexcept;
    Cursor& operator=(Cursor&&) noexcept;
    ~Cursor();

    void seek(std::string_view key); // first key >= key
    void seek_to_first();
    // Lets a cursor kept for reuse see every write committed before now (a
    // cursor otherwise sees the index as of its creation).
    Result<void> refresh();
    bool valid() const;
    void next();
    std::string_view key() const;
    std::string_view value() const;
    Result<void> status() const;

private:
    friend class MetaStore;
    struct Impl;
    explicit Cursor(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

class MetaStore {
public:
    ~MetaStore();
    MetaStore(const MetaStore&) = delete;
    MetaStore& operator=(const MetaStore&) = delete;

    // Whether `dir` holds an index (a RocksDB CURRENT file).
    static bool exists(const std::string& dir);
    // Opens (or with create_if_missing creates) the index at `dir`. The index
    // holds paths and handles of backing files, so it is its owner's alone,
    // whatever the umask: `dir` is made (or, when it exists, set to) 0700,
    // and every file RocksDB creates in it is 0600 (existing ones that are
    // more open are set to that at open).
    static Result<std::unique_ptr<MetaStore>> open(const std::string& dir, const StoreOptions& o);
    // Reads one value from the index at `dir` without opening it for writing:
    // whatever column families it has (an index of another format may have
    // other ones), no LOCK taken, nothing written, not even a LOG. nullopt
    // when the family or the key is missing. For looking at a superblock
    // before deciding whether this format can open the index at all.
    static Result<std::optional<std::string>> peek(const std::string& dir, Cf cf,
                                                   std::string_view key);
    // The same view of the index (read-only, no LOCK: a mount may be using
    // it) for every record of `cf`, in key order, until `each` returns false.
    // A missing family: no records.
    static Result<void> peek_each(
        const std::string& dir, Cf cf,
        const std::function<bool(std::string_view key, std::string_view value)>& each);
    // Deletes the index at `dir` (for reformat).
    static Result<void> destroy(const std::string& dir);

    Result<std::optional<std::string>> get(Cf cf, std::string_view key) const;
    Batch batch() const;
    // sync: fsync the WAL before returning (superblock, format); otherwise
    // the write survives a process kill but maybe not a power loss.
    Result<void> write(Batch& b, bool sync = false);
    // A cursor over `cf`; with `upper` set it stops before that key.
    Cursor cursor(Cf cf, std::optional<std::string> upper = std::nullopt) const;
    // Syncs the WAL: every write made before the call is durable after it
    // (writeback's fsync: the index entries of dirty data).
    Result<void> sync_wal();
    // Flushes memtables and syncs the WAL: called at clean stop.
    Result<void> flush();
    // The sequence number of the last write: it only grows, across
    // restarts too, so records can say which of two writes came first.
    std::uint64_t sequence() const;
    // Approximate bytes used by memtables and the block cache (for stats).
    std::uint64_t memory_bytes() const;
    // Approximate bytes `cf` takes: its table files and memtables.
    std::uint64_t approximate_bytes(Cf cf) const;
    // Compacts all of `cf` now: deletes made give their space back, and
    // approximate_bytes sees it.
    Result<void> compact(Cf cf);

    // ---- stale extents -------------------------------------------------------
    // Whether an extent written with (bucket, gen) still points at live data:
    // the allocator's view (Allocator::current). Called from RocksDB's
    // background threads, concurrently with everything else: it must be
    // thread-safe and must not call back into this MetaStore.
    using ExtentIsCurrent = std::function<bool(std::uint32_t bucket, std::uint32_t gen)>;
    // From now on, compactions of Cf::extents drop every clean extent for
    // which !is_current(bucket, gen). Before the first call (RocksDB may
    // compact right at open, before the bucket gens are loaded), or after a
    // call with an empty function, compactions keep everything. Dirty
    // extents (kExtentDirty) and values that do not decode are never dropped.
    // A compaction already running keeps the predicate it started with.
    // Because RocksDB filters one version of a key at a time, an extent
    // rewritten under the same key with a current gen is never lost to this.
    void set_extent_filter(ExtentIsCurrent is_current);
    // Compacts all of Cf::extents now, through the filter (GC, tests).
    Result<void> compact_extents();
    // Extents the filter dropped since open, and how many times it met (and
    // kept) a value that does not decode: a damaged extent counts once per
    // compaction that rewrites it.
    std::uint64_t stale_extents_dropped() const;
    std::uint64_t undecodable_extents_kept() const;

private:
    struct Impl;
    explicit MetaStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

} // namespace overcache::meta
