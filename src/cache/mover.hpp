// Mover: moving GC's policy half (bg::BucketMover), on the GC strand. Finds
// the live extents of the buckets GC picked by scanning the extents column
// family (no reverse index is kept), copies them through GC's write point
// with no lock held, and commits each file's moves under that file's owner
// lock, only for extents still exactly as read.
#pragma once

#include "cache/cache_core.hpp"
#include "overcache/bg/gc.hpp"

#include <cstdint>
#include <functional>
#include <vector>

namespace overcache::cache {

class Mover final : public bg::BucketMover {
public:
    explicit Mover(CacheCore& core) : core_(core) {}

    Result<bg::MoveOutcome> move(store::WritePoint& wp,
                                 const std::vector<store::BucketUsage>& candidates) override;
    Result<bg::MoveOutcome> evacuate(store::WritePoint& wp,
                                     const std::vector<store::BucketUsage>& buckets,
                                     bool with_clean) override;

    // Test seam: the copies of `file`'s extents are on the cache device
    // (synced), nothing is locked or committed yet.
    std::function<void(meta::FileId file)> before_commit;

private:
    struct Found {
        meta::FileId file = 0;
        Piece piece;
    };
    // Every current extent in the candidates' buckets, in index order
    // ((file, offset)), and per candidate whether the scan saw all of it.
    Result<std::vector<Found>> scan(const std::vector<store::BucketUsage>& candidates);
    // The candidates (a prefix, least live first) whose extents fit where
    // `wp` can write and free more buckets than they take.
    std::vector<store::BucketUsage> choose(const store::WritePoint& wp,
                                           const std::vector<store::BucketUsage>& candidates,
                                           const std::vector<Found>& found) const;
    // Steps 3-6 below for the extents of `found` in `victims`' buckets.
    Result<bg::MoveOutcome> relocate(store::WritePoint& wp, const std::vector<Found>& found,
                                     const std::vector<store::BucketUsage>& victims);
    // Commits the copies of one file (its owner lock held briefly).
    Result<void> commit_file(meta::FileId file, std::vector<MovedCopy>& copies,
                             std::vector<Piece>& bad, bg::MoveOutcome& out);

    CacheCore& core_;
};

} // namespace overcache::cache
