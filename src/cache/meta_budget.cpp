// DOC: the metadata budget (see meta_budget.hpp). The size is RocksDB's
// estimate for the three families (table files and memtables), cheap to
// ask; only past the budget does a trim read the families through.
#include "cache/meta_budget.hpp"

#include "util/log.hpp"
#include "util/size_text.hpp"

#include <boost/asio/post.hpp>
#include <future>

namespace overcache::cache {
namespace {

constexpr auto kCheckEvery = std::chrono::seconds(10);
constexpr std::uint64_t kMinBudget = 16ull << 20;

} // namespace

MetaBudget::MetaBudget(CacheCore& core, bg::Strand strand)
    : core_(core), strand_(std::move(strand)), timer_(strand_) {}

std::uint64_t MetaBudget::budget() const {
    if (core_.p.metadata_max != 0)
        return core_.p.metadata_max;
    return std::max(kMinBudget, core_.dev->cache_size() / 8);
}

void MetaBudget::start() {
    boost::asio::post(strand_, [this] { arm(); });
}

void MetaBudget::arm() {
    {
        std::lock_guard lk(mu_);
        if (stopping_)
            return;
    }
    timer_.expires_after(kCheckEvery);
    timer_.async_wait([this](boost::system::error_code ec) {
        if (ec)
            return;
        check();
        arm();
    });
}

void MetaBudget::check_now() {
    boost::asio::post(strand_, [this] { check(); });
}

void MetaBudget::check() {
    {
        std::lock_guard lk(mu_);
        if (stopping_)
            return;
    }
    const std::uint64_t limit = budget();
    const std::uint64_t used = core_.names.bytes();
    // Still over since a trim that could not get under (pinned trees
    // alone past the budget): the next only once a tenth more came, not a
    // compaction of everything every few seconds.
    if (used <= limit || (over_after_ != 0 && used < over_after_ + over_after_ / 10))
        return;
    const auto began = std::chrono::steady_clock::now();
    auto r = core_.names.trim(limit / 5 * 4, core_.policy.pinned());
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - began)
                        .count();
    if (!r) {
        log::warn("index: cannot trim the kept names and attributes: ", to_string(r.error()));
        over_after_ = used;
        return;
    }
    const std::uint64_t now = core_.names.bytes();
    // Over still after a trim that went as far as its cut (not one that a
    // compaction alone got under, with names coming in since).
    over_after_ = r->cut_seq != 0 && now > limit ? now : 0;
    if (r->listings + r->attrs > 0)
        log::info("index: names and attributes took ", size_text(used), ", past metadata_max=",
                  size_text(limit), ": dropped ", r->listings, " listings and ", r->attrs,
                  " attribute records read longest ago (", ms, " ms); now ", size_text(now));
    if (over_after_ != 0)
        log::warn("index: the kept names and attributes take ", size_text(now),
                     ", past metadata_max=", size_text(limit),
                     ", and what is left is pinned or in use: raise metadata_max, or unpin");
}

void MetaBudget::stop() {
    {
        std::lock_guard lk(mu_);
        if (stopping_)
            return;
        stopping_ = true;
    }
    core_.names.cancel_trim(); // a trim in flight ends at its next record
    // The timer is the strand's: cancelled there, after any check running.
    std::promise<void> stopped;
    boost::asio::post(strand_, [this, &stopped] {
        timer_.cancel();
        stopped.set_value();
    });
    stopped.get_future().wait();
}

} // namespace overcache::cache
