// DOC: per-thread credential switching for operations done on a caller's
// behalf. glibc's setgroups() changes every thread of the process (it
// broadcasts to all threads), so the raw system call is used: it changes only
// the calling thread. setfsuid/setfsgid are per-thread by nature. Leaving a
// nonzero fsuid drops the file capabilities (CAP_DAC_OVERRIDE, CAP_CHOWN,
// CAP_MKNOD, ...) and returning to 0 restores them, so the backing checks
// exactly what it would check for the caller.
#include "backing/creds.hpp"

#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace overcache::backing {
namespace {

std::vector<gid_t> g_own_groups; // written once by init_credentials(), then read-only
bool g_is_root = false;
thread_local std::optional<Identity> t_acting; // set while an AsCaller switched this thread

long set_thread_groups(std::span<const gid_t> groups) noexcept {
    return ::syscall(SYS_setgroups, groups.size(), groups.data());
}

} // namespace

void init_credentials() {
    g_is_root = ::geteuid() == 0;
    const int n = ::getgroups(0, nullptr);
    if (n > 0) {
        g_own_groups.resize(static_cast<std::size_t>(n));
        const int got = ::getgroups(n, g_own_groups.data());
        g_own_groups.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
    }
}

bool can_switch_credentials() noexcept {
    return g_is_root;
}

AsCaller::AsCaller(uid_t uid, gid_t gid, std::span<const gid_t> groups) {
    if (!g_is_root || (uid == 0 && gid == 0))
        return;
    // Order matters: groups and gid first, while the thread still has
    // CAP_SETGID; setfsuid last.
    set_thread_groups(groups);
    ::setfsgid(gid);
    ::setfsuid(uid);
    switched_ = true;
    was_ = std::move(t_acting);
    t_acting = Identity{uid, gid, std::vector<gid_t>(groups.begin(), groups.end())};
}

AsCaller::~AsCaller() {
    if (!switched_)
        return;
    t_acting = std::move(was_);
    if (t_acting) {
        // Nested: back to the outer caller.
        set_thread_groups(t_acting->groups);
        ::setfsgid(t_acting->gid);
        ::setfsuid(t_acting->uid);
        return;
    }
    ::setfsuid(0);
    ::setfsgid(0);
    set_thread_groups(g_own_groups);
}

std::optional<Identity> acting_as() {
    return t_acting;
}

} // namespace overcache::backing
