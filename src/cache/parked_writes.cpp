// DOC: parked writes. A writeback-mode write that finds only the reserve
// left is not made to spin a FUSE thread or to hold a lock: the write path
// copies it into a ParkedWrite and returns; the FUSE handler has not
// replied, and the answer comes from here. Invariants:
//  - one queue, FIFO, popped only on the strand, so answers go out in the
//    order writes parked; while it is not empty new writes park too
//    (any_parked), so a write acknowledged later never lands earlier, and
//    room freed for the waiters goes to the oldest first;
//  - a waiter leaves the queue only once its write is done, before its
//    answer: a write that comes after an answer finds it in place;
//  - nothing here holds a FileState lock; mu_ is a leaf, never held across
//    I/O, so GC and writeback, which free the space, never wait for us;
//  - every waiter is answered: in the cache once there is room, around the
//    cache at its deadline, and around the cache at stop().
// Retries come from wake() (the Allocator freed buckets), from park(), and
// from a recheck timer (writeback cleaning buckets says nothing; the recheck
// then kicks GC to reclaim them).
#include "cache/parked_writes.hpp"

#include "util/log.hpp"

#include <boost/asio/post.hpp>
#include <future>

namespace overcache::cache {
namespace {

// How often a waiting write asks GC and writeback for room and retries
// when nothing has woken it.
constexpr auto kRecheck = std::chrono::milliseconds(100);

} // namespace

ParkedWrites::ParkedWrites(bg::Strand strand, std::chrono::nanoseconds wait_max, Ops ops)
    : strand_(std::move(strand)), wait_max_ns_(wait_max.count()), ops_(std::move(ops)), timer_(strand_) {}

ParkedWrites::~ParkedWrites() {
    std::lock_guard lk(mu_);
    if (!queue_.empty())
        log::error("cache: ", queue_.size(), " parked writes were never answered");
}

bool ParkedWrites::any_parked() const {
    std::lock_guard lk(mu_);
    return !queue_.empty();
}

bool ParkedWrites::park(std::unique_ptr<ParkedWrite>& w) {
    std::lock_guard lk(mu_);
    if (stopping_)
        return false;
    w->parked_at = ParkedWrite::Clock::now();
    w->deadline = w->parked_at + std::chrono::nanoseconds(wait_max_ns_.load(std::memory_order_relaxed));
    ++stats_.waits;
    ++stats_.waiting;
    queue_.push_back(std::move(w));
    // Posted under mu_: stop() either sees this waiter in the queue or
    // runs after this handler.
    boost::asio::post(strand_, [this] { process(); });
    return true;
}

void ParkedWrites::wake() {
    std::lock_guard lk(mu_);
    if (stopping_ || queue_.empty() || woken_.exchange(true))
        return;
    boost::asio::post(strand_, [this] {
        woken_.store(false);
        process();
    });
}

void ParkedWrites::stop() {
    {
        std::lock_guard lk(mu_);
        if (stopping_)
            return;
        stopping_ = true;
    }
    std::promise<void> stopped;
    boost::asio::post(strand_, [this, &stopped] {
        timer_.cancel();
        for (;;) {
            ParkedWrite* head = nullptr;
            {
                std::lock_guard lk(mu_);
                if (queue_.empty())
                    break;
                head = queue_.front().get();
            }
            auto r = ops_.write_around(*head);
            std::unique_ptr<ParkedWrite> w;
            {
                std::lock_guard lk(mu_);
                w = std::move(queue_.front());
                queue_.pop_front();
            }
            answer(std::move(w), std::move(r), true);
        }
        stopped.set_value();
    });
    stopped.get_future().wait();
}

ParkedStats ParkedWrites::stats() const {
    std::lock_guard lk(mu_);
    return stats_;
}

void ParkedWrites::process() {
    bool waiting = false;
    for (;;) {
        ParkedWrite* w = nullptr;
        {
            std::lock_guard lk(mu_);
            if (stopping_ || queue_.empty())
                return; // stop() answers the rest; nothing to arm
            w = queue_.front().get(); // stays the head: only the strand pops
        }
        std::optional<Result<std::size_t>> r;
        bool around = ParkedWrite::Clock::now() >= w->deadline;
        if (!around) {
            auto t = ops_.try_cache(*w);
            if (t.kind == Tried::Kind::cached)
                r = std::move(t.answer);
            else
                around = t.kind == Tried::Kind::not_cacheable;
        }
        if (around)
            r = ops_.write_around(*w);
        if (!r) {
            waiting = true; // the head keeps its place: FIFO
            break;
        }
        std::unique_ptr<ParkedWrite> head;
        {
            std::lock_guard lk(mu_);
            head = std::move(queue_.front());
            queue_.pop_front();
        }
        answer(std::move(head), std::move(*r), around);
    }
    if (waiting)
        ops_.make_room();
    arm();
}

void ParkedWrites::arm() {
    ParkedWrite::Clock::time_point at;
    {
        std::lock_guard lk(mu_);
        if (stopping_ || queue_.empty())
            return;
        at = std::min(queue_.front()->deadline, ParkedWrite::Clock::now() + kRecheck);
    }
    timer_.expires_at(at); // cancels the wait armed before, if any
    timer_.async_wait([this](boost::system::error_code ec) {
        if (ec)
            return; // cancelled: re-armed or stopping (`this` may be gone)
        process();
    });
}

void ParkedWrites::answer(std::unique_ptr<ParkedWrite> w, Result<std::size_t> r, bool around) {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        ParkedWrite::Clock::now() - w->parked_at);
    {
        std::lock_guard lk(mu_);
        --stats_.waiting;
        if (around)
            ++stats_.written_around;
        stats_.wait_max_ms =
            std::max<std::uint64_t>(stats_.wait_max_ms, static_cast<std::uint64_t>(waited.count()));
    }
    auto done = std::move(w->done);
    UniqueFd fd = std::move(w->fd);
    w.reset(); // the file's state goes before the answer, and its dup'ed fd
    if (ops_.close_fd)
        ops_.close_fd(std::move(fd));
    fd.reset();
    done(std::move(r));
}

} // namespace overcache::cache
