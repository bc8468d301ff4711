// bg::Executors and bg::IoPool: named threads per context, manual driving
// (no threads, the test runs exactly the queued work), stop order.
#include "overcache/bg/executors.hpp"

#include <array>
#include <atomic>
#include <boost/asio/post.hpp>
#include <doctest/doctest.h>
#include <functional>
#include <future>
#include <pthread.h>
#include <string>
#include <thread>
#include <vector>

using overcache::bg::Executors;
using overcache::bg::IoPool;
namespace asio = boost::asio;

namespace {

std::string thread_name() {
    std::array<char, 16> buf{};
    REQUIRE(::pthread_getname_np(::pthread_self(), buf.data(), buf.size()) == 0);
    return buf.data();
}

struct Seen {
    std::string name;
    std::thread::id id;
};

Seen where_it_runs(IoPool& pool) {
    std::promise<Seen> p;
    auto f = p.get_future();
    asio::post(pool.executor(), [&p] {
        p.set_value(Seen{thread_name(), std::this_thread::get_id()});
    });
    return f.get();
}

} // namespace

TEST_SUITE("bg") {
    TEST_CASE("bg::Executors: each context runs on its own named thread" * doctest::timeout(30)) {
        Executors ex;
        ex.start();
        const Seen fill = where_it_runs(ex.fill());
        const Seen wb = where_it_runs(ex.writeback());
        const Seen gc = where_it_runs(ex.gc());
        CHECK(fill.name == "oc-fill-0");
        CHECK(wb.name == "oc-wb-0");
        CHECK(gc.name == "oc-gc-0");
        CHECK(fill.id != wb.id);
        CHECK(fill.id != gc.id);
        CHECK(wb.id != gc.id);
        CHECK(fill.id != std::this_thread::get_id());
        // A strand's work runs on its pool's thread too.
        std::promise<std::string> p;
        asio::post(ex.gc().make_strand(), [&p] { p.set_value(thread_name()); });
        CHECK(p.get_future().get() == "oc-gc-0");
        ex.stop();
    }

    TEST_CASE("bg::Executors: more threads a context get their own numbers" *
              doctest::timeout(30)) {
        Executors ex(Executors::Mode::threaded, {.fill = 2, .writeback = 1, .gc = 1});
        ex.start();
        // Two handlers that wait for each other can only finish on two threads.
        std::promise<void> a_in, b_in;
        std::promise<std::string> a_name, b_name;
        auto a_ready = a_in.get_future().share();
        auto b_ready = b_in.get_future().share();
        asio::post(ex.fill().executor(), [&, b_ready] {
            a_in.set_value();
            b_ready.wait();
            a_name.set_value(thread_name());
        });
        asio::post(ex.fill().executor(), [&, a_ready] {
            b_in.set_value();
            a_ready.wait();
            b_name.set_value(thread_name());
        });
        const std::string na = a_name.get_future().get();
        const std::string nb = b_name.get_future().get();
        CHECK(na != nb);
        CHECK((na == "oc-fill-0" || na == "oc-fill-1"));
        CHECK((nb == "oc-fill-0" || nb == "oc-fill-1"));
    }

    TEST_CASE("bg::Executors: manual mode runs nothing until a test drives it") {
        Executors ex(Executors::Mode::manual);
        ex.start(); // starts no thread
        CHECK_FALSE(ex.fill().running());
        int fill = 0, wb = 0, gc = 0;
        asio::post(ex.fill().executor(), [&] { ++fill; });
        asio::post(ex.fill().executor(), [&] { ++fill; });
        asio::post(ex.writeback().executor(), [&] { ++wb; });
        asio::post(ex.gc().make_strand(), [&] { ++gc; });
        CHECK(fill + wb + gc == 0);

        CHECK(ex.fill().poll_one() == 1);
        CHECK(fill == 1);
        CHECK(ex.fill().run_until_idle() == 1);
        CHECK(fill == 2);
        CHECK(wb + gc == 0); // other pools untouched
        CHECK(ex.fill().run_until_idle() == 0);

        CHECK(ex.gc().run_until_idle() >= 1);
        CHECK(gc == 1);
        CHECK(ex.writeback().run_until_idle() == 1);
        CHECK(wb == 1);
    }

    TEST_CASE("bg::Executors: run_until_idle drains work that handlers post") {
        Executors ex(Executors::Mode::manual);
        int ran = 0;
        std::function<void(int)> chain = [&](int left) {
            ++ran;
            if (left > 0)
                asio::post(ex.gc().executor(), [&chain, left] { chain(left - 1); });
        };
        asio::post(ex.gc().executor(), [&] { chain(9); });
        CHECK(ex.gc().run_until_idle() == 10); // the first post, then nine links
        CHECK(ran == 10);

        // Work handed from one context to another waits for that one.
        bool wb_ran = false;
        asio::post(ex.fill().executor(),
                   [&] { asio::post(ex.writeback().executor(), [&] { wb_ran = true; }); });
        ex.fill().run_until_idle();
        CHECK_FALSE(wb_ran);
        ex.writeback().run_until_idle();
        CHECK(wb_ran);
    }

    TEST_CASE("bg::Executors: manual stop() drains fill, then writeback, then gc") {
        Executors ex(Executors::Mode::manual);
        std::vector<std::string> order;
        bool late_fill_ran = false;
        asio::post(ex.gc().executor(), [&] { order.push_back("gc"); });
        asio::post(ex.writeback().executor(), [&] {
            order.push_back("wb");
            // fill has stopped by now: this is never run.
            asio::post(ex.fill().executor(), [&] { late_fill_ran = true; });
        });
        asio::post(ex.fill().executor(), [&] {
            order.push_back("fill");
            // A queued fill may still need GC and writeback: both still run.
            asio::post(ex.gc().executor(), [&] { order.push_back("gc from fill"); });
            asio::post(ex.writeback().executor(), [&] { order.push_back("wb from fill"); });
        });
        ex.stop();
        CHECK(order ==
              std::vector<std::string>{"fill", "wb", "wb from fill", "gc", "gc from fill"});
        CHECK_FALSE(late_fill_ran);
        ex.stop(); // idempotent: the stranded fill handler still does not run
        CHECK_FALSE(late_fill_ran);
    }

    TEST_CASE("bg::Executors: stop() lets queued work finish" * doctest::timeout(30)) {
        Executors ex;
        ex.start();
        std::promise<void> gate;
        auto open = gate.get_future().share();
        std::atomic<int> done{0};
        constexpr int kQueued = 1000;
        // Block each pool's only thread so the rest stays queued until stop().
        for (IoPool* p : {&ex.fill(), &ex.writeback(), &ex.gc()}) {
            asio::post(p->executor(), [open] { open.wait(); });
            for (int i = 0; i < kQueued; ++i)
                asio::post(p->executor(), [&] { done.fetch_add(1, std::memory_order_relaxed); });
        }
        // Handlers that post on during the drain: fill → gc must still run.
        std::atomic<bool> gc_from_fill{false};
        asio::post(ex.fill().executor(),
                   [&] { asio::post(ex.gc().executor(), [&] { gc_from_fill = true; }); });
        gate.set_value();
        ex.stop();
        CHECK(done.load() == 3 * kQueued);
        CHECK(gc_from_fill.load());
        CHECK_FALSE(ex.fill().running());
    }

    TEST_CASE("bg::IoPool: start() after stop() runs the pool again" * doctest::timeout(30)) {
        IoPool pool("oc-test");
        pool.start();
        CHECK(where_it_runs(pool).name == "oc-test-0");
        pool.stop();
        int ran = 0;
        asio::post(pool.executor(), [&] { ++ran; });
        pool.start();
        CHECK(where_it_runs(pool).name == "oc-test-0");
        pool.stop();
        CHECK(ran == 1);
        // And a stopped pool can be driven by hand.
        asio::post(pool.executor(), [&] { ++ran; });
        CHECK(pool.run_until_idle() == 1);
        CHECK(ran == 2);
    }
}
