// The backing gate: a call that answers in time returns its result; one
// that misses the deadline returns nothing after about the deadline and
// turns the backing offline, after which calls are refused at once without
// running; the probe turns it online again once it answers; a call stuck
// past the gate's end does not hold the gate's destruction up; with
// offline_ok off calls run inline and are never refused. An error that says
// the backing cannot be reached takes it offline too; EIO and ESTALE only
// when the probe fails as well. The stall is a
// latch the test opens (the real one, a stopped backing, is the mount test
// stalled_backing).
#include "backing/gate.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <doctest/doctest.h>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

using overcache::backing::Gate;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// A backing that blocks every call made while it is closed.
struct Latch {
    std::mutex mu;
    std::condition_variable cv;
    bool open = true;
    void close() {
        std::lock_guard lk(mu);
        open = false;
    }
    void release() {
        std::lock_guard lk(mu);
        open = true;
        cv.notify_all();
    }
    void pass() {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return open; });
    }
};

Gate::Options fast(std::chrono::milliseconds timeout = 200ms) {
    Gate::Options o;
    o.timeout = timeout;
    o.threads = 2;
    o.probe_interval = 20ms;
    return o;
}

bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds limit = 5000ms) {
    const auto end = Clock::now() + limit;
    while (Clock::now() < end) {
        if (cond())
            return true;
        std::this_thread::sleep_for(5ms);
    }
    return cond();
}

} // namespace

TEST_CASE("a call in time returns its result on another thread") {
    auto latch = std::make_shared<Latch>();
    Gate gate(fast(), [latch] { latch->pass(); return 0; });
    const auto caller = std::this_thread::get_id();
    auto r = gate.call([caller] { return std::this_thread::get_id() != caller ? 42 : -1; });
    REQUIRE(r.has_value());
    CHECK(*r == 42);
    CHECK(gate.online());
    CHECK(gate.stats().timeouts == 0);
}

TEST_CASE("a stalled call misses its deadline once; later calls are refused at once") {
    auto latch = std::make_shared<Latch>();
    Gate gate(fast(), [latch] { latch->pass(); return 0; });
    latch->close();
    auto ran = std::make_shared<std::atomic<int>>(0);

    const auto t0 = Clock::now();
    auto r = gate.call([latch, ran] { latch->pass(); return ++*ran; });
    const auto waited = Clock::now() - t0;
    CHECK_FALSE(r.has_value());
    CHECK(waited >= 200ms);
    CHECK(waited < 3s);
    CHECK_FALSE(gate.online());
    auto s = gate.stats();
    CHECK(s.timeouts == 1);
    CHECK(s.offline_total == 1);

    // Offline: nothing is tried, nothing waits.
    const auto t1 = Clock::now();
    for (int i = 0; i < 100; ++i)
        CHECK_FALSE(gate.call([ran] { return ++*ran; }).has_value());
    CHECK(Clock::now() - t1 < 150ms);
    CHECK(gate.stats().refused == 100);
    CHECK(gate.stats().offline_seconds > 0);

    // The backing answers: the stuck call finishes (its answer is dropped),
    // the probe turns the gate online, calls run again.
    latch->release();
    REQUIRE(wait_for([&] { return gate.online(); }));
    CHECK(gate.stats().offline_total == 1);
    CHECK(gate.stats().offline_seconds == 0);
    REQUIRE(wait_for([&] { return ran->load() == 1; }));
    auto again = gate.call([ran] { return ++*ran; });
    REQUIRE(again.has_value());
    CHECK(*again == 2);
}

TEST_CASE("calls queued behind stuck threads keep their deadline") {
    auto latch = std::make_shared<Latch>();
    Gate gate(fast(300ms), [latch] { latch->pass(); return 0; });
    latch->close();
    // More callers than the gate has threads, all at once: each returns
    // within about one deadline, none waits for another's.
    std::vector<std::thread> callers;
    std::atomic<int> late{0}, answered{0};
    for (int i = 0; i < 6; ++i)
        callers.emplace_back([&] {
            const auto t0 = Clock::now();
            if (gate.call([latch] { latch->pass(); return 1; }).has_value())
                ++answered;
            if (Clock::now() - t0 > 3s)
                ++late;
        });
    for (auto& t : callers)
        t.join();
    CHECK(late == 0);
    CHECK(answered == 0);
    CHECK_FALSE(gate.online());
    latch->release();
    CHECK(wait_for([&] { return gate.online(); }));
}

TEST_CASE("a probe that fails keeps the backing offline until one succeeds") {
    auto answers = std::make_shared<std::atomic<bool>>(false);
    auto probes = std::make_shared<std::atomic<int>>(0);
    Gate gate(fast(), [answers, probes] {
        ++*probes;
        return answers->load() ? 0 : 5; // EIO until told otherwise
    });
    gate.note_timeout();
    CHECK_FALSE(gate.online());
    REQUIRE(wait_for([&] { return probes->load() >= 3; }));
    CHECK_FALSE(gate.online());
    answers->store(true);
    CHECK(wait_for([&] { return gate.online(); }));
}

TEST_CASE("the gate goes without waiting for a call stuck in the backing") {
    auto latch = std::make_shared<Latch>();
    const auto t0 = Clock::now();
    {
        Gate gate(fast(100ms), [latch] { latch->pass(); return 0; });
        latch->close();
        CHECK_FALSE(gate.call([latch] { latch->pass(); return 0; }).has_value());
    }
    // One deadline and a second of grace, not forever.
    CHECK(Clock::now() - t0 < 5s);
    latch->release(); // the left-behind threads end (they own the latch)
    std::this_thread::sleep_for(50ms);
}

TEST_CASE("offline_ok=0: calls run inline, wait as long as they take, never refused") {
    Gate::Options o = fast(50ms);
    o.offline_ok = false;
    Gate gate(o, [] { return 0; });
    const auto caller = std::this_thread::get_id();
    auto r = gate.call([caller] {
        std::this_thread::sleep_for(150ms); // three deadlines
        return std::this_thread::get_id() == caller;
    });
    REQUIRE(r.has_value());
    CHECK(*r);
    CHECK(gate.online());
}

TEST_CASE("an error that says the backing is unreachable takes it offline; EIO and ESTALE "
          "only when the probe fails too") {
    std::atomic<int> probe_err{0};
    Gate g(fast(), [&] { return probe_err.load(); });
    // A file's own trouble: the probe answers, the error is the caller's.
    for (int err : {EIO, ESTALE}) {
        CAPTURE(err);
        CHECK_FALSE(g.judge(err));
        CHECK(g.online());
    }
    // Errors that are nobody's to answer for: ignored.
    for (int err : {0, EACCES, ENOENT, ENOSPC, EROFS})
        CHECK_FALSE(g.judge(err));
    CHECK(g.online());
    CHECK(g.stats().offline_total == 0);

    // The server is gone: ENOTCONN needs no probe (which fails here too,
    // so that the backing stays offline while the test looks).
    probe_err = ENOTCONN;
    CHECK(g.judge(ENOTCONN));
    CHECK_FALSE(g.online());
    CHECK(g.stats().offline_total == 1);
    CHECK(g.stats().timeouts == 0);
    CHECK(g.judge(EIO)); // still offline: the caller answers from the cache
    probe_err = 0;
    REQUIRE(wait_for([&] { return g.online(); })); // the probe answers again

    // EIO whose probe fails too: the backing's own.
    probe_err = EIO;
    CHECK(g.judge(EIO));
    CHECK_FALSE(g.online());
    CHECK(g.stats().offline_total == 2);
    probe_err = 0;
    CHECK(wait_for([&] { return g.online(); }));
}

TEST_CASE("offline_ok=0: no error takes the backing offline") {
    Gate::Options o = fast();
    o.offline_ok = false;
    Gate g(o, [] { return EIO; });
    for (int err : {ENOTCONN, EIO, ESTALE, ETIMEDOUT})
        CHECK_FALSE(g.judge(err));
    CHECK(g.online());
}

TEST_CASE("a patient call outlives its deadline while the probe answers; not once it stops") {
    auto latch = std::make_shared<Latch>();
    auto probe_latch = std::make_shared<Latch>();
    Gate gate(fast(100ms), [probe_latch] { probe_latch->pass(); return 0; });
    // Slow but alive: five deadlines long, the probe answering.
    const auto t0 = Clock::now();
    auto slow = gate.call(
        [] {
            std::this_thread::sleep_for(500ms);
            return 7;
        },
        Gate::Patience::while_alive);
    REQUIRE(slow.has_value());
    CHECK(*slow == 7);
    CHECK(Clock::now() - t0 >= 500ms);
    CHECK(gate.online());
    CHECK(gate.stats().timeouts == 0);

    // The same with the deadline only: offline (the probe, answering at
    // once, turns it online again).
    CHECK_FALSE(gate.call([] {
                        std::this_thread::sleep_for(300ms);
                        return 1;
                    }).has_value());
    CHECK(gate.stats().timeouts == 1);
    CHECK(gate.stats().offline_total == 1);
    REQUIRE(wait_for([&] { return gate.online(); }));

    // Patient, but the backing stops answering (the probe too): given up
    // once an ask of the probe went a whole deadline unanswered.
    latch->close();
    probe_latch->close();
    const auto t1 = Clock::now();
    auto stuck = gate.call([latch] { latch->pass(); return 1; }, Gate::Patience::while_alive);
    const auto waited = Clock::now() - t1;
    CHECK_FALSE(stuck.has_value());
    CHECK(waited >= 100ms);
    CHECK(waited < 3s);
    CHECK_FALSE(gate.online());
    latch->release();
    probe_latch->release();
    CHECK(wait_for([&] { return gate.online(); }));
}

TEST_CASE("a patient call pays one deadline for a stall, whether it began before the call or "
          "during it") {
    // The probe is asked along while a patient call runs, so a stall costs
    // about one deadline however the call's wait lines up with it; waiting
    // out a deadline before asking took two. Deadlines of 2 s: the margins
    // below are then wide beside a loaded machine's scheduling delays.
    constexpr auto kDeadline = 2000ms;
    const auto ms = [](Clock::duration d) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    };
    auto latch = std::make_shared<Latch>();
    auto probe_latch = std::make_shared<Latch>();
    Gate gate(fast(kDeadline), [probe_latch] {
        probe_latch->pass();
        return 0;
    });

    // Begun during the stall: given up a deadline after its first ask, at
    // most 100 ms in (measured: 2.1-2.2 s; it was 4.0 s).
    latch->close();
    probe_latch->close();
    auto t0 = Clock::now();
    auto during = gate.call(
        [latch] {
            latch->pass();
            return 1;
        },
        Gate::Patience::while_alive);
    auto waited = Clock::now() - t0;
    CHECK_FALSE(during.has_value());
    CHECK(waited >= kDeadline); // an ask unanswered for the whole deadline
    CHECK_MESSAGE(waited < kDeadline * 8 / 5, "gave up after " << ms(waited) << " ms");
    latch->release();
    probe_latch->release();
    REQUIRE(wait_for([&] { return gate.online(); }));

    // Begun before: healthy slowness a little past one deadline (the probe
    // answering), then the stall. Given up about a deadline after the
    // stall's start, plus up to three eighths of one until the next ask
    // (measured: 4.4 s in all, 2.2 s after the stall; it was 6.0 s, 3.8).
    constexpr auto kHealthy = kDeadline + 200ms;
    latch->close();
    std::thread stall([&] {
        std::this_thread::sleep_for(kHealthy);
        probe_latch->close();
    });
    t0 = Clock::now();
    auto before = gate.call(
        [latch] {
            latch->pass();
            return 1;
        },
        Gate::Patience::while_alive);
    waited = Clock::now() - t0;
    stall.join();
    CHECK_FALSE(before.has_value());
    CHECK(waited >= kHealthy + kDeadline / 2);
    CHECK_MESSAGE(waited < kHealthy + kDeadline * 2, "gave up after " << ms(waited) << " ms");
    CHECK(gate.stats().timeouts == 2);
    latch->release();
    probe_latch->release();
    CHECK(wait_for([&] { return gate.online(); }));
}

TEST_CASE("what was seen before an abandoned call ends is unsettled until it has ended") {
    auto latch = std::make_shared<Latch>();
    Gate gate(fast(100ms), [] { return 0; });
    CHECK(gate.settled_after_ns() == 0);
    latch->close();
    auto done = std::make_shared<std::atomic<bool>>(false);
    CHECK_FALSE(gate.call([latch, done] {
                        latch->pass();
                        done->store(true);
                        return 0;
                    }).has_value());
    // It may still land: nothing seen so far is settled.
    CHECK(gate.settled_after_ns() == INT64_MAX);
    const auto unsettled = gate.unsettled_watch();
    CHECK(unsettled());
    const auto before = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    latch->release();
    REQUIRE(wait_for([&] { return gate.settled_after_ns() != INT64_MAX; }));
    CHECK(done->load());
    CHECK(gate.settled_after_ns() >= before);
    CHECK_FALSE(unsettled());
}

TEST_CASE("the watch of unsettled calls outlives the gate, and a call left behind in it") {
    auto latch = std::make_shared<Latch>();
    latch->close();
    std::function<bool()> unsettled;
    {
        Gate gate(fast(100ms), [] { return 0; });
        unsettled = gate.unsettled_watch();
        CHECK_FALSE(gate.call([latch] {
                            latch->pass();
                            return 0;
                        }).has_value());
        CHECK(unsettled());
    } // the gate goes; its stuck thread stays behind
    CHECK(unsettled());
    latch->release();
    CHECK(wait_for([&] { return !unsettled(); }));
}

// Regression: post() handed the queue a copy of the job and dropped its own
// afterwards, so when the gate thread ran and dropped the queued copy first,
// what the job held went on the caller's thread: the last close of a
// descriptor lent to a request (RequestScope::give_back), which a stalled
// FUSE or NFS backing never answers, held a FUSE thread (seen in
// stalled_backing's write-around case, once in three runs).
TEST_CASE("post moves its job to a gate thread: never copied, let go of there") {
    Gate gate(fast(), [] { return 0; });
    struct Held {
        std::atomic<int>* copies;
        std::atomic<std::thread::id>* freed_on;
        Held(std::atomic<int>* c, std::atomic<std::thread::id>* f) : copies(c), freed_on(f) {}
        Held(const Held& o) : copies(o.copies), freed_on(o.freed_on) { copies->fetch_add(1); }
        Held(Held&& o) noexcept : copies(o.copies), freed_on(o.freed_on) { o.freed_on = nullptr; }
        Held& operator=(const Held&) = delete;
        ~Held() {
            if (freed_on != nullptr)
                freed_on->store(std::this_thread::get_id());
        }
    };
    for (int i = 0; i < 50; ++i) {
        std::atomic<int> copies{0};
        std::atomic<std::thread::id> freed_on{};
        std::atomic<bool> ran{false};
        gate.post([h = Held(&copies, &freed_on), &ran] { ran.store(true); });
        REQUIRE(wait_for([&] { return freed_on.load() != std::thread::id{}; }));
        CHECK(ran.load());
        CHECK(copies.load() == 0);
        CHECK(freed_on.load() != std::this_thread::get_id());
    }
}
