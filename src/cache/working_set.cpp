// DOC: the working-set estimate (working_set.hpp): HyperLogLog sketches of
// the 4 KiB blocks touched, one a minute and one an hour, merged per window.
#include "cache/working_set.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

namespace overcache::cache {
namespace {

// splitmix64's finaliser: a block's number and its file's hash mixed into
// 64 bits whose every bit depends on both.
std::uint64_t mix(std::uint64_t x) noexcept {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

} // namespace

std::int64_t WorkingSet::seconds_of(Clock::time_point t) const noexcept {
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(t - origin_).count();
    return std::max<std::int64_t>(s, 0);
}

void WorkingSet::add(Sketch& s, std::uint64_t hash) noexcept {
    const std::size_t idx = static_cast<std::size_t>(hash >> (64 - kRegisterBits));
    const std::uint64_t rest = hash << kRegisterBits;
    const auto rank = static_cast<std::uint8_t>(
        rest == 0 ? 64 - kRegisterBits + 1 : std::countl_zero(rest) + 1);
    auto& r = s.reg[idx];
    std::uint8_t cur = r.load(std::memory_order_relaxed);
    while (cur < rank && !r.compare_exchange_weak(cur, rank, std::memory_order_relaxed)) {
    }
}

template <std::size_t N>
WorkingSet::Sketch& WorkingSet::slot_for(Ring<N>& ring, std::int64_t step) noexcept {
    Sketch& s = ring.slots[static_cast<std::size_t>(step) % N];
    if (s.step.load(std::memory_order_acquire) == step)
        return s;
    std::lock_guard lk(reset_mu_);
    // A slot already on a later step keeps it: this touch is counted a
    // step late, which no window notices.
    if (s.step.load(std::memory_order_relaxed) < step) {
        for (auto& r : s.reg)
            r.store(0, std::memory_order_relaxed);
        s.step.store(step, std::memory_order_release);
    }
    return s;
}

void WorkingSet::touch(std::uint64_t file_hash, std::uint64_t off, std::uint64_t len,
                       Clock::time_point now) noexcept {
    if (len == 0)
        return;
    const std::int64_t sec = seconds_of(now);
    Sketch& minute = slot_for(minutes_, sec / minutes_.step_len_s);
    Sketch& hour = slot_for(hours_, sec / hours_.step_len_s);
    const std::uint64_t seed = mix(file_hash);
    for (std::uint64_t b = off / kBlock, last = (off + len - 1) / kBlock; b <= last; ++b) {
        const std::uint64_t h = mix(seed ^ (b * 0x9E3779B97F4A7C15ull));
        add(minute, h);
        add(hour, h);
    }
}

template <std::size_t N>
void WorkingSet::merge(const Ring<N>& ring, std::int64_t first, std::int64_t last,
                       std::array<std::uint8_t, kRegisters>& into) const {
    for (const Sketch& s : ring.slots) {
        const std::int64_t step = s.step.load(std::memory_order_acquire);
        if (step < first || step > last)
            continue;
        for (std::size_t i = 0; i < kRegisters; ++i)
            into[i] = std::max(into[i], s.reg[i].load(std::memory_order_relaxed));
    }
}

double WorkingSet::count(const std::array<std::uint8_t, kRegisters>& regs) {
    constexpr double m = kRegisters;
    const double alpha = 0.7213 / (1.0 + 1.079 / m);
    double sum = 0;
    std::size_t zeros = 0;
    for (std::uint8_t r : regs) {
        sum += std::ldexp(1.0, -static_cast<int>(r));
        zeros += r == 0 ? 1 : 0;
    }
    const double raw = alpha * m * m / sum;
    // Few distinct blocks: linear counting of the empty registers is the
    // better estimate (and exact at zero).
    if (raw <= 2.5 * m && zeros > 0)
        return m * std::log(m / static_cast<double>(zeros));
    return raw;
}

WorkingSet::Estimate WorkingSet::estimate(Clock::time_point now) const {
    const std::int64_t sec = seconds_of(now);
    const std::int64_t minute = sec / minutes_.step_len_s, hour = sec / hours_.step_len_s;
    const auto bytes = [](const std::array<std::uint8_t, kRegisters>& regs) {
        return static_cast<std::uint64_t>(std::llround(count(regs))) * kBlock;
    };
    Estimate e;
    std::array<std::uint8_t, kRegisters> regs{};
    merge(minutes_, minute - 4, minute, regs);
    e.five_minute = bytes(regs);
    merge(minutes_, minute - 59, minute - 5, regs); // adds to the five minutes
    e.hour = bytes(regs);
    regs.fill(0);
    merge(hours_, hour - 23, hour, regs);
    e.day = bytes(regs);
    // The day's hours are coarser than the hour's minutes: never show the
    // day smaller than the hour it contains.
    e.day = std::max(e.day, e.hour);
    return e;
}

void WorkingSet::clear() noexcept {
    std::lock_guard lk(reset_mu_);
    for (auto& s : minutes_.slots)
        s.step.store(kNoStep, std::memory_order_release);
    for (auto& s : hours_.slots)
        s.step.store(kNoStep, std::memory_order_release);
}

} // namespace overcache::cache
