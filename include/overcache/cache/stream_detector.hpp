// StreamDetector: is this read part of a sequential stream that has gone
// past `sequential_cutoff`? One per open file. Reads of one stream may
// arrive out of order (kernel readahead with several FUSE reads in flight),
// so a stream is matched by a window around its frontier, not by the exact
// next offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace overcache::cache {

struct StreamDetectorParams {
    // A read continues a stream when it starts at most this far ahead of,
    // or behind, the stream's frontier (the highest byte it has read).
    std::uint64_t window_bytes = 4u << 20;
    // Streams tracked at once; a read that continues none replaces the least
    // recently used one.
    std::size_t max_streams = 4;
    // Disjoint runs kept per stream (the main run plus out-of-order reads
    // waiting for the gap below them to fill); at least 2.
    std::size_t max_runs = 16;
    // A run that has not grown in this many reads of its stream is
    // forgotten (an out-of-order read's gap fills within a few reads; the
    // runs of random reads stay idle).
    std::size_t run_idle_reads = 32;
};

class StreamDetector {
public:
    StreamDetector() : StreamDetector(StreamDetectorParams{}) {}
    explicit StreamDetector(const StreamDetectorParams& p);

    // Records the read [off, off + len) and returns true when the stream it
    // belongs to has a contiguous run longer than `cutoff` bytes, i.e. the
    // read should bypass the cache. `cutoff` 0 never bypasses (and records
    // nothing). Thread-safe.
    [[nodiscard]] bool note_read(std::uint64_t off, std::uint64_t len, std::uint64_t cutoff);

    // Forgets every stream (after a truncate, say).
    void reset();

private:
    struct Run {
        std::uint64_t begin;
        std::uint64_t end;
        std::uint64_t grown; // Stream::reads when it last grew
        std::uint64_t len() const { return end - begin; }
    };
    struct Stream {
        std::vector<Run> runs; // sorted by begin, disjoint, not touching
        std::size_t main = 0;  // index of the longest run (ties: the highest)
        std::uint64_t last_use = 0;
        std::uint64_t reads = 0; // reads that joined this stream
        std::uint64_t frontier() const { return runs.back().end; }
        std::uint64_t longest() const { return runs[main].len(); }
    };

    Stream* find_stream(std::uint64_t off);
    Stream& new_stream();
    void add_run(Stream& s, std::uint64_t begin, std::uint64_t end) const;

    const StreamDetectorParams p_;
    std::mutex mu_;               // FUSE threads may read one open at once
    std::vector<Stream> streams_; // guarded by mu_
    std::uint64_t tick_ = 0;      // guarded by mu_; orders last_use
};

} // namespace overcache::cache
