// DOC: a live shrink's evacuation rounds (Gc::evacuate; the shrink itself
// is cache/live_resize.cpp). Each round, on the GC strand:
//  1. the dirty and pinned extents of up to move_batch retiring buckets are
//     copied below the cut (they exist nowhere else, or were asked to
//     stay), clean buckets below the cut reclaimed first if the copies need
//     their room;
//  2. clean data that still fits is kept: the most recently used retiring
//     buckets of clean data are copied below the cut while the free buckets
//     there exceed the reserve, the high watermark and what step 1 still
//     needs (so keeping it never makes GC evict other data);
//  3. every clean retiring bucket is freed but those the next round means
//     to keep; a bucket tried in step 2 and not emptied (its copy lost a
//     race, or did not fit) is not spared again, so every round frees what
//     it looked at and the shrink always gets to its end.
#include "overcache/bg/gc.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <vector>

namespace overcache::bg {

std::size_t Gc::clean_room() const {
    const std::uint64_t bucket = alloc_.bucket_size();
    const auto need = alloc_.shrink_need(alloc_.retiring_from());
    const std::uint64_t moving =
        (need.move_bytes + bucket - 1) / bucket + (need.move_bytes > 0 ? 2 : 0);
    const std::uint64_t floor = std::uint64_t{alloc_.reserve()} + params_.high_free.get() + moving;
    const std::uint64_t free = alloc_.free_count();
    return free > floor + 1 ? static_cast<std::size_t>(free - floor - 1) : 0;
}

void Gc::evacuate(std::function<void(Result<std::size_t>)> done) {
    boost::asio::post(strand_, [this, done = std::move(done)] {
        if (stopping_.load())
            return done(fail_sys(ESHUTDOWN, "the mount is shutting down"));
        const auto count_error = [this] {
            std::lock_guard lk(stats_mu_);
            ++stats_.move_errors;
        };
        const auto count_moved = [this](std::uint64_t bytes) {
            std::lock_guard lk(stats_mu_);
            stats_.moved_bytes += bytes;
        };
        auto held = alloc_.retiring_held(params_.move_batch);
        if (mover_ != nullptr && !held.empty()) {
            // The copies need free buckets below the new end: clean ones
            // there are reclaimed for them (the shrink checked that the
            // data fits once they are).
            std::uint64_t bytes = 0;
            for (const auto& h : held)
                bytes += std::min<std::uint64_t>(h.live, std::uint64_t{h.dirty} + h.pinned);
            const std::size_t want = bytes / alloc_.bucket_size() + 2 + alloc_.reserve();
            if (const std::size_t free = alloc_.free_count(); free < want)
                if (auto r = alloc_.reclaim(want - free); !r)
                    return done(fail(r.error()));
            auto m = mover_->evacuate(wp_, held, false);
            if (!m) {
                count_error();
                return done(fail(m.error()));
            }
            count_moved(m->bytes);
        }
        // Clean data is kept only while it fits: a copy that fails (the
        // device, a race) costs nothing but the cached bytes, as at a drop.
        std::vector<std::uint32_t> tried;
        if (mover_ != nullptr)
            if (const std::size_t room = clean_room(); room > 0) {
                auto clean = alloc_.retiring_clean(std::min(room, params_.move_batch));
                if (!clean.empty()) {
                    auto m = mover_->evacuate(wp_, clean, true);
                    if (m)
                        count_moved(m->bytes);
                    else
                        count_error();
                    for (const auto& c : clean)
                        tried.push_back(c.bucket);
                }
            }
        std::vector<std::uint32_t> spared;
        if (mover_ != nullptr)
            if (const std::size_t room = clean_room(); room > 0)
                for (const auto& c :
                     alloc_.retiring_clean(std::min(room, params_.move_batch) + tried.size()))
                    if (spared.size() < std::min(room, params_.move_batch) &&
                        std::find(tried.begin(), tried.end(), c.bucket) == tried.end())
                        spared.push_back(c.bucket);
        auto freed = alloc_.reclaim_retiring(spared);
        if (!freed)
            return done(fail(freed.error()));
        {
            std::lock_guard lk(stats_mu_);
            stats_.buckets_reclaimed += *freed;
        }
        done(alloc_.retiring_busy());
    });
}

} // namespace overcache::bg
