// ReadPath: reads through the cache, and the fills that follow misses.
#pragma once

#include "cache/admission.hpp"
#include "cache/cache_core.hpp"
#include "cache/cached_file.hpp"
#include "overcache/bg/executors.hpp"

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

namespace overcache::cache {

class ReadPath {
public:
    // Fills run on `fill` (the foreground fill executor).
    ReadPath(CacheCore& core, bg::Executor fill, const CacheHooks& hooks);

    // What comes from the backing comes through `backing` (DataPath::read).
    Result<ReadOut> read(CachedFile& f, char* buf, std::size_t size, off_t off,
                         const DataPath::BackingRead& backing);

    // For fills made elsewhere (the prefetcher): takes the chunk of `fid`
    // that starts at byte `chunk` into the in-flight set and `bytes` under
    // the pending-fill cap, waiting while a read fills that chunk or the cap
    // is reached (a lone claim always fits). false, without claiming, once the cache stops or `cancelled`
    // says so. Never called on a FUSE thread: it may wait.
    bool claim(meta::FileId fid, std::uint64_t chunk, std::uint64_t bytes,
               const std::function<bool()>& cancelled);
    // Gives back what claim() took.
    void release(meta::FileId fid, std::uint64_t chunk, std::uint64_t bytes);

    // Waits until every fill queued so far has finished.
    void drain();
    std::uint64_t pending() const;

private:
    // A chunk is named by its first byte, not by its number: fill_size can
    // change while fills are in flight, and chunks of two sizes must never
    // share a name (one would be skipped as in flight for the other).
    struct ChunkKey {
        meta::FileId fid;
        std::uint64_t chunk;
        bool operator==(const ChunkKey&) const = default;
    };
    struct ChunkHash {
        std::size_t operator()(const ChunkKey& k) const noexcept {
            return std::hash<std::uint64_t>()(k.fid * 0x9e3779b97f4a7c15ull ^ k.chunk);
        }
    };
    struct Fill {
        StateRef file;
        meta::FileId fid = 0;
        std::uint64_t epoch = 0;
        std::uint64_t seq = 0;
        std::uint64_t start = 0; // names the chunk too
        std::vector<char> data;
    };

    bool try_hit(FileState& st, std::uint64_t start, std::uint64_t end, char* out);
    // A miss in [start, end) of the chunk [cs, cs + chunk_len), clipped to
    // fsize.
    ssize_t miss_chunk(CachedFile& f, std::uint64_t cs, std::uint64_t chunk_len,
                       std::uint64_t start, std::uint64_t end, std::uint64_t fsize, char* out,
                       const DataPath::BackingRead& backing);
    // A miss in a file ahead of the backing: the backing's bytes, zeros
    // past its end, the dirty extents over both; not filled.
    ssize_t miss_ahead(CachedFile& f, std::uint64_t start, std::uint64_t end, char* out,
                       const DataPath::BackingRead& backing);
    void fill(Fill& f);
    void finish(meta::FileId fid, std::uint64_t chunk, std::uint64_t bytes, bool queued);

    CacheCore& core_;
    bg::Executor fill_ex_;
    const CacheHooks& hooks_;

    MissFilter admission_; // promote_after_hits
    mutable std::mutex mu_; // a leaf
    std::condition_variable idle_cv_;
    std::condition_variable slot_cv_; // a chunk or pending bytes were given back
    std::unordered_set<ChunkKey, ChunkHash> inflight_; // guarded by mu_
    std::uint64_t pending_bytes_ = 0;                  // guarded by mu_
    std::uint64_t pending_fills_ = 0;                  // guarded by mu_
};

} // namespace overcache::cache
