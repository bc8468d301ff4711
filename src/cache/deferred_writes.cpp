#include "cache/deferred_writes.hpp"

#include "util/log.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace overcache::cache {

namespace {

// As place() lays bytes out: at their offset inside the file's 4 KiB grid
// block, in whole blocks.
constexpr std::uint64_t kBlock = meta::kCsumBlock;

// Writers retire records themselves past this many bytes; below it the
// writeback executor's retire (about once a second) keeps up.
constexpr std::uint64_t kHardBudget = 64u << 20;

} // namespace

DeferredWrites::DeferredWrites(store::CacheDevice& dev, store::Allocator& alloc,
                               std::uint64_t max_len)
    : dev_(dev), alloc_(alloc), max_len_(max_len) {}

void DeferredWrites::stage(meta::Batch& b, const ExtentIndex::Placement& pl, const char* data) {
    std::lock_guard lk(mu_);
    for (const auto& p : pl.pieces) {
        const meta::DeferredKey k{p.a.bucket, p.a.gen, p.a.offset};
        const auto phase = static_cast<std::uint32_t>(p.start % kBlock);
        b.put(meta::Cf::meta, meta::deferred_key(k),
              meta::encode_deferred(phase, data + (p.start - pl.start), p.len));
        // Known before the batch commits: the bucket stays pinned until
        // then, so reclaim cannot look for its records any earlier. A batch
        // that never commits leaves a key to delete that is not there.
        if (auto [it, added] = live_.emplace(k, p.len); added)
            bytes_ += p.len;
    }
    written_.fetch_add(1, std::memory_order_relaxed);
}

Result<void> DeferredWrites::sync_device() {
    const std::uint64_t w = direct_written_.load(std::memory_order_acquire);
    if (w == direct_synced_.load(std::memory_order_acquire))
        return {};
    if (auto r = dev_.sync(); !r)
        return r;
    // Everything counted before the sync began is durable now.
    std::uint64_t s = direct_synced_.load(std::memory_order_acquire);
    while (s < w && !direct_synced_.compare_exchange_weak(s, w, std::memory_order_acq_rel)) {
    }
    return {};
}

void DeferredWrites::forget_bucket(meta::Batch& b, std::uint32_t bucket) {
    std::lock_guard lk(mu_);
    auto it = live_.lower_bound(meta::DeferredKey{bucket, 0, 0});
    while (it != live_.end() && it->first.bucket == bucket) {
        b.del(meta::Cf::meta, meta::deferred_key(it->first));
        bytes_ -= it->second;
        it = live_.erase(it);
    }
}

Result<void> DeferredWrites::retire() {
    std::unique_lock rl(retire_mu_, std::try_to_lock);
    if (!rl.owns_lock())
        return {};
    std::vector<meta::DeferredKey> keys;
    {
        std::lock_guard lk(mu_);
        keys.reserve(live_.size());
        for (const auto& [k, len] : live_)
            keys.push_back(k);
    }
    if (keys.empty())
        return {};
    if (before_retire_sync)
        before_retire_sync();
    // Every record taken above had its bytes written before it was staged.
    if (auto r = dev_.sync(); !r)
        return r;
    auto batch = dev_.meta().batch();
    for (const auto& k : keys)
        batch.del(meta::Cf::meta, meta::deferred_key(k));
    // Unsynced: a record that outlives a crash is only written again.
    if (auto r = dev_.meta().write(batch); !r)
        return r;
    std::lock_guard lk(mu_);
    for (const auto& k : keys)
        if (auto it = live_.find(k); it != live_.end()) {
            bytes_ -= it->second;
            live_.erase(it);
        }
    retired_.fetch_add(keys.size(), std::memory_order_relaxed);
    return {};
}

bool DeferredWrites::over_hard_budget() const {
    std::lock_guard lk(mu_);
    return bytes_ > kHardBudget;
}

Result<void> DeferredWrites::replay() {
    std::vector<std::string> keys;
    std::uint64_t n = 0, bytes = 0, stale = 0;
    {
        auto cur = dev_.meta().cursor(meta::Cf::meta, meta::deferred_prefix_end());
        std::vector<char> buf;
        for (cur.seek(meta::kDeferredPrefix); cur.valid(); cur.next()) {
            keys.emplace_back(cur.key());
            meta::DeferredKey k;
            std::uint32_t phase = 0;
            std::string_view data;
            if (!meta::decode_deferred_key(cur.key(), k) ||
                !meta::decode_deferred(cur.value(), phase, data) || phase >= kBlock ||
                k.bucket >= alloc_.bucket_count() ||
                k.offset + phase + data.size() > alloc_.bucket_size()) {
                log::warn("cache: a deferred write record does not decode; dropped");
                continue;
            }
            // A bucket freed since: its bytes were dead or clean, and the
            // space may hold newer ones.
            if (!alloc_.current(k.bucket, k.gen)) {
                ++stale;
                continue;
            }
            const std::uint64_t span = (phase + data.size() + kBlock - 1) / kBlock * kBlock;
            buf.assign(span, '\0');
            std::memcpy(buf.data() + phase, data.data(), data.size());
            const std::uint64_t len = std::min<std::uint64_t>(span, alloc_.bucket_size() - k.offset);
            if (auto r = dev_.write(dev_.device_offset(k.bucket, k.offset), buf.data(), len); !r)
                return r; // the records stay: the next start-up tries again
            ++n;
            bytes += data.size();
        }
        if (auto r = cur.status(); !r)
            return r;
    }
    if (keys.empty())
        return {};
    if (auto r = dev_.sync(); !r)
        return r;
    auto batch = dev_.meta().batch();
    for (const auto& k : keys)
        batch.del(meta::Cf::meta, k);
    if (auto r = dev_.meta().write(batch, true); !r)
        return r;
    replayed_.fetch_add(n, std::memory_order_relaxed);
    log::info("cache: ", n, " deferred writes (", bytes, " bytes) written to the cache device again",
              stale > 0 ? "; " + std::to_string(stale) + " records of freed buckets dropped" : "");
    return {};
}

DeferredStats DeferredWrites::stats() const {
    DeferredStats s;
    {
        std::lock_guard lk(mu_);
        s.records = live_.size();
        s.bytes = bytes_;
    }
    s.written = written_.load(std::memory_order_relaxed);
    s.retired = retired_.load(std::memory_order_relaxed);
    s.replayed = replayed_.load(std::memory_order_relaxed);
    return s;
}

} // namespace overcache::cache
