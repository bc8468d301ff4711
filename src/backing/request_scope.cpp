// DOC: RequestScope (request_scope.hpp): which gate a request thread's
// backing calls go through, and the descriptors lent to them.
#include "backing/request_scope.hpp"

#include <cerrno>
#include <unistd.h>
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace overcache::backing {
namespace {

thread_local RequestScope* t_scope = nullptr;

bool lock_within(std::timed_mutex& mu, std::chrono::nanoseconds d) {
    if (!mu.try_lock_for(d))
        return false;
#if defined(__SANITIZE_THREAD__)
    // libstdc++ takes a timed_mutex with pthread_mutex_clocklock, which
    // g++ 12's ThreadSanitizer does not intercept: told nothing, it would
    // take our unlock for that of a mutex we never held.
    __tsan_mutex_pre_lock(&mu, 0);
    __tsan_mutex_post_lock(&mu, 0, 0);
#endif
    return true;
}

} // namespace

RequestScope::RequestScope(Gate& gate) noexcept : gate_(&gate), outer_(t_scope) {
    t_scope = this;
}

RequestScope::~RequestScope() {
    t_scope = outer_;
}

RequestScope* RequestScope::active() noexcept {
    RequestScope* s = t_scope;
    return s != nullptr && s->gate_->offline_ok() ? s : nullptr;
}

bool RequestScope::lock(std::timed_mutex& mu) {
    if (mu.try_lock())
        return true;
    // Its holder is in the backing: waited for while the backing answers.
    Gate::Watch watch(*gate_);
    while (watch.alive()) {
        if (lock_within(mu, watch.slice()))
            return true;
    }
    // The backing may have answered again and the holder let go meanwhile.
    if (mu.try_lock())
        return true;
    missed_ = true;
    return false;
}

int RequestScope::judged(int err) {
    if (err != 0 && gate_->judge(err)) {
        missed_ = true;
        return EIO;
    }
    return err;
}

std::shared_ptr<RequestScope::Lent> RequestScope::lend_fds(std::initializer_list<int> fds) {
    auto lent = std::make_shared<Lent>();
    lent->fds.reserve(fds.size());
    lent->raw.reserve(fds.size());
    for (const int fd : fds) {
        if (fd < 0) { // "none" (AT_FDCWD and the like pass through)
            lent->raw.push_back(fd);
            continue;
        }
        UniqueFd d(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
        if (!d)
            return nullptr;
        const int fl = ::fcntl(d.get(), F_GETFL);
        if (fl < 0 || (fl & O_PATH) == 0)
            lent->open_file = true;
        lent->raw.push_back(d.get());
        lent->fds.push_back(std::move(d));
    }
    return lent;
}

void RequestScope::give_back(std::shared_ptr<Lent> lent) {
    // Still held by the call (abandoned, or not yet let go of): its thread
    // closes them. Else the last close goes to a gate thread if it may
    // have to wait for the backing.
    if (lent.use_count() == 1 && lent->open_file && !lent->fds.empty())
        gate_->post([l = std::move(lent)] {});
}

} // namespace overcache::backing
