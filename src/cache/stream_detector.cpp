// DOC: sequential-stream detection for the sequential_cutoff bypass. bcache
// keeps a small table of recent I/Os and matches a bio to the one it
// continues; FUSE reads of one stream arrive out of order (readahead puts
// several in flight), so here a stream is a few disjoint runs of bytes seen,
// and a read joins the stream whose frontier (its highest byte read) is
// within `window_bytes` of the read's start, ahead or behind. Runs merge when
// they touch, so a run is bytes read contiguously in whatever order they
// came; the stream bypasses once its longest run exceeds the cutoff. A run
// that stops growing for `run_idle_reads` reads of its stream is forgotten:
// out-of-order gaps fill within a few reads, random reads' runs sit idle
// (so they never knit into a long run), and after a hole (pages the kernel
// already had) the stream counts afresh from the hole's end, as bcache
// does after a discontinuity. Re-reads add no length. A read that continues
// no stream replaces the least recently used one. Invariant: every stream has at least
// one run, its runs sorted and disjoint. One mutex per open; no I/O here.
#include "overcache/cache/stream_detector.hpp"

#include <algorithm>

namespace overcache::cache {

StreamDetector::StreamDetector(const StreamDetectorParams& p) : p_(p) {
    streams_.reserve(std::max<std::size_t>(p_.max_streams, 1));
}

bool StreamDetector::note_read(std::uint64_t off, std::uint64_t len, std::uint64_t cutoff) {
    if (cutoff == 0 || len == 0)
        return false;
    const std::uint64_t end = off + std::min(len, UINT64_MAX - off);
    std::lock_guard lk(mu_);
    Stream* s = find_stream(off);
    if (s == nullptr)
        s = &new_stream();
    s->last_use = ++tick_;
    add_run(*s, off, end);
    return s->longest() > cutoff;
}

void StreamDetector::reset() {
    std::lock_guard lk(mu_);
    streams_.clear();
}

StreamDetector::Stream* StreamDetector::find_stream(std::uint64_t off) {
    Stream* best = nullptr;
    std::uint64_t best_dist = 0;
    for (auto& s : streams_) {
        const std::uint64_t f = s.frontier();
        const std::uint64_t dist = off >= f ? off - f : f - off;
        if (dist > p_.window_bytes)
            continue;
        if (best == nullptr || dist < best_dist) {
            best = &s;
            best_dist = dist;
        }
    }
    return best;
}

StreamDetector::Stream& StreamDetector::new_stream() {
    if (streams_.size() < std::max<std::size_t>(p_.max_streams, 1))
        return streams_.emplace_back();
    auto lru =
        std::min_element(streams_.begin(), streams_.end(),
                         [](const Stream& a, const Stream& b) { return a.last_use < b.last_use; });
    lru->runs.clear();
    lru->main = 0;
    lru->reads = 0;
    return *lru;
}

void StreamDetector::add_run(Stream& s, std::uint64_t begin, std::uint64_t end) const {
    ++s.reads;
    // Merge [begin, end) with every run it overlaps or touches. A read that
    // only re-reads bytes of one run does not count as growth.
    auto first = std::lower_bound(s.runs.begin(), s.runs.end(), begin,
                                  [](const Run& r, std::uint64_t b) { return r.end < b; });
    const bool grew = first == s.runs.end() || first->begin > begin || first->end < end;
    std::uint64_t grown = s.reads;
    auto last = first;
    while (last != s.runs.end() && last->begin <= end) {
        begin = std::min(begin, last->begin);
        end = std::max(end, last->end);
        if (!grew)
            grown = last->grown;
        ++last;
    }
    first = s.runs.erase(first, last);
    s.runs.insert(first, Run{begin, end, grown});
    const std::uint64_t current = begin; // the run holding this read: always kept

    // Forget runs that stopped growing: an out-of-order read's gap fills
    // within a few reads, and a stream's main run grows with nearly every
    // read, while runs made by random reads, or a run left behind by a
    // skip, sit idle. This also bounds how long a random pattern can take
    // to knit runs together.
    const std::uint64_t idle = std::max<std::uint64_t>(p_.run_idle_reads, 1);
    std::erase_if(s.runs,
                  [&](const Run& r) { return r.begin != current && s.reads - r.grown > idle; });

    auto pick_main = [&s] {
        s.main = 0;
        for (std::size_t i = 1; i < s.runs.size(); ++i)
            if (s.runs[i].len() >= s.runs[s.main].len())
                s.main = i;
    };
    pick_main();

    // Too many runs: drop the shortest (never the main or the current run),
    // the farthest from the frontier among equals.
    const std::size_t max_runs = std::max<std::size_t>(p_.max_runs, 2);
    while (s.runs.size() > max_runs) {
        const std::uint64_t fr = s.frontier();
        std::size_t victim = s.runs.size();
        for (std::size_t i = 0; i < s.runs.size(); ++i) {
            const Run& r = s.runs[i];
            if (i == s.main || r.begin == current)
                continue;
            if (victim == s.runs.size()) {
                victim = i;
                continue;
            }
            const Run& v = s.runs[victim];
            if (r.len() < v.len() || (r.len() == v.len() && fr - r.end > fr - v.end))
                victim = i;
        }
        s.runs.erase(s.runs.begin() + static_cast<std::ptrdiff_t>(victim));
        pick_main();
    }
}

} // namespace overcache::cache
