// The KernelChannel on pipes: the INIT reply gains HANDLE_KILLPRIV_V2 only
// when the kernel offered it (and never alongside the first version), other
// replies pass unchanged, and each request's kill-set-id flag is what the
// handler on that thread sees, until the thread reads the next request.
#include "fuse/kernel_channel.hpp"

#include <cerrno>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using overcache::fuse::KernelChannel;
using overcache::fuse::mode_without_setid;
using overcache::fuse::request_flags;

namespace {

struct Pipe {
    int r = -1, w = -1;
    Pipe() {
        int p[2];
        REQUIRE(::pipe(p) == 0);
        r = p[0];
        w = p[1];
    }
    ~Pipe() {
        ::close(r);
        ::close(w);
    }
    Pipe(const Pipe&) = delete;
    Pipe& operator=(const Pipe&) = delete;
};

// A request as the kernel sends it: header, then `arg`'s bytes.
template <typename Arg>
std::string request(std::uint32_t opcode, std::uint64_t unique, const Arg& arg,
                    std::size_t arg_len = sizeof(Arg)) {
    fuse_in_header h{};
    h.len = static_cast<std::uint32_t>(sizeof h + arg_len);
    h.opcode = opcode;
    h.unique = unique;
    std::string out(reinterpret_cast<const char*>(&h), sizeof h);
    out.append(reinterpret_cast<const char*>(&arg), arg_len);
    return out;
}

// Feeds `req` through the channel's read() as one request.
ssize_t deliver(KernelChannel& ch, const std::string& req) {
    Pipe p;
    REQUIRE(::write(p.w, req.data(), req.size()) == static_cast<ssize_t>(req.size()));
    std::vector<char> buf(1 << 16);
    return ch.read(p.r, buf.data(), buf.size());
}

// The INIT reply libfuse would send for `unique`, through the channel's
// writev(); returns the flags that reached the kernel.
std::uint32_t reply_init(KernelChannel& ch, std::uint64_t unique, std::uint32_t flags,
                         std::int32_t error = 0) {
    fuse_out_header h{};
    fuse_init_out arg{};
    arg.major = FUSE_KERNEL_VERSION;
    arg.minor = 36;
    arg.flags = flags;
    h.len = sizeof h + sizeof arg;
    h.error = error;
    h.unique = unique;
    iovec iov[2] = {{&h, sizeof h}, {&arg, sizeof arg}};
    Pipe p;
    REQUIRE(ch.writev(p.w, iov, 2) == static_cast<ssize_t>(sizeof h + sizeof arg));
    char got[sizeof h + sizeof arg];
    REQUIRE(::read(p.r, got, sizeof got) == static_cast<ssize_t>(sizeof got));
    fuse_init_out sent{};
    std::memcpy(&sent, got + sizeof h, sizeof sent);
    return sent.flags;
}

std::string init_request(std::uint64_t unique, std::uint32_t kernel_flags) {
    fuse_init_in in{};
    in.major = FUSE_KERNEL_VERSION;
    in.minor = 38;
    in.flags = kernel_flags;
    return request(FUSE_INIT, unique, in);
}

} // namespace

TEST_SUITE("kernel_channel") {
    TEST_CASE("INIT: HANDLE_KILLPRIV_V2 is taken when offered, and the first version dropped") {
        KernelChannel ch(true);
        deliver(ch, init_request(5, FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV_V2));
        CHECK(ch.killpriv_v2_offered());
        CHECK_FALSE(ch.killpriv_v2());
        // A notification (unique 0) before the reply passes unchanged.
        CHECK(reply_init(ch, 0, FUSE_ASYNC_READ) == FUSE_ASYNC_READ);
        const std::uint32_t sent = reply_init(ch, 5, FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV);
        CHECK(sent == (FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV_V2));
        CHECK(ch.killpriv_v2());
        // Only that one reply is edited.
        CHECK(reply_init(ch, 5, FUSE_ASYNC_READ) == FUSE_ASYNC_READ);
    }

    TEST_CASE("INIT: nothing is added when the kernel does not offer it, or it is not wanted") {
        {
            KernelChannel ch(true);
            deliver(ch, init_request(9, FUSE_ASYNC_READ));
            CHECK_FALSE(ch.killpriv_v2_offered());
            CHECK(reply_init(ch, 9, FUSE_ASYNC_READ) == FUSE_ASYNC_READ);
            CHECK_FALSE(ch.killpriv_v2());
        }
        {
            KernelChannel ch(false);
            deliver(ch, init_request(9, FUSE_HANDLE_KILLPRIV_V2));
            CHECK_FALSE(ch.killpriv_v2_offered());
            CHECK(reply_init(ch, 9, 0) == 0u);
            CHECK_FALSE(ch.killpriv_v2());
        }
        {
            // INIT refused (a protocol the daemon does not speak): untouched.
            KernelChannel ch(true);
            deliver(ch, init_request(3, FUSE_HANDLE_KILLPRIV_V2));
            CHECK(reply_init(ch, 3, 0, -EPROTO) == 0u);
            CHECK_FALSE(ch.killpriv_v2());
        }
    }

    TEST_CASE("each request's kill flag is seen until the thread's next read") {
        KernelChannel ch(true);
        fuse_write_in w{};
        w.size = 0;
        w.write_flags = FUSE_WRITE_KILL_SUIDGID | FUSE_WRITE_LOCKOWNER;
        deliver(ch, request(FUSE_WRITE, 11, w));
        CHECK(request_flags().kill_suidgid);

        fuse_getattr_in g{};
        deliver(ch, request(FUSE_GETATTR, 12, g));
        CHECK_FALSE(request_flags().kill_suidgid);

        w.write_flags = FUSE_WRITE_CACHE; // the kernel's writeback of a page
        deliver(ch, request(FUSE_WRITE, 13, w));
        CHECK_FALSE(request_flags().kill_suidgid);

        fuse_setattr_in s{};
        s.valid = FATTR_SIZE | FATTR_KILL_SUIDGID;
        deliver(ch, request(FUSE_SETATTR, 14, s));
        CHECK(request_flags().kill_suidgid);
        s.valid = FATTR_SIZE;
        deliver(ch, request(FUSE_SETATTR, 15, s));
        CHECK_FALSE(request_flags().kill_suidgid);

        fuse_open_in o{};
        o.flags = O_WRONLY | O_TRUNC;
        o.open_flags = FUSE_OPEN_KILL_SUIDGID;
        deliver(ch, request(FUSE_OPEN, 16, o));
        CHECK(request_flags().kill_suidgid);

        fuse_create_in c{};
        c.flags = O_WRONLY | O_TRUNC | O_CREAT;
        c.open_flags = FUSE_OPEN_KILL_SUIDGID;
        deliver(ch, request(FUSE_CREATE, 17, c));
        CHECK(request_flags().kill_suidgid);

        // Cut short before the flags: libfuse refuses it; nothing is read
        // past its end.
        w.write_flags = FUSE_WRITE_KILL_SUIDGID;
        deliver(ch, request(FUSE_WRITE, 18, w, offsetof(fuse_write_in, write_flags)));
        CHECK_FALSE(request_flags().kill_suidgid);
    }

    TEST_CASE("a failed read returns as read(2) does, errno included") {
        KernelChannel ch(true);
        std::vector<char> buf(4096);
        errno = 0;
        CHECK(ch.read(-1, buf.data(), buf.size()) == -1);
        CHECK(errno == EBADF);
        CHECK_FALSE(request_flags().kill_suidgid);
    }

    TEST_CASE("mode_without_setid: setuid goes; setgid only with group execute") {
        CHECK(mode_without_setid(S_IFREG | 06775) == (S_IFREG | 0775));
        CHECK(mode_without_setid(S_IFREG | 06765) == (S_IFREG | 02765));
        CHECK(mode_without_setid(S_IFREG | 0755) == (S_IFREG | 0755));
        CHECK(mode_without_setid(S_IFREG | 01777) == (S_IFREG | 01777));
    }
}
