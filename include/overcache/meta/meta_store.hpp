// MetaStore: the one owner of RocksDB. Everything above sees column
// families (Cf), string keys and values, Batch and Cursor; no RocksDB type
// leaves src/meta.
#pragma once

#include "overcache/meta/schema.hpp"
#include "overcache/util/result.hpp"

#include <cstdint>
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
    // Opens (or with create_if_missing creates) the index at `dir`.
    static Result<std::unique_ptr<MetaStore>> open(const std::string& dir, const StoreOptions& o);
    // Deletes the index at `dir` (for reformat).
    static Result<void> destroy(const std::string& dir);

    Result<std::optional<std::string>> get(Cf cf, std::string_view key) const;
    Batch batch() const;
    // sync: fsync the WAL before returning (superblock, format); otherwise
    // the write survives a process kill but maybe not a power loss.
    Result<void> write(Batch& b, bool sync = false);
    // A cursor over `cf`; with `upper` set it stops before that key.
    Cursor cursor(Cf cf, std::optional<std::string> upper = std::nullopt) const;
    // Flushes memtables and syncs the WAL: called at clean stop.
    Result<void> flush();
    // Approximate bytes used by memtables and the block cache (for stats).
    std::uint64_t memory_bytes() const;

private:
    struct Impl;
    explicit MetaStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

} // namespace overcache::meta
