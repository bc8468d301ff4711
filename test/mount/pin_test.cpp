// Pinning (issue #8) on a real mount: user.overcache.pin on a directory
// keeps what is below it in the cache. `overcache pin DIR` fetches the
// files; they stay cached while other data pushes the cache past its size,
// after the directory is renamed (the pin follows it) and after a remount
// (the pin and the kept extents survive it); `overcache unpin` lets them be
// evicted again. Bad values are refused with nothing changed, only the
// owner (or root) pins, a pin on a file fetches it in the background, a
// file renamed out of a pinned directory is unpinned at its next open,
// pinned data stops at its cap (half the cache) with a message instead of
// filling the cache, and the CLI's exit codes are those of prefetch.
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"
#include "wait_until.hpp"

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <string>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache::test;

namespace {

const std::string kP = "user.overcache.";
constexpr std::size_t kMiB = 1u << 20;

int set(const std::string& path, const std::string& name, const std::string& v) {
    return ::setxattr(path.c_str(), (kP + name).c_str(), v.data(), v.size(), 0) == 0 ? 0 : errno;
}

int remove(const std::string& path, const std::string& name) {
    return ::removexattr(path.c_str(), (kP + name).c_str()) == 0 ? 0 : errno;
}

// The value of user.overcache.<name>, or "errno:N".
std::string get(const std::string& path, const std::string& name) {
    char buf[64];
    const ssize_t n = ::getxattr(path.c_str(), (kP + name).c_str(), buf, sizeof buf);
    if (n < 0)
        return "errno:" + std::to_string(errno);
    return std::string(buf, static_cast<std::size_t>(n));
}

std::string err(int e) {
    return "errno:" + std::to_string(e);
}

std::uint64_t cached(const std::string& path) {
    const std::string v = get(path, "cached_bytes");
    REQUIRE_MESSAGE(v.rfind("errno:", 0) != 0, path, ": ", v);
    return std::stoull(v);
}

// Waits (up to 10 s) for a background fetch to cache all `size` bytes.
bool wait_cached(const std::string& path, std::uint64_t size) {
    for (int i = 0; i < 200; ++i) {
        if (cached(path) == size)
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
}

// setxattr as `uid` (its fsuid, which FUSE passes on) in a child: 0 or errno.
int set_as(uid_t uid, const std::string& path, const std::string& name, const std::string& v) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        (void)::setfsgid(65534);
        (void)::setfsuid(uid);
        if (static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1))) != uid)
            std::_Exit(200);
        std::_Exit(set(path, name, v));
    }
    int ws = 0;
    REQUIRE(::waitpid(pid, &ws, 0) == pid);
    REQUIRE(WIFEXITED(ws));
    return WEXITSTATUS(ws);
}

// Pushes the cache (16M) well past its size with other data: `n` files of
// 3 MiB written to the backing and prefetched, each prefetch evicting what
// it must. Returns the names.
std::vector<std::string> pressure(Mount& m, const std::string& tag, int n = 10) {
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) {
        const std::string name = "fill-" + tag + "-" + std::to_string(i);
        write_file(m.root() + "/backing/" + name,
                   random_bytes(3 * kMiB, 100 + static_cast<std::uint64_t>(i)));
        names.push_back(m.mnt(name));
    }
    for (const auto& f : names)
        (void)cli({"prefetch", f}); // each fits alone; together they evict
    m.wait_fills();
    return names;
}

} // namespace

TEST_SUITE("pin") {
    TEST_CASE("pin: a pinned directory is fetched and stays cached under pressure, across a "
              "rename and a remount; unpin lets it go" *
              doctest::timeout(600)) {
        require_daemon();
        Mount m("cache_mode=writethrough,cache_size=16M");
        const std::string back = m.root() + "/backing/";
        REQUIRE(::mkdir((back + "p").c_str(), 0755) == 0);
        REQUIRE(::mkdir((back + "p/sub").c_str(), 0755) == 0);
        const std::string a = random_bytes(2 * kMiB, 1);
        const std::string b = random_bytes(kMiB + 4321, 2);
        write_file(back + "p/a", a);
        write_file(back + "p/sub/b", b);

        auto r = cli({"pin", m.mnt("p")});
        REQUIRE_MESSAGE(r.status == 0, r.out);
        CHECK(r.out.empty()); // quiet when not on a terminal
        CHECK(get(m.mnt("p"), "pin") == "1");
        CHECK(get(m.mnt("p/sub/b"), "pin") == err(ENODATA)); // inherited, not set
        CHECK(get(m.mnt("p/sub/b"), "effective_pin") == "1");
        CHECK(cached(m.mnt("p/a")) == a.size());
        CHECK(cached(m.mnt("p/sub/b")) == b.size());
        CHECK(m.stat("pinned_bytes") == a.size() + b.size());

        // The pin belongs to the directory, not its name.
        REQUIRE(::rename(m.mnt("p").c_str(), m.mnt("q").c_str()) == 0);
        CHECK(get(m.mnt("q"), "pin") == "1");
        CHECK(get(m.mnt("q/sub/b"), "effective_pin") == "1");

        const std::uint64_t reclaimed = m.stat("gc_buckets_reclaimed");
        auto fillers = pressure(m, "one");
        CHECK(m.stat("gc_buckets_reclaimed") > reclaimed); // there was pressure
        CHECK(cached(fillers.front()) < 3 * kMiB);         // and it evicted
        CHECK(cached(m.mnt("q/a")) == a.size());
        CHECK(cached(m.mnt("q/sub/b")) == b.size());
        const std::uint64_t misses = m.stat("cache_misses");
        CHECK(read_uncached(m.mnt("q/a")) == a);
        CHECK(read_uncached(m.mnt("q/sub/b")) == b);
        CHECK(m.stat("cache_misses") == misses); // all hits

        // A remount keeps the pin and what it kept; pressure again.
        m.remount();
        CHECK(get(m.mnt("q"), "pin") == "1");
        CHECK(get(m.mnt("q/sub/b"), "effective_pin") == "1");
        CHECK(m.stat("pinned_bytes") == a.size() + b.size());
        pressure(m, "two");
        CHECK(cached(m.mnt("q/a")) == a.size());
        CHECK(cached(m.mnt("q/sub/b")) == b.size());

        // unpin: nothing is dropped, but it may be evicted again.
        r = cli({"unpin", m.mnt("q")});
        REQUIRE_MESSAGE(r.status == 0, r.out);
        CHECK(get(m.mnt("q"), "pin") == err(ENODATA));
        CHECK(get(m.mnt("q/sub/b"), "effective_pin") == "0");
        CHECK(m.stat("pinned_bytes") == 0);
        CHECK(cached(m.mnt("q/a")) == a.size());
        pressure(m, "three");
        CHECK(cached(m.mnt("q/a")) + cached(m.mnt("q/sub/b")) < a.size() + b.size());
        CHECK(read_file(m.mnt("q/a")) == a);
    }

    TEST_CASE("pin: values, owners, a pinned file, the cap, and the CLI's exit codes" *
              doctest::timeout(300)) {
        require_daemon();
        Mount m("cache_mode=writethrough,cache_size=16M");
        const std::string back = m.root() + "/backing/";
        REQUIRE(::mkdir((back + "d").c_str(), 0755) == 0);
        write_file(back + "d/f", random_bytes(5000, 3));
        const std::string d = m.mnt("d");
        const std::string f = m.mnt("d/f");

        CHECK(get(f, "effective_pin") == "0"); // nothing pins it
        CHECK(set(d, "pin", "2") == EINVAL);
        CHECK(set(d, "pin", "yes") == EINVAL);
        CHECK(get(d, "pin") == err(ENODATA)); // nothing changed
        REQUIRE(set(d, "pin", "1") == 0);
        CHECK(set(d, "pin", "x") == EINVAL);
        CHECK(get(d, "pin") == "1");
        CHECK(set(d, "effective_pin", "0") == EINVAL); // read-only
        // A file below unpins itself; `inherit` returns to the directory's.
        REQUIRE(set(f, "pin", "0") == 0);
        CHECK(get(f, "effective_pin") == "0");
        REQUIRE(set(f, "pin", "inherit") == 0);
        CHECK(get(f, "pin") == err(ENODATA));
        CHECK(get(f, "effective_pin") == "1");
        CHECK(wait_cached(f, 5000)); // pinned again: fetched in the background
        // pinned_bytes moves just after the commit cached_bytes reads.
        CHECK(wait_until([&] { return m.stat("pinned_bytes") == 5000; }, std::chrono::seconds(10)));
        std::vector<char> names(4096);
        const ssize_t n = ::listxattr(d.c_str(), names.data(), names.size());
        REQUIRE(n > 0);
        CHECK(has(std::string(names.data(), static_cast<std::size_t>(n)), "user.overcache.pin"));
        REQUIRE(remove(d, "pin") == 0);
        CHECK(remove(d, "pin") == ENODATA);
        CHECK(get(f, "effective_pin") == "0");
        // A file follows its directory's pin at its next open.
        CHECK(read_file(f).size() == 5000);
        CHECK(m.stat("pinned_bytes") == 0);

        // Only the owner or root: a world-writable file of root's.
        REQUIRE(::chmod(f.c_str(), 0666) == 0);
        CHECK(set_as(65534, f, "pin", "1") == EPERM);
        CHECK(get(f, "pin") == err(ENODATA));

        // A pin set on a file fetches it in the background; removing it
        // unpins what it holds at once.
        const std::string g = random_bytes(kMiB + 77, 4);
        write_file(back + "g", g);
        REQUIRE(set(m.mnt("g"), "pin", "1") == 0);
        CHECK(wait_cached(m.mnt("g"), g.size()));
        CHECK(wait_until([&] { return m.stat("pinned_bytes") == g.size(); },
                         std::chrono::seconds(10)));
        REQUIRE(remove(m.mnt("g"), "pin") == 0);
        CHECK(m.stat("pinned_bytes") == 0);
        CHECK(cached(m.mnt("g")) == g.size()); // kept, just evictable

        // The cap: half the cache. A file bigger than that is pinned up to
        // it, then the fetch stops and says so; the mount goes on.
        const std::string big = random_bytes(12 * kMiB, 5);
        write_file(back + "big", big);
        auto r = cli({"pin", m.mnt("big")});
        CHECK(r.status == 1);
        CHECK_MESSAGE(has(r.out, "cap"), r.out);
        CHECK_MESSAGE(has(r.out, m.mnt("big")), r.out);
        CHECK(m.stat("pinned_bytes") <= m.stat("pinned_cap"));
        CHECK(m.stat("pinned_cap") <= 8 * kMiB);
        CHECK(read_uncached(m.mnt("big")) == big);
        CHECK(m.stats().at("cache_state") == "running");
        REQUIRE(cli({"unpin", m.mnt("big")}).status == 0);
        CHECK(m.stat("pinned_bytes") == 0);

        // Exit codes and messages as prefetch's.
        CHECK(cli({"pin"}).status == 2);
        CHECK(cli({"unpin"}).status == 2);
        CHECK(cli({"pin", "--frob", f}).status == 2);
        auto help = cli({"pin", "--help"});
        CHECK(help.status == 0);
        CHECK(has(help.out, "usage: overcache pin PATH..."));
        help = cli({"unpin", "--help"});
        CHECK(help.status == 0);
        CHECK(has(help.out, "usage: overcache unpin PATH..."));
        auto missing = cli({"pin", m.mnt("nope"), f});
        CHECK(missing.status == 1);
        CHECK_MESSAGE(has(missing.out, m.mnt("nope")), missing.out);
        CHECK(get(f, "pin") == "1"); // the rest still ran
        CHECK(cached(f) == 5000);
        CHECK(cli({"unpin", m.mnt("nope")}).status == 1);
        REQUIRE(cli({"unpin", f}).status == 0);
        CHECK(get(f, "effective_pin") == "0");
        CHECK(m.stat("pinned_bytes") == 0);

        // A file renamed out of a pinned directory is unpinned at its next
        // open (the pin is the directory's, not the file's).
        REQUIRE(::mkdir(m.mnt("keep").c_str(), 0755) == 0);
        write_file(m.mnt("keep/h"), random_bytes(70000, 6));
        REQUIRE(cli({"pin", m.mnt("keep")}).status == 0);
        CHECK(m.stat("pinned_bytes") == 70000);
        REQUIRE(::rename(m.mnt("keep/h").c_str(), m.mnt("h").c_str()) == 0);
        CHECK(get(m.mnt("h"), "effective_pin") == "0");
        CHECK(read_file(m.mnt("h")).size() == 70000);
        CHECK(m.stat("pinned_bytes") == 0);
        CHECK(cached(m.mnt("h")) == 70000); // nothing dropped
    }
}
