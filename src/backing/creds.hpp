// Acting on the backing with a caller's credentials. The daemon runs as root
// for everyone; when it creates a file for another user the file must be
// that user's, made with that user's rights (setgid directories, group
// membership, CAP_MKNOD), exactly as if the user had made it on the backing.
// setfsuid/setfsgid and the raw setgroups system call change only the
// calling thread, so a FUSE worker can take the caller's identity for one
// request and give it back.
#pragma once

#include <optional>
#include <span>
#include <sys/types.h>
#include <vector>

namespace overcache::backing {

// Whom a thread acts as: what an AsCaller took on.
struct Identity {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
};

// Takes the caller's identity on this thread for the guard's lifetime.
// A no-op when the daemon is not root (it cannot switch) or when the caller
// is root with group 0.
class AsCaller {
public:
    // `groups` are the caller's supplementary groups (may be empty when unknown).
    AsCaller(uid_t uid, gid_t gid, std::span<const gid_t> groups);
    ~AsCaller();
    AsCaller(const AsCaller&) = delete;
    AsCaller& operator=(const AsCaller&) = delete;

    // Whether the switch happened (false: running with the daemon's identity).
    bool switched() const noexcept { return switched_; }

private:
    bool switched_ = false;
    std::optional<Identity> was_; // the thread's identity before this one
};

// The identity the calling thread acts as, if an AsCaller switched it: a
// call handed to another thread (the gate's) takes it on there.
std::optional<Identity> acting_as();

// Records the daemon's own supplementary groups, to restore after a switch.
// Call once at start-up, before any worker thread exists.
void init_credentials();
// Whether the daemon can act as other users (it runs as root).
bool can_switch_credentials() noexcept;

} // namespace overcache::backing
