// The working set: how many distinct bytes of files were read or written
// through the mount over the last five minutes, hour and day, as Solaris'
// cachefswssize told how big a cache had to be. A cache smaller than the
// hour's working set keeps evicting what it will need again.
//
// Counting distinct ranges exactly would take memory in proportion to the
// data touched; instead each minute and each hour gets a HyperLogLog sketch
// of the 4 KiB blocks (file, offset / 4 KiB) touched in it. A window's
// estimate is the union (register-wise max) of the sketches inside it:
// within about 2% (1.04 / sqrt(2048)) with 2048 registers, in fixed memory
// (61 + 25 sketches of 2 KiB), whatever the uptime. A window is exact to its
// step: five minutes and the hour count whole minutes (the current one
// included), the day whole hours.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace overcache::cache {

class WorkingSet {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr std::uint64_t kBlock = 4096;
    static constexpr unsigned kRegisterBits = 11;
    static constexpr std::size_t kRegisters = std::size_t{1} << kRegisterBits;

    // The blocks of [off, off + len) of the file whose identity hashes to
    // `file_hash` were touched at `now`. Lock-free but for the first touch
    // of a minute; safe from any thread. A few nanoseconds a block: a
    // register is written only when the block raises it, which soon stops
    // happening for blocks seen before.
    void touch(std::uint64_t file_hash, std::uint64_t off, std::uint64_t len,
               Clock::time_point now = Clock::now()) noexcept;

    struct Estimate {
        std::uint64_t five_minute = 0, hour = 0, day = 0; // bytes
    };
    Estimate estimate(Clock::time_point now = Clock::now()) const;

    // Forgets everything touched so far (reset_stats).
    void clear() noexcept;

private:
    // A step no window reaches (windows of a young mount start at negative
    // steps).
    static constexpr std::int64_t kNoStep = INT64_MIN;
    struct Sketch {
        std::atomic<std::int64_t> step{kNoStep}; // the minute or hour it counts
        std::array<std::atomic<std::uint8_t>, kRegisters> reg{};
    };
    template <std::size_t N>
    struct Ring {
        std::array<Sketch, N> slots;
        std::int64_t step_len_s;
    };

    // The sketch of `step` in `ring`, reset for it if it held an older one.
    template <std::size_t N>
    Sketch& slot_for(Ring<N>& ring, std::int64_t step) noexcept;
    template <std::size_t N>
    void merge(const Ring<N>& ring, std::int64_t first, std::int64_t last,
               std::array<std::uint8_t, kRegisters>& into) const;
    static void add(Sketch& s, std::uint64_t hash) noexcept;
    static double count(const std::array<std::uint8_t, kRegisters>& regs);
    std::int64_t seconds_of(Clock::time_point t) const noexcept;

    const Clock::time_point origin_ = Clock::now();
    // Steps are counted from origin_; 61 minutes cover the hour and the
    // current minute, 25 hours the day and the current hour.
    Ring<61> minutes_{{}, 60};
    Ring<25> hours_{{}, 3600};
    std::mutex reset_mu_; // serialises resetting a slot for a new step
};

} // namespace overcache::cache
