// DirtyFiles: the files whose record is ahead of the backing (they hold
// dirty data), in memory, by backing identity. Loaded at start-up from the
// dirty column family (recovery reads the index, never the cache device) and
// kept by FileRecords, which writes every record: getattr of a dirty file
// that nobody has open finds its size and mtime here without an index read,
// and writeback finds its work here.
#pragma once

#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/util/result.hpp"

#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace overcache::cache {

// What the mount shows of a dirty file, and since when it is dirty.
struct DirtyView {
    meta::FileId fid = 0;
    std::uint64_t size = 0;     // the cache's size of the file
    std::int64_t mtime_ns = 0;  // the cache's mtime
    std::int64_t since_ns = 0;  // unix time it became dirty (writeback_delay)
};

class DirtyFiles {
public:
    void set(const meta::FileKey& key, const DirtyView& v);
    void erase(const meta::FileKey& key);
    std::optional<DirtyView> find(const meta::FileKey& key) const;
    // Every dirty file, oldest first.
    std::vector<std::pair<meta::FileKey, DirtyView>> oldest_first() const;
    std::size_t size() const;

    // Start-up: every entry of the dirty family whose file record says it
    // is ahead. Entries without a record (a crash between the two cannot
    // happen: they are written in one batch) are logged and skipped.
    Result<void> load(meta::MetaStore& meta);

private:
    struct KeyHash {
        std::size_t operator()(const meta::FileKey& k) const noexcept {
            return std::hash<std::uint64_t>()(k.ino * 0x9e3779b97f4a7c15ull ^ k.fsid);
        }
    };
    mutable std::mutex mu_; // a leaf
    std::unordered_map<meta::FileKey, DirtyView, KeyHash> map_; // guarded by mu_
};

} // namespace overcache::cache
