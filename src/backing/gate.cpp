// DOC: the backing gate (see gate.hpp): a bounded pool of threads for calls
// that may stall, the online/offline state, and the probe that ends a stall.
// Lock order: Shared::mu is a leaf; no backing call is made with it held.
#include "backing/gate.hpp"

#include "util/log.hpp"
#include "util/wall_clock.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

namespace overcache::backing {
namespace {

std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

double seconds_of(std::chrono::milliseconds ms) noexcept {
    return static_cast<double>(ms.count()) / 1000.0;
}

// How long the last worker to finish stays awake for the next call: about
// the time a request takes from its reply to the next one's arrival, when
// a program stats or opens file after file.
constexpr std::chrono::microseconds kWorkerAwake{200};
// The most a caller waits awake; a call slower than that is answered to a
// sleeping caller (its wake-up is small beside the call then).
constexpr std::chrono::microseconds kCallerAwakeMax{50};

} // namespace

struct Gate::Shared {
    std::mutex mu;
    std::condition_variable work_cv;  // a job was queued, or stopping
    std::condition_variable probe_cv; // the backing went offline, or stopping
    std::condition_variable exit_cv;  // a thread ended
    // A waiter asks whether the backing still answers (guarded by mu);
    // the probe thread answers with the time its last successful probe
    // began, which the waiter reads when it looks again (Gate::Watch).
    bool liveness_wanted = false;
    std::int64_t answered_probe_began_ns = 0;
    std::deque<std::function<void()>> jobs; // guarded by mu
    bool stopping = false;                  // guarded by mu
    unsigned alive = 0;                     // guarded by mu: threads not yet ended
    // Workers awake and watching `queued` for work (at most one); a job
    // queued while one is needs no wake-up.
    unsigned awake = 0;             // guarded by mu
    std::atomic<std::size_t> queued{0}; // jobs.size(), read without mu
    // Recent calls' time (a moving average), for how long callers wait awake.
    std::atomic<std::int64_t> call_ns{0};

    std::function<int()> probe;
    std::atomic<bool> offline{false};
    std::atomic<std::uint64_t> timeouts{0}, offline_total{0}, refused{0};
    std::atomic<std::int64_t> offline_since_ns{0};
    // Calls abandoned while running, not yet ended; when the last ended.
    std::atomic<std::uint64_t> unsettled{0};
    std::atomic<std::int64_t> settled_wall_ns{0};

    void worker() {
        std::unique_lock lk(mu);
        for (;;) {
            if (!stopping && jobs.empty() && awake == 0) {
                // Stay awake a little for the next call, not holding mu.
                ++awake;
                lk.unlock();
                const auto until = std::chrono::steady_clock::now() + kWorkerAwake;
                while (queued.load(std::memory_order_acquire) == 0 &&
                       std::chrono::steady_clock::now() < until)
                    std::this_thread::yield();
                lk.lock();
                --awake;
            }
            work_cv.wait(lk, [&] { return stopping || !jobs.empty(); });
            if (stopping)
                break;
            std::function<void()> job = std::move(jobs.front());
            jobs.pop_front();
            queued.store(jobs.size(), std::memory_order_release);
            lk.unlock();
            job(); // may block for as long as the backing does
            job = nullptr;
            lk.lock();
        }
        --alive;
        exit_cv.notify_all();
    }

    void prober(std::chrono::milliseconds interval) {
        std::unique_lock lk(mu);
        for (;;) {
            probe_cv.wait(lk, [&] { return stopping || offline.load() || liveness_wanted; });
            if (stopping)
                break;
            if (!offline.load()) {
                // A call outlived its deadline: is the backing still there?
                liveness_wanted = false;
                const std::int64_t began = now_ns();
                lk.unlock();
                const int err = probe();
                lk.lock();
                if (err == 0)
                    answered_probe_began_ns = began;
                continue;
            }
            // Asked at once: a single slow call may have been only that.
            lk.unlock();
            const int err = probe();
            lk.lock();
            if (stopping)
                break;
            if (err == 0) {
                const double stalled =
                    static_cast<double>(now_ns() - offline_since_ns.load()) / 1e9;
                offline.store(false, std::memory_order_release);
                offline_since_ns.store(0);
                log::info("backing: answering again after ", static_cast<long long>(stalled),
                          " s: online; files are checked against it again at their next open");
                continue;
            }
            probe_cv.wait_for(lk, interval, [&] { return stopping; });
        }
        --alive;
        exit_cv.notify_all();
    }
};

Gate::Gate(Options opts, std::function<int()> probe)
    : opts_(opts), shared_(std::make_shared<Shared>()) {
    if (!opts_.offline_ok)
        return; // calls run inline; nothing to start
    shared_->probe = std::move(probe);
    const unsigned n = std::max(1u, opts_.threads);
    shared_->alive = n + 1;
    threads_.reserve(n);
    for (unsigned i = 0; i < n; ++i)
        threads_.emplace_back([s = shared_] { s->worker(); });
    prober_ = std::thread([s = shared_, iv = opts_.probe_interval] { s->prober(iv); });
}

Gate::~Gate() {
    if (!opts_.offline_ok)
        return;
    std::unique_lock lk(shared_->mu);
    shared_->stopping = true;
    shared_->jobs.clear();
    shared_->work_cv.notify_all();
    shared_->probe_cv.notify_all();
    // A thread stuck in the backing ends when the backing answers; the
    // mount is not held up for it (it owns what it touches).
    const bool all_ended = shared_->exit_cv.wait_for(
        lk, opts_.timeout + std::chrono::seconds(1), [&] { return shared_->alive == 0; });
    lk.unlock();
    if (!all_ended)
        log::warn("backing: ", shared_->alive,
                  " calls into the backing still unanswered at unmount; left behind");
    for (auto& t : threads_)
        all_ended ? t.join() : t.detach();
    all_ended ? prober_.join() : prober_.detach();
}

void Gate::note_abandoned_running(Shared& s) noexcept {
    s.unsettled.fetch_add(1, std::memory_order_acq_rel);
}

void Gate::note_abandoned_ended(Shared& s) noexcept {
    // The time first, then the count: a reader that sees the count fall
    // sees the time it fell at.
    s.settled_wall_ns.store(wall_ns(), std::memory_order_release);
    s.unsettled.fetch_sub(1, std::memory_order_acq_rel);
}

std::int64_t Gate::ask_liveness() {
    Shared& s = *shared_;
    std::lock_guard lk(s.mu);
    const std::int64_t asked = now_ns();
    s.liveness_wanted = true;
    s.probe_cv.notify_all();
    return asked;
}

bool Gate::answered_since(std::int64_t asked_ns) const {
    Shared& s = *shared_;
    std::lock_guard lk(s.mu);
    return !s.stopping && !s.offline.load() && s.answered_probe_began_ns >= asked_ns;
}

Gate::Watch::Watch(Gate& gate) noexcept : gate_(gate) {}

bool Gate::Watch::alive() {
    if (!gate_.opts_.offline_ok)
        return true;
    if (!gate_.online())
        return false;
    const std::int64_t now = now_ns();
    const std::int64_t timeout = std::chrono::nanoseconds(gate_.opts_.timeout).count();
    if (asked_ns_ != 0) {
        if (gate_.answered_since(asked_ns_)) {
            asked_ns_ = 0;
            answered_ns_ = now;
        } else if (now - asked_ns_ >= timeout) {
            gate_.note_timeout(); // the probe missed the deadline a call has
            missed_ = true;
            return false;
        }
    }
    // Asked again a quarter of a deadline after the last answer: a stall
    // is noticed at most that much later, and a backing that is only slow
    // gets a statfs every so often, not a stream of them.
    if (asked_ns_ == 0 && (answered_ns_ == 0 || now - answered_ns_ >= timeout / 4))
        asked_ns_ = gate_.ask_liveness();
    return true;
}

std::chrono::nanoseconds Gate::Watch::slice() const noexcept {
    return std::chrono::nanoseconds(gate_.opts_.timeout) / 8;
}

std::int64_t Gate::settled_after_ns() const noexcept {
    if (shared_->unsettled.load(std::memory_order_acquire) != 0)
        return INT64_MAX;
    return shared_->settled_wall_ns.load(std::memory_order_acquire);
}

std::function<bool()> Gate::unsettled_watch() const {
    return [s = shared_] { return s->unsettled.load(std::memory_order_acquire) != 0; };
}

bool Gate::online() const noexcept {
    return !shared_->offline.load(std::memory_order_acquire);
}

void Gate::note_refused() noexcept {
    shared_->refused.fetch_add(1, std::memory_order_relaxed);
}

bool Gate::submit(std::function<void()>& job) {
    std::lock_guard lk(shared_->mu);
    if (shared_->stopping)
        return false;
    shared_->jobs.push_back(std::move(job));
    shared_->queued.store(shared_->jobs.size(), std::memory_order_release);
    // A worker awake takes it (it takes mu after seeing `queued`); else
    // one is woken. Idle workers never spin, so none is missed.
    if (shared_->awake == 0 || shared_->jobs.size() > shared_->awake)
        shared_->work_cv.notify_one();
    return true;
}

std::chrono::nanoseconds Gate::awake_wait() const noexcept {
    const std::chrono::nanoseconds recent(shared_->call_ns.load(std::memory_order_relaxed));
    if (recent > kCallerAwakeMax)
        return std::chrono::nanoseconds(0);
    return std::min<std::chrono::nanoseconds>(kCallerAwakeMax, 2 * recent + std::chrono::microseconds(10));
}

void Gate::note_call_time(std::chrono::nanoseconds took) noexcept {
    // 1/8 of the new sample: a few slow calls in a row stop the waiting awake.
    const std::int64_t old = shared_->call_ns.load(std::memory_order_relaxed);
    shared_->call_ns.store(old + (took.count() - old) / 8, std::memory_order_relaxed);
}

void Gate::post(std::function<void()> job) {
    if (opts_.offline_ok && submit(job))
        return;
    job();
}

void Gate::note_timeout() {
    shared_->timeouts.fetch_add(1, std::memory_order_relaxed);
    if (!opts_.offline_ok)
        return;
    std::ostringstream why;
    why << "a call took longer than backing_timeout (" << seconds_of(opts_.timeout) << " s)";
    go_offline(why.str());
}

void Gate::go_offline(const std::string& why) {
    Shared& s = *shared_;
    std::lock_guard lk(s.mu);
    if (s.offline.load())
        return;
    s.offline_since_ns.store(now_ns());
    s.offline.store(true, std::memory_order_release);
    s.offline_total.fetch_add(1, std::memory_order_relaxed);
    s.probe_cv.notify_all();
    log::warn("backing: ", why, ": offline; cached names, attributes and data are served "
              "read-only, the rest fails until it answers again");
}

bool Gate::judge(int err) {
    if (!opts_.offline_ok || err <= 0)
        return false;
    switch (err) {
    case ENOTCONN:
    case ETIMEDOUT:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENETDOWN:
    case ENETUNREACH:
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case ESHUTDOWN:
        go_offline(std::string("a call failed with ") + std::strerror(err));
        return true;
    case EIO:
    case ESTALE: {
        if (!online())
            return true;
        // The backing's own answer: statfs of its root, which no file's
        // trouble fails.
        const auto probed = call([s = shared_] { return s->probe(); });
        if (!probed)
            return true; // missed the deadline: offline already
        if (*probed == 0)
            return false;
        go_offline(std::string("a call failed with ") + std::strerror(err) +
                   ", and so did a statfs of its root (" + std::strerror(*probed) + ")");
        return true;
    }
    default:
        return false;
    }
}

Gate::Stats Gate::stats() const {
    const Shared& s = *shared_;
    Stats out;
    out.online = online();
    out.timeouts = s.timeouts.load(std::memory_order_relaxed);
    out.offline_total = s.offline_total.load(std::memory_order_relaxed);
    out.refused = s.refused.load(std::memory_order_relaxed);
    if (const std::int64_t since = s.offline_since_ns.load(); since != 0 && !out.online)
        out.offline_seconds = static_cast<double>(now_ns() - since) / 1e9;
    return out;
}

} // namespace overcache::backing
