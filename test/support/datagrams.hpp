// Test support: the listening end of a datagram protocol a daemon speaks
// (sd_notify's $NOTIFY_SOCKET, syslog's /dev/log): a bound AF_UNIX datagram
// socket, and a wait, with a deadline, for a message that matches.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <doctest/doctest.h>
#include <functional>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace overcache::test {

// A datagram socket bound to `name`: a path, or "@name" (abstract).
inline int bind_datagrams(const std::string& name) {
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    REQUIRE(!name.empty());
    REQUIRE(name.size() < sizeof sa.sun_path);
    std::memcpy(sa.sun_path, name.data(), name.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
    if (name[0] == '@') {
        sa.sun_path[0] = '\0';
        len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    }
    REQUIRE_MESSAGE(::bind(fd, reinterpret_cast<const sockaddr*>(&sa), len) == 0,
                    name << ": " << std::strerror(errno));
    return fd;
}

// Messages until one satisfies `match` or `deadline` passes; each one
// received is appended to `seen`, followed by `separator`.
inline bool wait_datagram(int fd, const std::function<bool(const std::string&)>& match,
                          std::string& seen, std::chrono::milliseconds deadline,
                          const std::string& separator = "\n") {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 200) <= 0)
            continue;
        char buf[4096];
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            continue;
        const std::string msg(buf, static_cast<std::size_t>(n));
        seen += msg + separator;
        if (match(msg))
            return true;
    }
    return false;
}

} // namespace overcache::test
