// PathPolicy: the one owner of per-path settings (the index's `policy`
// family). Policies are few, so all of them are held in memory from mount
// on; lookups are a map probe under a shared lock, with no backing or index
// I/O, and a mount with none set skips even that.
#pragma once

#include "overcache/cache/path_settings.hpp"
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/util/result.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

namespace overcache::cache {

// The record as stored, and back; nullopt for a damaged record.
meta::PolicyRecord to_record(const PathSettings& s) noexcept;
std::optional<PathSettings> from_record(const meta::PolicyRecord& r) noexcept;

class PathPolicy {
public:
    explicit PathPolicy(meta::MetaStore& meta) : meta_(meta) {}

    // Reads every record; a damaged one is logged and skipped (that path
    // inherits), never guessed at.
    Result<void> load();
    bool any() const noexcept { return count_.load(std::memory_order_relaxed) != 0; }
    std::optional<PathSettings> get(const meta::FileKey& k) const;
    // The keys pinned explicitly (pin=1 set on them).
    std::vector<meta::FileKey> pinned() const;
    // Stores `s` for `k` (synced), empty removes it; the map follows only
    // once the index has it.
    Result<void> set(const meta::FileKey& k, const PathSettings& s);

private:
    using Id = std::pair<std::uint64_t, std::uint64_t>;
    meta::MetaStore& meta_;
    std::mutex set_mu_; // setters, one at a time, so the index and the map agree; before mu_
    mutable std::shared_mutex mu_;      // a leaf; no I/O is done under it
    std::map<Id, PathSettings> by_key_; // guarded by mu_
    std::atomic<std::size_t> count_{0}; // by_key_.size(), for any()
};

} // namespace overcache::cache
