// "No stale read, ever": a file's bytes change on the backing behind the
// mount, then something is done to the file through the mount; whatever it
// was, the next read through the mount must return the backing's new bytes.
//
// Close-to-open only works if nothing between the backing change and the next
// open tells the cache "the record is current again". A metadata operation
// through the mount (chmod, touch, setxattr, chown, link/unlink, a truncate
// to the same size) or a write to another range must therefore never adopt
// the backing's attributes as the record's while the cached bytes stay: the
// cache did not see the data change, so it cannot vouch for the old extents.
//
// Each operation runs in four variants: the file held open through the
// mount across the backing change and the operation (an fd opened before
// the change and closed after the re-read) or not; and the backing change
// with a new mtime, or with its old mtime put back (size and mtime the same,
// only ctime tells).
//
// The long-lived reader case: one open, part of the file cached, the backing
// changes, the kernel refreshes the attributes (fstat), and the same fd reads
// the whole file: old bytes throughout (acceptable: no open happened since)
// or new bytes throughout, never a mix of cached old chunks and fresh ones.
//
// The page cache is made irrelevant per file: POSIX_FADV_DONTNEED on a mount
// fd before each checked read (never drop_caches, which is global).
#include "file_bytes.hpp"
#include "fuse_mount.hpp"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <thread>
#include <unistd.h>

using overcache::test::random_bytes;

using namespace overcache;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;

struct Fail : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string err(const std::string& what) { return what + ": " + std::strerror(errno); }

void pwrite_all(int fd, const std::string& data, off_t off, const std::string& what) {
    std::size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done,
                                   off + static_cast<off_t>(done));
        if (n <= 0)
            throw Fail(err("pwrite " + what));
        done += static_cast<std::size_t>(n);
    }
}

// Creates (or overwrites in place, keeping the inode and never changing the
// size on the way) a backing file.
void write_in_place(const std::string& path, const std::string& data) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        throw Fail(err("open " + path));
    pwrite_all(fd, data, 0, path);
    ::fsync(fd);
    ::close(fd);
}

std::string read_fd_all(int fd, std::size_t chunk = 128 * KiB) {
    std::string out, buf(chunk, '\0');
    for (off_t off = 0;;) {
        const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
        if (n < 0)
            throw Fail(err("read"));
        if (n == 0)
            break;
        out.append(buf.data(), static_cast<std::size_t>(n));
        off += n;
    }
    return out;
}

// Reads a whole file through the mount with its page cache dropped first, so
// every byte comes from the daemon.
std::string read_uncached(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw Fail(err("open " + path));
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    std::string out;
    try {
        out = read_fd_all(fd);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    return out;
}

std::map<std::string, std::string> stats(const test::Mount& m) {
    std::ifstream in(m.mnt(".overcache"));
    std::map<std::string, std::string> out;
    std::string k, v;
    while (in >> k >> v)
        out[k] = v;
    return out;
}

std::uint64_t stat_of(const test::Mount& m, const std::string& key) {
    auto s = stats(m);
    auto it = s.find(key);
    if (it == s.end())
        throw Fail("no " + key + " in .overcache");
    return std::stoull(it->second);
}

// Waits (deadline 15 s) until no fill is pending.
void wait_fills(const test::Mount& m) {
    const auto end = std::chrono::steady_clock::now() + 15s;
    while (stat_of(m, "fills_pending") != 0) {
        if (std::chrono::steady_clock::now() > end)
            throw Fail("fills_pending did not reach 0 within 15 s");
        std::this_thread::sleep_for(10ms);
    }
}

// Reads `path` through the mount until the cache serves it: a first read
// fills, a second must hit.
void cache_it(const test::Mount& m, const std::string& path, const std::string& expect) {
    if (read_uncached(path) != expect)
        throw Fail("precondition: the first read of " + path + " is wrong");
    wait_fills(m);
    const auto hits = stat_of(m, "cache_hits");
    if (read_uncached(path) != expect)
        throw Fail("precondition: the second read of " + path + " is wrong");
    if (stat_of(m, "cache_hits") <= hits)
        throw Fail("precondition: the second read of " + path + " did not hit the cache");
}

// Describes how `got` differs from `want`, knowing the `old` bytes.
std::string diff(const std::string& got, const std::string& want, const std::string& old) {
    std::ostringstream os;
    if (got.size() != want.size())
        os << "size " << got.size() << " instead of " << want.size() << "; ";
    const std::size_t n = std::min(got.size(), want.size());
    std::size_t wrong = 0, as_old = 0, first = n;
    for (std::size_t i = 0; i < n; ++i) {
        if (got[i] != want[i]) {
            ++wrong;
            if (first == n)
                first = i;
            if (i < old.size() && got[i] == old[i])
                ++as_old;
        }
    }
    os << wrong << " bytes wrong (first at " << first << "), " << as_old
       << " of them the OLD bytes";
    return os.str();
}

// Changes the backing file's bytes behind the mount (same size). With
// `keep_mtime`, its old atime and mtime are put back, so only ctime differs.
// Retries (deadline 5 s) until the backing's ctime actually moved: a change
// in the same timestamp tick as the cached state would be invisible to any
// attribute rule, and is not what these cases are about.
void change_behind(const std::string& path, const std::string& data, bool keep_mtime) {
    struct stat before {};
    if (::stat(path.c_str(), &before) != 0)
        throw Fail(err("stat " + path));
    const auto end = std::chrono::steady_clock::now() + 5s;
    for (;;) {
        write_in_place(path, data);
        if (keep_mtime) {
            const struct timespec ts[2] = {before.st_atim, before.st_mtim};
            if (::utimensat(AT_FDCWD, path.c_str(), ts, 0) != 0)
                throw Fail(err("utimensat " + path));
        }
        struct stat after {};
        if (::stat(path.c_str(), &after) != 0)
            throw Fail(err("stat " + path));
        if (after.st_ctim.tv_sec != before.st_ctim.tv_sec ||
            after.st_ctim.tv_nsec != before.st_ctim.tv_nsec)
            return;
        if (std::chrono::steady_clock::now() > end)
            throw Fail("the backing's ctime did not move within 5 s");
        std::this_thread::sleep_for(2ms);
    }
}

bool backing_takes_user_xattrs(const test::Mount& m) {
    const std::string p = m.backing(".xattr-probe");
    write_in_place(p, "x");
    const bool ok = ::setxattr(p.c_str(), "user.test", "1", 1, 0) == 0;
    ::unlink(p.c_str());
    return ok;
}

// The local operations, through the mount. `held` is the fd held open
// through the mount (O_RDWR) or -1. Each returns the bytes the file must
// have afterwards, given the backing's new bytes.
enum class Op { none, chmod, touch, setxattr, write_elsewhere, truncate_same, chown_same, link_unlink };

const char* name_of(Op op) {
    switch (op) {
    case Op::none:
        return "no operation (baseline)";
    case Op::chmod:
        return "chmod";
    case Op::touch:
        return "utimensat (touch)";
    case Op::setxattr:
        return "setxattr user.test";
    case Op::write_elsewhere:
        return "write of a few bytes elsewhere";
    case Op::truncate_same:
        return "truncate to the same size";
    case Op::chown_same:
        return "chown to the same owner";
    case Op::link_unlink:
        return "link then unlink of the link";
    }
    return "?";
}

constexpr std::size_t kFileSize = 1 * MiB; // four 256 KiB fill chunks
// Where write_elsewhere writes: inside the last chunk, away from the others.
constexpr std::size_t kPatchOff = kFileSize - 100;
const std::string kPatch = "LOCAL-WRITE";

std::string do_op(Op op, const std::string& path, int held, const std::string& now) {
    switch (op) {
    case Op::none:
        return now;
    case Op::chmod:
        if (::chmod(path.c_str(), 0640) != 0)
            throw Fail(err("chmod"));
        return now;
    case Op::touch:
        if (::utimensat(AT_FDCWD, path.c_str(), nullptr, 0) != 0)
            throw Fail(err("utimensat"));
        return now;
    case Op::setxattr:
        if (::setxattr(path.c_str(), "user.test", "v", 1, 0) != 0)
            throw Fail(err("setxattr"));
        return now;
    case Op::write_elsewhere: {
        // Through the held fd when there is one: a long-lived writer's own
        // write must not vouch for the bytes it did not write.
        int fd = held;
        if (fd < 0 && (fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC)) < 0)
            throw Fail(err("open for write"));
        pwrite_all(fd, kPatch, static_cast<off_t>(kPatchOff), "through the mount");
        if (fd != held)
            ::close(fd);
        std::string want = now;
        want.replace(kPatchOff, kPatch.size(), kPatch);
        return want;
    }
    case Op::truncate_same:
        if (::truncate(path.c_str(), static_cast<off_t>(now.size())) != 0)
            throw Fail(err("truncate"));
        return now;
    case Op::chown_same: {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0 || ::chown(path.c_str(), st.st_uid, st.st_gid) != 0)
            throw Fail(err("chown"));
        return now;
    }
    case Op::link_unlink: {
        const std::string other = path + ".link";
        if (::link(path.c_str(), other.c_str()) != 0)
            throw Fail(err("link"));
        if (::unlink(other.c_str()) != 0)
            throw Fail(err("unlink"));
        return now;
    }
    }
    return now;
}

// One case: cache, change behind, operate, re-read. Returns "" or what went
// wrong.
std::string run_case(const test::Mount& m, Op op, bool held_open, bool keep_mtime, unsigned seed) {
    const std::string name = "f" + std::to_string(seed);
    const std::string bpath = m.backing(name), mpath = m.mnt(name);
    const std::string old = random_bytes(kFileSize, seed), now = random_bytes(kFileSize, seed + 1);
    write_in_place(bpath, old);
    cache_it(m, mpath, old);
    int held = -1;
    if (held_open && (held = ::open(mpath.c_str(), O_RDWR | O_CLOEXEC)) < 0)
        throw Fail(err("open the held fd"));
    std::string got, want;
    try {
        change_behind(bpath, now, keep_mtime);
        want = do_op(op, mpath, held, now);
        got = read_uncached(mpath);
    } catch (...) {
        if (held >= 0)
            ::close(held);
        throw;
    }
    if (held >= 0)
        ::close(held);
    // The backing itself must hold what we expect, or the test is wrong
    // (in writeback mode, once the mount is flushed).
    m.settle();
    const int bfd = ::open(bpath.c_str(), O_RDONLY | O_CLOEXEC);
    if (bfd < 0)
        throw Fail(err("open backing"));
    const std::string backing = read_fd_all(bfd);
    ::close(bfd);
    if (backing != want)
        throw Fail("the backing does not hold the expected bytes: " + diff(backing, want, old));
    if (got == want)
        return {};
    return "stale read after the backing changed: " + diff(got, want, old);
}

void require_daemon() {
    test::require_fuse();
    if (const char* s = std::getenv("OVERCACHE_TEST_STANDIN"); s && *s) {
        std::fprintf(stderr, "stale-read tests need the daemon; skipping under the stand-in\n");
        std::exit(77);
    }
}

test::MountOptions opts(const std::string& extra = {}) {
    return test::MountOptions{.options = "cache_size=64M,sequential_cutoff=0" +
                                         (extra.empty() ? "" : "," + extra),
                              .twin = false};
}

// All four variants of one operation, each on its own file of one mount.
void check_op(Op op) {
    require_daemon();
    test::Mount m(opts());
    if (op == Op::setxattr && !backing_takes_user_xattrs(m)) {
        MESSAGE("the backing filesystem rejects user xattrs: setxattr case skipped");
        return;
    }
    unsigned seed = 100 + static_cast<unsigned>(op) * 10;
    for (const bool held : {false, true}) {
        for (const bool keep_mtime : {false, true}) {
            seed += 2;
            const std::string variant =
                std::string(name_of(op)) + (held ? ", fd held open across it" : ", no fd held") +
                (keep_mtime ? ", backing mtime restored (only ctime differs)"
                            : ", backing mtime new");
            try {
                const std::string what = run_case(m, op, held, keep_mtime, seed);
                CHECK_MESSAGE(what.empty(), variant << ": " << what);
            } catch (const Fail& e) {
                FAIL_CHECK(variant << ": " << e.what());
            }
        }
    }
}

} // namespace

TEST_SUITE("mount") {
    // Each case below: a 1 MiB file is cached (read twice, the second read
    // hits), its bytes are replaced on the backing behind the mount (same
    // size), the named operation is done through the mount, and a re-open
    // and uncached read through the mount must give the backing's new bytes.
    // Four variants each: fd held open across the change and the operation
    // or not; backing mtime new, or restored so only ctime differs.

    // Baseline: nothing done through the mount between the backing change
    // and the re-open; close-to-open alone must catch the change. If this
    // fails, the failures below are not about the operations.
    TEST_CASE("no stale read: re-open after a backing change (baseline)" *
              doctest::timeout(120)) {
        check_op(Op::none);
    }
    // chmod through the mount (setattr mode).
    TEST_CASE("no stale read: chmod after a backing change" * doctest::timeout(120)) {
        check_op(Op::chmod);
    }
    // utimensat(NULL) through the mount (setattr atime+mtime now).
    TEST_CASE("no stale read: touch after a backing change" * doctest::timeout(120)) {
        check_op(Op::touch);
    }
    // setxattr user.test through the mount (skipped if the backing refuses).
    TEST_CASE("no stale read: setxattr after a backing change" * doctest::timeout(120)) {
        check_op(Op::setxattr);
    }
    // 11 bytes written at 1 MiB - 100 (through the held fd when there is one):
    // every other byte must be the backing's new one.
    TEST_CASE("no stale read: a write elsewhere after a backing change" * doctest::timeout(120)) {
        check_op(Op::write_elsewhere);
    }
    // truncate(2) to the size the file already has (setattr size).
    TEST_CASE("no stale read: truncate to the same size after a backing change" *
              doctest::timeout(120)) {
        check_op(Op::truncate_same);
    }
    // chown to the owner and group the file already has (setattr uid/gid).
    TEST_CASE("no stale read: chown to the same owner after a backing change" *
              doctest::timeout(120)) {
        check_op(Op::chown_same);
    }
    // link to a second name and unlink that name (nlink 1 -> 2 -> 1).
    TEST_CASE("no stale read: link and unlink after a backing change" * doctest::timeout(120)) {
        check_op(Op::link_unlink);
    }

    // Long-lived reader: a 2 MiB file (eight fill chunks), its first 512 KiB
    // cached through the one fd that stays open; the backing changes (new
    // mtime); fstat through the fd (attr_timeout=0, so the kernel asks the
    // daemon: getattr); then the same fd reads the whole file, page cache
    // dropped. Entirely old bytes (no open happened since, so close-to-open
    // allows them) or entirely new bytes pass; a mix of both fails.
    TEST_CASE("long-lived reader: never a mix of old and new bytes" * doctest::timeout(120)) {
        require_daemon();
        test::Mount m(opts("attr_timeout=0"));
        const std::size_t size = 2 * MiB, cached = 512 * KiB;
        REQUIRE(stat_of(m, "fill_size") < cached);
        const std::string old = random_bytes(size, 7), now = random_bytes(size, 8);
        write_in_place(m.backing("f"), old);
        const int fd = ::open(m.mnt("f").c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
        auto read_head = [&] {
            ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            std::string buf(cached, '\0');
            const ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
            REQUIRE(n == static_cast<ssize_t>(cached));
            CHECK(buf == old.substr(0, cached));
        };
        read_head();
        wait_fills(m);
        const auto hits = stat_of(m, "cache_hits");
        read_head();
        REQUIRE_MESSAGE(stat_of(m, "cache_hits") > hits, "precondition: the head is cached");

        change_behind(m.backing("f"), now, false);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        std::string got;
        try {
            got = read_fd_all(fd);
        } catch (const Fail& e) {
            FAIL_CHECK(e.what());
        }
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        ::close(fd);
        const bool all_old = got == old, all_new = got == now;
        CHECK_MESSAGE((all_old || all_new),
                      "the held fd read a mix: against the new bytes " << diff(got, now, old));
        if (all_old)
            MESSAGE("long-lived reader got the old bytes throughout (allowed)");
    }
}
