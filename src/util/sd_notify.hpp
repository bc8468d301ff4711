// The service manager's readiness protocol (sd_notify(3)), spoken directly:
// one datagram of "KEY=value" lines to the AF_UNIX socket named by
// $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). No
// libsystemd: the protocol is a documented, stable interface and this is
// all of it that overcache uses.
#pragma once

#include <string_view>

namespace overcache::sd {

// Whether $NOTIFY_SOCKET names a socket (the daemon runs under a service
// manager that listens).
bool notify_wanted() noexcept;
// Sends `state` (e.g. "READY=1\nSTATUS=..."). false: no socket, or the
// send failed (the manager is gone); never blocks.
bool notify(std::string_view state) noexcept;

} // namespace overcache::sd
