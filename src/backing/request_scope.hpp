// Backing calls made on a request thread, each with the gate's deadline.
//
// A FUSE request handler opens a RequestScope on its thread. While it lives,
// the calls of backing_fs.hpp and file_ops.hpp made on that thread run on
// the gate's threads (gate.hpp), as whom the thread acts as (AsCaller), on
// duplicates of the descriptors they were given and copies of the bytes; a
// call that gets no answer (the backing is offline, or the call missed its
// deadline and the backing is offline now) fails with EIO, and so does one
// whose error says the backing cannot be reached. So every handler, and the
// data paths under it, waits on a stalled backing for one deadline at most,
// written as plain calls into the backing, and without its request thread
// ever sitting in one.
//
// A scope over a gate whose calls run inline (backing_calls=inline,
// offline_ok=0) changes nothing. Threads without a scope (writeback, GC,
// the gate's own) call the backing directly.
#pragma once

#include "backing/gate.hpp"
#include "util/unique_fd.hpp"

#include <fcntl.h>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <vector>

namespace overcache::backing {

class RequestScope {
public:
    explicit RequestScope(Gate& gate) noexcept;
    ~RequestScope();
    RequestScope(const RequestScope&) = delete;
    RequestScope& operator=(const RequestScope&) = delete;

    // A call made in the scope got no answer: what it was to change may
    // still happen later, or may not.
    bool missed() const noexcept { return missed_; }

    // The scope open on this thread whose calls go through a gate now, or
    // nullptr: calls run here.
    static RequestScope* active() noexcept;

    Gate& gate() const noexcept { return *gate_; }
    // An errno a call answered with: EIO (and missed) when it says the
    // backing cannot be reached (Gate::judge), else `err`.
    int judged(int err);

    // Takes `mu`, a lock that a thread without a deadline may hold while
    // it is in the backing (writeback copying a file holds the file's
    // backing_mu). Waited for as a Patience::while_alive call, as long as
    // the probe answers (Gate::Watch). False, and missed(), once it does
    // not (or the backing was offline and `mu` held): the holder may
    // never let go.
    bool lock(std::timed_mutex& mu);

    // Runs `call(fds)` on a gate thread, `fds` duplicates of `lend` that
    // the call owns (an abandoned call may finish after its caller is
    // gone), as whom this thread acts as, waited for as `patience` says.
    // nullopt: no answer (missed()).
    template <class F>
    auto run(std::initializer_list<int> lend, F call,
             Gate::Patience patience = Gate::Patience::deadline)
        -> std::optional<std::invoke_result_t<F&, const int*>>;

private:
    // Descriptors lent to one call. The last close of a duplicate of an
    // open file happens on a gate thread: a FUSE or NFS backing is asked to
    // flush at every close(2), and a stalled one never answers.
    struct Lent {
        std::vector<UniqueFd> fds;
        std::vector<int> raw;
        bool open_file = false; // any is an open file, not an O_PATH handle
    };
    std::shared_ptr<Lent> lend_fds(std::initializer_list<int> fds);
    void give_back(std::shared_ptr<Lent> lent);

    Gate* gate_;
    RequestScope* outer_;
    bool missed_ = false;
};

// Whether this thread's calls go through a gate now.
inline bool scoped() noexcept {
    return RequestScope::active() != nullptr;
}

} // namespace overcache::backing

#include "backing/creds.hpp"

namespace overcache::backing {

template <class F>
auto RequestScope::run(std::initializer_list<int> lend, F call, Gate::Patience patience)
    -> std::optional<std::invoke_result_t<F&, const int*>> {
    using R = std::invoke_result_t<F&, const int*>;
    auto lent = lend_fds(lend);
    if (!lent) {
        missed_ = true;
        return std::nullopt;
    }
    auto r = gate_->call([lent, who = acting_as(), c = std::move(call)]() mutable -> R {
        std::optional<AsCaller> as;
        if (who)
            as.emplace(who->uid, who->gid, who->groups);
        return c(lent->raw.data());
    }, patience);
    give_back(std::move(lent));
    if (!r)
        missed_ = true;
    return r;
}

} // namespace overcache::backing
