// The crash test: kill -9 of the daemon at random moments never loses a byte
// that was fsynced (or written through an O_SYNC/O_DSYNC open), and never
// serves a byte nobody wrote. Written for cache_mode=writeback (dirty data
// lives only in the cache until written back) and run in every mode that
// cache_modes.hpp chooses, writethrough until writeback lands.
//
// Eight files, two for each of four writer threads. Each round the writers
// open their files with random flags (plain, O_APPEND, O_SYNC, O_DSYNC,
// O_DIRECT) and write random bytes at random offsets — overwrites, appends,
// writes past EOF (holes) — with fsync, fdatasync and read-backs between.
// Each keeps a model of its files:
//  - `durable`: the image as of the last successful fsync or fdatasync, plus
//    the ranges of successful O_SYNC/O_DSYNC writes since;
//  - `unsynced`: every write issued since that sync, whether it returned or
//    was cut off by the kill (each may have landed whole, in part or not);
//  - `current`: what the mount must show while its daemon lives (successful
//    read-backs must match it exactly).
// Once the writers have completed a random number of operations the daemon is
// killed with SIGKILL, with writes in flight; the writers' calls then fail
// and they stop. The same backing and cache are mounted again and every file
// is read through the mount:
//  - its size is at least the durable size and at most the largest end any
//    write reached;
//  - every byte equals the durable byte (0 past the durable size: a hole) or
//    the byte one of the unsynced writes put at that offset — so every synced
//    byte reads back exactly, unless a later write may have replaced it.
// What was read becomes the next round's durable image (a byte the mount
// served must not change without a write). The last round stops the writers
// instead, fsyncs every file, checks the mount shows exactly the model,
// flushes, and checks that the backing directory holds the same bytes.
// The cache is small (cache_modes.hpp) so that GC reclaims buckets during
// the rounds; the test checks that it did, and that the daemon never
// rejected cached data (cache_read_errors: the index pointing at reused
// space).
//
// Knobs: OVERCACHE_RANDOM_SEED (printed; reproduces the choices of each
// thread, not the interleaving or the moment of the kill),
// OVERCACHE_CRASH_ROUNDS (kill -9 rounds, at most; default 25),
// OVERCACHE_CRASH_SECONDS (past this many seconds no new kill -9 round
// starts once 8 have run, so a slow machine keeps the suite's time; default
// 90),
// OVERCACHE_TEST_CACHE_MODE (cache_modes.hpp).
#include "file_bytes.hpp"
#include "cache_modes.hpp"
#include "fuse_mount.hpp"
#include "twin.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache::test;

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;
constexpr int kWriters = 4;
constexpr int kFilesPerWriter = 2;
// Files grow to about this size; writes start below it.
constexpr std::uint64_t kMaxSize = 3 * MiB;
// How long any wait of the main thread may take before the test fails.
constexpr auto kDeadline = std::chrono::seconds(120);

std::uint64_t env_or(const char* name, std::uint64_t dflt) {
    const char* s = std::getenv(name);
    return s && *s ? std::strtoull(s, nullptr, 0) : dflt;
}

struct Write {
    std::uint64_t off = 0;
    std::string data;
    std::uint64_t end() const { return off + data.size(); }
};

// One file's model; owned by one writer thread during a round and by the
// main thread between rounds.
struct FileModel {
    std::string name;
    std::string durable;         // bytes and size guaranteed to survive a crash
    std::string current;         // what the mount shows while the daemon lives
    std::vector<Write> unsynced; // writes issued since the last fsync
    std::uint64_t max_end = 0;   // the largest size the file may have after a crash

    void synced() {
        durable = current;
        unsynced.clear();
        max_end = current.size();
    }
    // A successful write of data[0, n) at `off`: the mount shows it now; an
    // O_SYNC/O_DSYNC open also makes it durable.
    void landed(std::uint64_t off, const char* data, std::size_t n, bool sync) {
        auto put = [&](std::string& img) {
            if (img.size() < off + n)
                img.resize(off + n, '\0');
            std::memcpy(img.data() + off, data, n);
        };
        put(current);
        if (sync)
            put(durable);
    }
    // After a remount, what the mount served is the new starting point.
    void restart_from(std::string seen) {
        current = std::move(seen);
        synced();
    }
};

// "" when `got` (the file's bytes read after a crash) is a state the model
// allows; else the first thing wrong with it.
std::string check_after_crash(const FileModel& f, const std::string& got) {
    std::ostringstream os;
    if (got.size() < f.durable.size()) {
        os << f.name << ": size " << got.size() << " is below the synced size " << f.durable.size();
        return os.str();
    }
    if (got.size() > f.max_end) {
        os << f.name << ": size " << got.size() << " is past the end of every write (" << f.max_end
           << ")";
        return os.str();
    }
    const std::size_t dsize = f.durable.size();
    constexpr std::size_t kBlock = 4096;
    for (std::size_t blk = 0; blk < got.size(); blk += kBlock) {
        const std::size_t n = std::min(kBlock, got.size() - blk);
        if (blk + n <= dsize && std::memcmp(got.data() + blk, f.durable.data() + blk, n) == 0)
            continue;
        for (std::size_t o = blk; o < blk + n; ++o) {
            const char base = o < dsize ? f.durable[o] : '\0';
            if (got[o] == base)
                continue;
            std::size_t covering = 0;
            bool allowed = false;
            for (const Write& w : f.unsynced) {
                if (o < w.off || o >= w.end())
                    continue;
                ++covering;
                if (w.data[o - w.off] == got[o]) {
                    allowed = true;
                    break;
                }
            }
            if (allowed)
                continue;
            os << f.name << ": byte " << o << " reads 0x" << std::hex
               << (static_cast<unsigned>(got[o]) & 0xff) << ", the "
               << (o < dsize ? "synced" : "hole's") << " byte is 0x"
               << (static_cast<unsigned>(base) & 0xff) << std::dec << ", and none of the "
               << covering << " unsynced writes covering it put that value there"
               << (covering == 0 && o < dsize ? " (a synced byte lost)" : "") << " (size "
               << got.size() << ", synced size " << dsize << ", " << f.unsynced.size()
               << " unsynced writes)";
            return os.str();
        }
    }
    return "";
}

// "" when `got` is exactly `want`; else where they first differ.
std::string diff_bytes(const std::string& what, const std::string& got, const std::string& want) {
    if (got == want)
        return "";
    std::size_t at = 0;
    while (at < got.size() && at < want.size() && got[at] == want[at])
        ++at;
    std::ostringstream os;
    os << what << ": " << got.size() << " bytes, expected " << want.size()
       << "; first difference at byte " << at;
    return os.str();
}

// What the writers of one round share with the main thread.
struct Round {
    // The mount's root, opened for this round: opens go through it, so once
    // the daemon is gone they fail instead of reaching the directory under
    // the mountpoint.
    int root_fd = -1;
    std::atomic<bool> killing{false}; // errors from now on are the kill's
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::condition_variable cv;
    std::uint64_t ops_done = 0; // guarded by mu
};

struct WriterStats {
    std::uint64_t ops = 0, writes = 0, syncs = 0, sync_writes = 0, reads = 0, bytes = 0;
};

class Writer {
public:
    Writer(std::vector<FileModel*> files, std::uint64_t seed)
        : files_(std::move(files)), rng_(seed), fds_(files_.size(), -1), flags_(files_.size(), 0) {}

    // One round: operations until the round stops or the daemon is gone.
    void run(Round& r);
    // The first thing that went wrong (other than the kill), or "".
    const std::string& problem() const { return problem_; }
    const WriterStats& stats() const { return stats_; }

private:
    std::size_t uniform(std::size_t n) {
        return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
    }
    bool chance(unsigned percent) { return uniform(100) < percent; }
    // false: the round is over for this writer (the error is recorded when
    // it was not the kill's).
    bool failed(const Round& r, const std::string& what, int err) {
        if (!r.killing.load() && problem_.empty())
            problem_ = what + ": " + std::strerror(err);
        return false;
    }
    bool reopen(Round& r, std::size_t i);
    bool write(Round& r, std::size_t i);
    bool sync(Round& r, std::size_t i);
    bool read_back(Round& r, std::size_t i);
    void close_all();

    std::vector<FileModel*> files_;
    std::mt19937_64 rng_;
    std::vector<int> fds_;
    std::vector<int> flags_;
    std::string problem_;
    WriterStats stats_;
};

std::string flag_names(int flags) {
    std::string s;
    if (flags & O_APPEND)
        s += "|O_APPEND";
    if ((flags & O_SYNC) == O_SYNC)
        s += "|O_SYNC";
    else if (flags & O_DSYNC)
        s += "|O_DSYNC";
    if (flags & O_DIRECT)
        s += "|O_DIRECT";
    return s.empty() ? "" : s.substr(1);
}

bool Writer::reopen(Round& r, std::size_t i) {
    if (fds_[i] >= 0)
        ::close(fds_[i]); // a close is no sync: its result promises nothing
    fds_[i] = -1;
    static constexpr int kFlags[] = {0, 0, O_APPEND, O_SYNC, O_DSYNC, O_DIRECT, O_APPEND | O_DSYNC};
    const int flags = kFlags[uniform(std::size(kFlags))];
    const int fd = ::openat(r.root_fd, files_[i]->name.c_str(), O_RDWR | O_CLOEXEC | flags);
    if (fd < 0)
        return failed(r, "open " + files_[i]->name + " " + flag_names(flags), errno);
    fds_[i] = fd;
    flags_[i] = flags;
    return true;
}

bool Writer::write(Round& r, std::size_t i) {
    FileModel& f = *files_[i];
    const std::uint64_t size = f.current.size();
    std::size_t len = 0;
    switch (uniform(20)) {
    case 0:
        len = 256 * KiB + uniform(1 * MiB); // more than one FUSE request
        break;
    case 1:
    case 2:
    case 3:
        len = 1 + uniform(256 * KiB);
        break;
    default:
        len = 1 + uniform(16 * KiB);
    }
    std::uint64_t off = 0;
    switch (uniform(10)) {
    case 0:
    case 1:
        off = size; // append at the current end
        break;
    case 2:
    case 3:
        off = size + 1 + uniform(256 * KiB); // past EOF: a hole before it
        break;
    case 4:
        off = uniform(kMaxSize);
        break;
    default:
        off = size == 0 ? 0 : uniform(size); // overwrite
    }
    if (off + len > kMaxSize + 2 * MiB)
        off = size == 0 ? 0 : uniform(size);
    const bool append = (flags_[i] & O_APPEND) != 0;
    if (append)
        off = size; // where the kernel puts it: the mount's size is the model's
    const bool sync = (flags_[i] & O_DSYNC) != 0; // O_SYNC includes O_DSYNC
    // Recorded before the call: a write cut off by the kill may land anyway.
    f.unsynced.push_back(Write{off, random_bytes(rng_, len)});
    f.max_end = std::max<std::uint64_t>(f.max_end, off + len);
    const std::string& data = f.unsynced.back().data;
    std::size_t done = 0;
    while (done < len) {
        const ssize_t n = append ? ::write(fds_[i], data.data() + done, len - done)
                                 : ::pwrite(fds_[i], data.data() + done, len - done,
                                            static_cast<off_t>(off + done));
        if (n <= 0) {
            std::ostringstream os;
            os << (append ? "write" : "pwrite") << " " << f.name << " [" << off + done << ", +"
               << len - done << ") " << flag_names(flags_[i]);
            return failed(r, os.str(), n == 0 ? EIO : errno);
        }
        if (append && done == 0) {
            const off_t pos = ::lseek(fds_[i], 0, SEEK_CUR);
            if (pos >= 0 &&
                static_cast<std::uint64_t>(pos) != off + static_cast<std::uint64_t>(n)) {
                std::ostringstream os;
                os << "O_APPEND write to " << f.name << " of " << n << " bytes ended at " << pos
                   << ", the file's size was " << off;
                if (problem_.empty())
                    problem_ = os.str();
                return false;
            }
        }
        f.landed(off + done, data.data() + done, static_cast<std::size_t>(n), sync);
        done += static_cast<std::size_t>(n);
    }
    ++stats_.writes;
    stats_.sync_writes += sync ? 1 : 0;
    stats_.bytes += len;
    return true;
}

bool Writer::sync(Round& r, std::size_t i) {
    const bool data_only = chance(50);
    if ((data_only ? ::fdatasync(fds_[i]) : ::fsync(fds_[i])) != 0)
        return failed(r, (data_only ? "fdatasync " : "fsync ") + files_[i]->name, errno);
    files_[i]->synced();
    ++stats_.syncs;
    return true;
}

bool Writer::read_back(Round& r, std::size_t i) {
    const FileModel& f = *files_[i];
    if (f.current.empty())
        return true;
    const std::uint64_t off = uniform(f.current.size());
    const std::size_t len =
        std::min<std::size_t>(f.current.size() - off, 1 + uniform(chance(20) ? MiB : 64 * KiB));
    std::string buf(len, '\0');
    std::size_t got = 0;
    while (got < len) {
        const ssize_t n =
            ::pread(fds_[i], buf.data() + got, len - got, static_cast<off_t>(off + got));
        if (n < 0)
            return failed(r, "pread " + f.name, errno);
        if (n == 0)
            break;
        got += static_cast<std::size_t>(n);
    }
    // A read the daemon answered is right, whenever it was answered.
    const std::string bad = diff_bytes("read-back of " + f.name + " [" + std::to_string(off) +
                                           ", +" + std::to_string(len) + ")",
                                       buf.substr(0, got), f.current.substr(off, got));
    if (!bad.empty()) {
        if (problem_.empty())
            problem_ = bad;
        return false;
    }
    if (got < len)
        return failed(r, "short read of " + f.name + " at " + std::to_string(off + got), EIO);
    ++stats_.reads;
    return true;
}

void Writer::close_all() {
    for (int& fd : fds_) {
        if (fd >= 0)
            ::close(fd);
        fd = -1;
    }
}

void Writer::run(Round& r) {
    while (!r.stop.load()) {
        const std::size_t i = uniform(files_.size());
        bool ok = true;
        if (fds_[i] < 0 || chance(5))
            ok = reopen(r, i);
        if (ok) {
            const std::size_t what = uniform(100);
            if (what < 70)
                ok = write(r, i);
            else if (what < 85)
                ok = sync(r, i);
            else
                ok = read_back(r, i);
        }
        if (!ok)
            break;
        ++stats_.ops;
        {
            std::lock_guard lk(r.mu);
            ++r.ops_done;
        }
        r.cv.notify_all();
    }
    close_all();
}

// Reads the file `path` whole; "" and `out` filled, or the error.
std::string read_file(const std::string& path, std::string& out) {
    try {
        out = read_all(path);
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

// Fsyncs the file or directory `path`; "" or the error.
std::string fsync_path(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return "open " + path + ": " + std::strerror(errno);
    std::string err;
    if (::fsync(fd) != 0)
        err = "fsync " + path + ": " + std::strerror(errno);
    if (::close(fd) != 0 && err.empty())
        err = "close " + path + ": " + std::strerror(errno);
    return err;
}

void run_crash_test(const std::string& mode) {
    if (!cache_mode_chosen(mode)) {
        MESSAGE("cache_mode=" << mode << " not chosen (OVERCACHE_TEST_CACHE_MODE); skipped");
        return;
    }
    require_daemon();
    const std::uint64_t seed = env_or("OVERCACHE_RANDOM_SEED", std::random_device{}());
    const unsigned max_rounds = static_cast<unsigned>(env_or("OVERCACHE_CRASH_ROUNDS", 25));
    const auto budget = std::chrono::seconds(env_or("OVERCACHE_CRASH_SECONDS", 90));
    constexpr unsigned kMinRounds = 8;
    unsigned rounds = max_rounds;
    INFO("cache_mode=" << mode << " OVERCACHE_RANDOM_SEED=" << seed
                       << " OVERCACHE_CRASH_ROUNDS=" << max_rounds);
    MESSAGE("cache_mode=" << mode << " OVERCACHE_RANDOM_SEED=" << seed
                          << " OVERCACHE_CRASH_ROUNDS=" << max_rounds);
    const auto t0 = Clock::now();
    Mount m(MountOptions{.options = small_cache_options(mode), .twin = false});

    // The files exist, durably, before the first round: creating them is not
    // what this test is about.
    std::vector<FileModel> files(kWriters * kFilesPerWriter);
    for (std::size_t i = 0; i < files.size(); ++i) {
        files[i].name = "f" + std::to_string(i);
        write_all(m.mnt(files[i].name), "");
        REQUIRE(fsync_path(m.mnt(files[i].name)) == "");
    }
    REQUIRE(fsync_path(m.mountpoint()) == "");

    std::vector<Writer> writers;
    for (int w = 0; w < kWriters; ++w) {
        std::vector<FileModel*> own;
        for (int k = 0; k < kFilesPerWriter; ++k)
            own.push_back(&files[static_cast<std::size_t>(w * kFilesPerWriter + k)]);
        writers.emplace_back(std::move(own), seed * 1000003 + static_cast<std::uint64_t>(w));
    }
    std::mt19937_64 rng(seed);
    WriterStats total;
    std::uint64_t reclaimed = 0;

    // Rounds 0 .. rounds-1 end with kill -9; round `rounds` with a stop,
    // fsync, flush.
    for (unsigned round = 0; round <= rounds; ++round) {
        if (round >= kMinRounds && round < rounds && Clock::now() - t0 > budget)
            rounds = round; // out of time: this round is the last
        const bool last = round == rounds;
        const std::string round_name =
            "round " + std::to_string(round) + (last ? " (stop, fsync, flush)" : " (kill -9)");
        INFO(round_name);
        if (round > 0)
            m.remount();
        Round r;
        r.root_fd = ::open(m.mountpoint().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
        REQUIRE(r.root_fd >= 0);
        // The kill comes after this many completed operations (of all
        // writers), a moment that lands anywhere in their work.
        const std::uint64_t target = 30 + rng() % 400;
        std::vector<std::thread> threads;
        for (auto& w : writers)
            threads.emplace_back([&r, &w] { w.run(r); });
        bool reached = false;
        {
            std::unique_lock lk(r.mu);
            reached =
                r.cv.wait_until(lk, Clock::now() + kDeadline, [&] { return r.ops_done >= target; });
        }
        // Counters from the daemon about to be killed.
        const auto s = m.stats();
        auto num = [&](const char* k) {
            auto it = s.find(k);
            return it == s.end() ? std::uint64_t{0} : std::stoull(it->second);
        };
        reclaimed += num("gc_buckets_reclaimed");
        CHECK_MESSAGE(
            num("cache_read_errors") == 0,
            "the daemon rejected cached data (checksum or I/O): " << num("cache_read_errors"));
        if (!last) {
            r.killing = true;
            m.kill9();
        }
        r.stop = true;
        for (auto& t : threads)
            t.join();
        ::close(r.root_fd);
        r.root_fd = -1;
        CHECK_MESSAGE(reached, "the writers did not complete " << target << " operations in "
                                                               << kDeadline.count() << " s");
        bool writers_ok = true;
        for (std::size_t w = 0; w < writers.size(); ++w) {
            if (!writers[w].problem().empty()) {
                writers_ok = false;
                FAIL_CHECK("writer " << w << ": " << writers[w].problem());
            }
        }
        REQUIRE(writers_ok);
        if (last)
            break;

        // Mount again after the kill; every file must be in a state the
        // model allows.
        m.remount();
        bool all_ok = true;
        for (auto& f : files) {
            std::string got;
            const std::string err = read_file(m.mnt(f.name), got);
            CHECK_MESSAGE(err == "", err);
            if (!err.empty()) {
                all_ok = false;
                continue;
            }
            struct stat st {};
            REQUIRE(::stat(m.mnt(f.name).c_str(), &st) == 0);
            CHECK_MESSAGE(static_cast<std::uint64_t>(st.st_size) == got.size(),
                          f.name << ": stat says " << st.st_size << " bytes, read " << got.size());
            const std::string bad = check_after_crash(f, got);
            CHECK_MESSAGE(bad == "", bad);
            all_ok = all_ok && bad.empty();
            f.restart_from(std::move(got));
        }
        REQUIRE_MESSAGE(all_ok, "round " << round << " lost synced bytes or served wrong ones");
    }
    for (const auto& w : writers) {
        const WriterStats& ws = w.stats();
        total.ops += ws.ops;
        total.writes += ws.writes;
        total.syncs += ws.syncs;
        total.sync_writes += ws.sync_writes;
        total.reads += ws.reads;
        total.bytes += ws.bytes;
    }

    // The end: every file synced, the mount shows exactly the model, and
    // after a flush so does the backing.
    for (auto& f : files) {
        REQUIRE(fsync_path(m.mnt(f.name)) == "");
        f.synced();
        std::string got;
        REQUIRE(read_file(m.mnt(f.name), got) == "");
        CHECK_MESSAGE(diff_bytes("the mount's " + f.name, got, f.current) == "",
                      diff_bytes("the mount's " + f.name, got, f.current));
    }
    flush_to_backing(m, mode);
    for (auto& f : files) {
        std::string got;
        REQUIRE(read_file(m.backing(f.name), got) == "");
        const std::string bad = diff_bytes("the backing's " + f.name, got, f.current);
        CHECK_MESSAGE(bad == "", bad);
    }
    // The test did what it claims: writes, syncs, and GC under them.
    CHECK(total.syncs > 0);
    CHECK(total.sync_writes > 0);
    CHECK_MESSAGE(reclaimed > 0, "GC reclaimed no bucket: the cache is not small enough");
    const auto secs =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count() / 1000.0;
    MESSAGE("cache_mode=" << mode << ": " << rounds << " kill -9 rounds + 1 clean, " << total.ops
                          << " ops, " << total.writes << " writes (" << total.bytes / MiB
                          << " MiB, " << total.sync_writes << " O_SYNC/O_DSYNC), " << total.syncs
                          << " fsync/fdatasync, " << total.reads << " read-backs, GC reclaimed "
                          << reclaimed << " buckets, " << secs << " s");
}

} // namespace

TEST_SUITE("mount") {
    TEST_CASE("crash: kill -9 keeps every fsynced byte [writethrough]" * doctest::timeout(300)) {
        run_crash_test("writethrough");
    }
    TEST_CASE("crash: kill -9 keeps every fsynced byte [writeback]" * doctest::timeout(300)) {
        run_crash_test("writeback");
    }
}
