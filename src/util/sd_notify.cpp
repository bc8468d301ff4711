#include "util/sd_notify.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace overcache::sd {

namespace {

// The socket's address, or length 0 when there is none to use.
socklen_t address(sockaddr_un& sa) noexcept {
    const char* name = std::getenv("NOTIFY_SOCKET");
    if (name == nullptr || (name[0] != '/' && name[0] != '@'))
        return 0;
    const std::size_t len = std::strlen(name);
    if (len >= sizeof sa.sun_path)
        return 0;
    std::memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, name, len);
    if (name[0] == '@') {
        sa.sun_path[0] = '\0'; // abstract: no terminating NUL counted
        return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    }
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len + 1);
}

} // namespace

bool notify_wanted() noexcept {
    sockaddr_un sa{};
    return address(sa) != 0;
}

bool notify(std::string_view state) noexcept {
    sockaddr_un sa{};
    const socklen_t len = address(sa);
    if (len == 0)
        return false;
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return false;
    ssize_t n = -1;
    do {
        n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                     reinterpret_cast<const sockaddr*>(&sa), len);
    } while (n < 0 && errno == EINTR);
    ::close(fd);
    return n == static_cast<ssize_t>(state.size());
}

} // namespace overcache::sd
