// The backing's reachability, and where calls into it wait with a deadline.
//
// A backing that stops answering (an NFS server gone quiet) blocks calls
// instead of failing them. A FUSE thread that made such a call itself would
// stay with it, and enough of them take the whole mount down, cached files
// and the control file included. So a call that may stall is handed to one
// of the gate's own threads, and its caller waits at most `timeout`. A call
// that misses the deadline turns the backing `offline`: from then on calls
// are refused at once (the caller answers from the cache or fails), so a
// stall costs one deadline, not one per request. A probe thread of its own
// asks the backing (statfs, which no kernel cache answers) until it answers,
// and turns it `online` again.
//
// A call abandoned at its deadline may still finish later on its thread:
// it must own everything it touches (a dup of a descriptor, copies of
// names), never the caller's stack. The threads are bounded; a call queued
// behind stuck ones waits for its deadline like any other.
//
// The hop costs: waking a sleeping thread takes 10-20 us on a virtual
// machine, twice per call, where a healthy local backing answers a stat in
// 1-2 us. So while calls come quickly and answer quickly, the last worker
// to finish stays awake a moment for the next call, and a caller waits
// for a quick answer awake, both yielding the CPU to any thread that can
// run (a spin without yielding was slower still on 2 cores: it takes the
// CPU from the program and the request threads); a slow call or a pause
// puts them to sleep.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace overcache::backing {


class Gate {
public:
    struct Options {
        std::chrono::milliseconds timeout{5000};
        // false: calls run on the caller's thread and wait as long as the
        // backing takes; the backing is never offline (offline_ok=0).
        bool offline_ok = true;
        unsigned threads = 8;
        // How often an offline backing is asked again.
        std::chrono::milliseconds probe_interval{1000};
    };
    // `probe` asks the backing something only it can answer and returns 0
    // when it did (an errno otherwise); it runs on the probe thread.
    Gate(Options opts, std::function<int()> probe);
    ~Gate();
    Gate(const Gate&) = delete;
    Gate& operator=(const Gate&) = delete;

    // How long a call is waited for. `deadline`: `timeout`, then the
    // backing is offline. `while_alive`: a call whose length grows with
    // the bytes it moves (a write, an fsync of a file with much dirty data
    // on an NFS client) may take longer than a healthy backing's answer to
    // anything else; it is waited for as long as the probe answers
    // (Watch), and given up on once an ask of the probe went unanswered
    // for `timeout`.
    enum class Patience { deadline, while_alive };
    // How long a patient call runs before the probe is asked along
    // (`timeout / 4` if less): longer than a healthy backing's answer.
    static constexpr std::chrono::milliseconds kFirstLook{100};

    // Runs `fn` on a gate thread and waits for its result until the
    // deadline. nullopt: the backing is offline (fn did not run) or fn
    // missed the deadline (the backing is offline from now on).
    template <class F>
    auto call(F fn, Patience patience = Patience::deadline)
        -> std::optional<std::invoke_result_t<F&>>;

    // Runs `job` on a gate thread without waiting for it (closing a
    // descriptor, which a backing may answer late): online or not, it runs
    // once the backing lets it. Inline with offline_ok off or when stopping.
    // The job is moved, never copied: what it holds (the last reference to
    // a descriptor) is let go of where it runs, not on the caller's thread.
    void post(std::function<void()> job);

    bool online() const noexcept;
    bool offline_ok() const noexcept { return opts_.offline_ok; }
    // The wall-clock time (ns since the epoch) before which what was seen of
    // the backing may be out of date because of calls abandoned at their
    // deadline: a change given up on may still land. INT64_MAX while one
    // still runs, else when the last one ended; 0 if none ever was.
    std::int64_t settled_after_ns() const noexcept;
    // Whether a call abandoned at its deadline is still running, asked of
    // state that outlives the gate: callable from any thread, even after
    // the gate is gone (then true only while a left-behind call runs).
    std::function<bool()> unsettled_watch() const;
    std::chrono::milliseconds timeout() const noexcept { return opts_.timeout; }

    struct Stats {
        bool online = true;
        std::uint64_t timeouts = 0;      // calls that missed their deadline
        std::uint64_t offline_total = 0; // times the backing went offline
        std::uint64_t refused = 0;       // calls not tried: the backing was offline
        double offline_seconds = 0;      // the current stall so far; 0 when online
    };
    Stats stats() const;

    // A call missed its deadline: the backing is offline from now on,
    // until the probe hears from it.
    void note_timeout();

    // For a caller that waits, with no deadline of its own, for something
    // that takes long only while the backing is healthy: a patient call, or
    // a lock that writeback holds across its backing I/O. While it waits,
    // the probe is asked, and asked again a moment after each answer; once
    // an ask goes `timeout` unanswered the backing is offline, as after a
    // missed call. So a stall is noticed about one `timeout` after it
    // begins, wherever the wait is (waiting out a window first and asking
    // only then took two).
    class Watch {
    public:
        explicit Watch(Gate& gate) noexcept;
        // Whether to wait on (then for `slice()` at most before asking
        // again). False: the backing is offline, now or since before.
        // Always true with offline_ok off.
        bool alive();
        std::chrono::nanoseconds slice() const noexcept;
        // alive() was false because an ask went unanswered: it counted a
        // timeout and took the backing offline (else it was offline).
        bool missed() const noexcept { return missed_; }

    private:
        Gate& gate_;
        bool missed_ = false;
        std::int64_t asked_ns_ = 0;    // the ask not answered yet; 0: none
        std::int64_t answered_ns_ = 0; // when the last ask was seen answered
    };

    // A call through the gate failed with `err`; true if that means the
    // backing is offline (now), and the caller answers from the cache.
    // Errors that say the backing cannot be reached (ENOTCONN: a network
    // filesystem without its server, a FUSE one whose daemon died;
    // ETIMEDOUT, EHOSTDOWN and the like) take it offline as a missed
    // deadline does. EIO and ESTALE may be the file's own (a bad block, a
    // file removed on the server) or the whole backing's (an NFS soft mount
    // timing out, a server that lost its export): the probe is asked at
    // once, and only its failure takes the backing offline. Always false
    // with offline_ok off.
    bool judge(int err);

private:
    // One call's meeting point: the caller waits on it, the gate thread
    // fills it. Shared, so that whichever side is last frees it.
    template <class R> struct Slot {
        std::mutex mu;
        std::condition_variable cv;
        std::optional<R> value;  // guarded by mu
        bool abandoned = false;  // guarded by mu: the caller gave up
        bool started = false;    // guarded by mu: fn is running or ran
        bool sleeping = false;   // guarded by mu: the caller waits on cv
        std::atomic<bool> done{false}; // value is set (read awake, without mu)
    };
    // Everything the threads touch: a thread stuck in the backing when the
    // gate goes is left behind (detached), holding its own reference.
    struct Shared;

    // Queues `job`, moving it out only when it is queued (false: the gate
    // is stopping, `job` is left as it was).
    bool submit(std::function<void()>& job);
    // A call was abandoned while it ran (counted as unsettled), and such a
    // call ended: on Shared, which outlives the gate for a stuck thread.
    static void note_abandoned_running(Shared& s) noexcept;
    static void note_abandoned_ended(Shared& s) noexcept;
    // Offline from now on, until the probe hears from it; `why` is logged.
    void go_offline(const std::string& why);
    void note_refused() noexcept;
    // How long a caller waits awake for its answer: a little more than
    // calls have been taking lately, none when they take long.
    std::chrono::nanoseconds awake_wait() const noexcept;
    void note_call_time(std::chrono::nanoseconds took) noexcept;
    // Asks the probe thread to probe the backing now; the time asked, for
    // answered_since. A probe already running when asked does not count.
    std::int64_t ask_liveness();
    // Whether a probe begun at or after `asked_ns` has answered, and the
    // backing is online.
    bool answered_since(std::int64_t asked_ns) const;

    const Options opts_;
    std::shared_ptr<Shared> shared_;
    std::vector<std::thread> threads_;
    std::thread prober_;
};

template <class F>
auto Gate::call(F fn, Patience patience) -> std::optional<std::invoke_result_t<F&>> {
    using R = std::invoke_result_t<F&>;
    if (!opts_.offline_ok)
        return fn();
    if (!online()) {
        note_refused();
        return std::nullopt;
    }
    auto slot = std::make_shared<Slot<R>>();
    auto job = [this_gate = this, shared = shared_, slot,
                f = std::make_shared<F>(std::move(fn))] {
        {
            std::lock_guard lk(slot->mu);
            if (slot->abandoned)
                return; // its caller is gone: nobody wants the answer
            slot->started = true;
        }
        const auto began = std::chrono::steady_clock::now();
        R r = (*f)();
        bool wake = false;
        {
            std::lock_guard lk(slot->mu);
            if (slot->abandoned) {
                // Whatever it did landed only now. The gate may be gone:
                // touch nothing of it but the shared state.
                note_abandoned_ended(*shared);
                return;
            }
            // Timed while the caller still waits: the gate outlives it.
            this_gate->note_call_time(std::chrono::steady_clock::now() - began);
            slot->value.emplace(std::move(r));
            slot->done.store(true, std::memory_order_release);
            wake = slot->sleeping;
        }
        if (wake)
            slot->cv.notify_one();
    };
    const auto start = std::chrono::steady_clock::now();
    // A patient call is given its first look early; the Watch takes over.
    const auto deadline =
        start + (patience == Patience::while_alive
                     ? std::min<std::chrono::nanoseconds>(opts_.timeout / 4, kFirstLook)
                     : std::chrono::nanoseconds(opts_.timeout));
    std::function<void()> queued = std::move(job);
    if (!submit(queued))
        return std::nullopt; // the gate is stopping
    const auto awake_until = start + awake_wait();
    while (!slot->done.load(std::memory_order_acquire) &&
           std::chrono::steady_clock::now() < awake_until)
        std::this_thread::yield();
    std::unique_lock lk(slot->mu);
    slot->sleeping = true;
    const auto answered = [&] { return slot->value.has_value(); };
    if (slot->cv.wait_until(lk, deadline, answered))
        return std::move(slot->value);
    bool counted = false; // the watch counted its miss as this call's
    if (patience == Patience::while_alive) {
        // Slower than most calls: the probe is asked along from now on.
        Watch watch(*this);
        for (;;) {
            lk.unlock();
            const bool alive = watch.alive();
            lk.lock();
            if (slot->value.has_value())
                return std::move(slot->value);
            if (!alive) {
                counted = watch.missed();
                break;
            }
            if (slot->cv.wait_for(lk, watch.slice(), answered))
                return std::move(slot->value);
        }
    }
    {
        slot->abandoned = true;
        if (slot->started)
            note_abandoned_running(*shared_);
        lk.unlock();
        if (!counted)
            note_timeout();
        return std::nullopt;
    }
}

} // namespace overcache::backing
