// RequestScope: on a thread with a scope open, the backing calls of
// backing_fs.hpp and file_ops.hpp run on the gate's threads, as whom the
// thread acts as, on duplicates of its descriptors, and one that does not
// answer in time fails with EIO (the scope says it missed) instead of
// holding the thread. Without a scope, or over an inline gate, they run
// here. The stall is a FIFO nobody writes to: an open of it for reading
// blocks, as a call into a stopped backing does, until a writer comes.
#include "backing/backing_fs.hpp"
#include "backing/creds.hpp"
#include "backing/file_ops.hpp"
#include "backing/request_scope.hpp"
#include "tmp_dir.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <string>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// `timeout`: short where a stall is made, long where none is (a loaded
// machine must not turn a slow mkdir into one).
backing::Gate::Options fast(bool offline_ok = true, std::chrono::milliseconds timeout = 5000ms) {
    backing::Gate::Options o;
    o.timeout = timeout;
    o.threads = 2;
    o.probe_interval = 20ms;
    o.offline_ok = offline_ok;
    return o;
}

} // namespace

TEST_CASE("calls in a request scope run on the gate's threads and answer as here") {
    test::TmpDir dir;
    UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(root);
    backing::Gate gate(fast(), [] { return 0; });
    backing::RequestScope scope(gate);
    REQUIRE(backing::RequestScope::active() == &scope);
    CHECK(backing::make_dir(root.get(), "d", 0750) == 0);
    CHECK(backing::make_dir(root.get(), "d", 0750) == EEXIST);
    struct stat st {};
    REQUIRE(backing::stat_at(root.get(), "d", st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 07777) == 0750);
    auto f = backing::open_at(root.get(), "f", O_RDWR | O_CREAT | O_EXCL, 0640);
    REQUIRE(f);
    const std::string bytes(100000, 'b');
    auto n = backing::write_all(f->get(), bytes.data(), bytes.size(), 10);
    REQUIRE(n);
    CHECK(*n == bytes.size());
    CHECK(backing::sync_file(f->get(), true));
    auto fst = backing::fstat_file(f->get());
    REQUIRE(fst);
    CHECK(fst->st_size == 100010);
    CHECK(backing::truncate_file(f->get(), true, 5));
    {
        // A file handle opened again through the scope, as the inode table
        // does for files past its pinned budget.
        std::vector<char> handle(sizeof(file_handle) + MAX_HANDLE_SZ);
        auto* fh = reinterpret_cast<file_handle*>(handle.data());
        fh->handle_bytes = MAX_HANDLE_SZ;
        int mount_id = 0;
        REQUIRE_MESSAGE(::name_to_handle_at(f->get(), "", fh, &mount_id, AT_EMPTY_PATH) == 0,
                        "name_to_handle_at in " << dir.path() << ": " << std::strerror(errno));
        handle.resize(sizeof(file_handle) + fh->handle_bytes);
        UniqueFd mount_fd(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        REQUIRE(mount_fd);
        auto again = backing::open_by_handle(mount_fd.get(), handle, O_RDONLY);
        REQUIRE(again);
        char b[8] = {};
        CHECK(::pread(again->get(), b, sizeof b, 0) == 5);
        CHECK(std::string(b, 5) == std::string(5, '\0'));
        struct stat a {}, c {};
        REQUIRE(::fstat(again->get(), &a) == 0);
        REQUIRE(::fstat(f->get(), &c) == 0);
        CHECK(a.st_ino == c.st_ino);
        CHECK((::fcntl(again->get(), F_GETFD) & FD_CLOEXEC) != 0);
    }
    CHECK(backing::rename_at(root.get(), "f", root.get(), "g", 0) == 0);
    CHECK(backing::stat_at(root.get(), "f", st) == ENOENT);
    REQUIRE(backing::stat_at(root.get(), "g", st) == 0);
    CHECK(st.st_size == 5);
    CHECK(backing::unlink_at(root.get(), "g", 0) == 0);
    CHECK(backing::unlink_at(root.get(), "d", AT_REMOVEDIR) == 0);
    CHECK_FALSE(scope.missed());
    // The descriptors lent were duplicates: ours are untouched.
    CHECK(::fcntl(root.get(), F_GETFD) >= 0);
    CHECK(::fcntl(f->get(), F_GETFD) >= 0);
}

TEST_CASE("a call in a request scope that does not answer fails with EIO within the deadline") {
    test::TmpDir dir;
    const std::string fifo = dir.path() + "/fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    // The probe fails until the stall is over: the gate stays offline
    // (a probe answering at once would turn it online again at any moment).
    auto answers = std::make_shared<std::atomic<bool>>(false);
    backing::Gate gate(fast(true, 200ms), [answers] { return answers->load() ? 0 : EIO; });
    {
        backing::RequestScope scope(gate);
        const auto t0 = Clock::now();
        // An open of a FIFO for reading waits for a writer: the stall.
        auto r = backing::open_at(root.get(), "fifo", O_RDONLY, 0);
        CHECK_FALSE(r);
        if (!r)
            CHECK(to_errno(r.error()) == EIO);
        CHECK(Clock::now() - t0 < 2s);
        CHECK(scope.missed());
        CHECK_FALSE(gate.online());
        // Offline: refused at once.
        struct stat st {};
        CHECK(backing::stat_at(root.get(), "fifo", st) == EIO);
    }
    // The abandoned open ends once a writer comes.
    CHECK(gate.settled_after_ns() == INT64_MAX);
    answers->store(true);
    {
        UniqueFd w(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
        const auto end = Clock::now() + 5s;
        while (gate.settled_after_ns() == INT64_MAX && Clock::now() < end)
            std::this_thread::sleep_for(5ms);
    }
    CHECK(gate.settled_after_ns() != INT64_MAX);
    // Without a scope the same calls run here.
    struct stat st {};
    CHECK(backing::stat_at(root.get(), "fifo", st) == 0);
}

TEST_CASE("a request scope over an inline gate, or none, runs calls on this thread") {
    test::TmpDir dir;
    UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    backing::Gate gate(fast(false), [] { return 0; });
    CHECK(backing::RequestScope::active() == nullptr);
    {
        backing::RequestScope scope(gate);
        CHECK(backing::RequestScope::active() == nullptr);
        CHECK(backing::make_dir(root.get(), "d", 0755) == 0);
    }
    CHECK(backing::RequestScope::active() == nullptr);
}

TEST_CASE("a call in a request scope acts as whom the thread acts as") {
    backing::init_credentials();
    if (!backing::can_switch_credentials()) {
        MESSAGE("not root: the identity cannot be switched here");
        return;
    }
    test::TmpDir dir;
    REQUIRE(::chmod(dir.path().c_str(), 0777) == 0);
    UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    backing::Gate gate(fast(), [] { return 0; });
    backing::RequestScope scope(gate);
    {
        const gid_t groups[] = {4242};
        backing::AsCaller as(4321, 1234, groups);
        REQUIRE(as.switched());
        CHECK(backing::make_dir(root.get(), "mine", 0755) == 0);
    }
    CHECK(backing::make_dir(root.get(), "roots", 0755) == 0);
    struct stat st {};
    REQUIRE(::fstatat(root.get(), "mine", &st, AT_SYMLINK_NOFOLLOW) == 0);
    CHECK(st.st_uid == 4321);
    CHECK(st.st_gid == 1234);
    REQUIRE(::fstatat(root.get(), "roots", &st, AT_SYMLINK_NOFOLLOW) == 0);
    CHECK(st.st_uid == 0);
    CHECK_FALSE(scope.missed());
}

TEST_CASE("a lock held by a thread in the backing is waited for while the backing answers, and "
          "given up about one deadline after it stops") {
    // The holder stands in for writeback, which holds a file's backing lock
    // across its backing I/O. The probe is a statfs of the directory, and
    // the stall an open of a FIFO for reading that waits for a writer.
    test::TmpDir dir;
    const std::string fifo = dir.path() + "/fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    auto stalled = std::make_shared<std::atomic<bool>>(false);
    // Deadlines of 2 s: wide margins beside a loaded machine's delays.
    constexpr auto kDeadline = 2000ms;
    backing::Gate gate(fast(true, kDeadline), [stalled, fifo, d = dir.path()] {
        if (stalled->load()) {
            const int fd = ::open(fifo.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd >= 0)
                ::close(fd);
        }
        struct statvfs sv {};
        return ::statvfs(d.c_str(), &sv) == 0 ? 0 : errno;
    });
    std::timed_mutex mu;
    std::atomic<bool> let_go{false};
    auto hold = [&](std::chrono::milliseconds at_least) {
        std::atomic<bool> held{false}; // touched only until hold returns
        std::thread holder([&mu, &held, &let_go, at_least] {
            std::lock_guard lk(mu);
            held = true;
            const auto end = Clock::now() + at_least;
            while (Clock::now() < end || (at_least == 0ms && !let_go.load()))
                std::this_thread::sleep_for(5ms);
        });
        while (!held.load())
            std::this_thread::sleep_for(1ms);
        return holder;
    };

    // Slow but alive: longer than a deadline, the probe answering.
    {
        std::thread holder = hold(kDeadline + 500ms);
        backing::RequestScope scope(gate);
        const auto t0 = Clock::now();
        const bool got = scope.lock(mu);
        CHECK(got);
        CHECK(Clock::now() - t0 >= kDeadline);
        if (got)
            mu.unlock();
        CHECK_FALSE(scope.missed());
        holder.join();
    }
    CHECK(gate.online());
    CHECK(gate.stats().timeouts == 0);

    // The backing stops while the lock is wanted: given up once an ask of
    // the probe went the whole deadline unanswered, not a deadline of
    // waiting for the lock plus one for the probe (measured: 2.0-2.1 s; it
    // was 4.0 s).
    {
        std::thread holder = hold(0ms);
        stalled->store(true);
        backing::RequestScope scope(gate);
        const auto t0 = Clock::now();
        const bool got = scope.lock(mu);
        const auto waited = Clock::now() - t0;
        CHECK_FALSE(got);
        CHECK(scope.missed());
        CHECK(waited >= kDeadline);
        CHECK_MESSAGE(waited < kDeadline * 8 / 5,
                      "gave up after "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
                          << " ms");
        CHECK_FALSE(gate.online());
        CHECK(gate.stats().timeouts == 1);
        // The stall ends: the probe's open meets a writer.
        stalled->store(false);
        UniqueFd w(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
        let_go = true;
        holder.join();
    }
    const auto end = Clock::now() + 5s;
    while (!gate.online() && Clock::now() < end)
        std::this_thread::sleep_for(5ms);
    CHECK(gate.online());
}
