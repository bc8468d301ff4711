// DOC: writeback. A pass (about once a second, or when kicked) walks the
// dirty files oldest first. A file is written back when its dirty data has
// aged writeback_delay, or at once when dirty data holds more than
// writeback_percent of the cache, when a flush asks for it, or when the mount
// is not in writeback mode (dirty data left by an earlier mount goes first).
// Below the target the pass spends at most writeback_rate_minimum bytes a
// second; above it what the rate controller allows; for a flush, or while
// writes are parked for want of room, as much as the backing takes.
//
// One batch of one file (at most kBatchBytes in kBatchRuns runs of
// neighbours), under the file's backing_mu:
//  1. under the owner lock: the dirty extents from where the last batch
//     stopped, the record, write_seq; the record gets kFileWritingBack,
//     committed with a synced WAL before any byte goes out, so a crash in
//     the middle is known for our own copy at the next open;
//  2. the extents are read from the cache device (checksums verified) and
//     written to the backing in runs of neighbours (up to kRunBytes each);
//     the last batch also sets the backing's size and mtime to the cache's;
//     each run's writeout starts as soon as it is written (sync_file_range),
//     so the backing's disk works while the next run is read;
//  3. fdatasync of the backing file;
//  4. under the owner lock: each extent still exactly as read is staged
//     clean (one replaced meanwhile stays dirty: the newer bytes go in a
//     later batch), the record takes the backing's new attributes and loses
//     kFileWritingBack, and, when nothing dirty is left and nothing was
//     written meanwhile, kFileAhead; one batch, synced.
// Errors leave the data dirty; the file is retried with backoff (1 s
// doubling to 5 min), counted, and logged at most once a minute.
#include "cache/backing_lock.hpp"
#include "cache/writeback.hpp"

#include "backing/file_ops.hpp"
#include "cache/conflict_copy.hpp"
#include "util/file_io.hpp"
#include "util/log.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <future>
#include <sys/stat.h>
#include <vector>

namespace overcache::cache {
namespace {

// Each batch ends in an fdatasync of the backing file, during which the
// backing's disk drains and then waits for the next batch: 64 MiB (half a
// second of a disk's sequential writing) keeps those pauses small.
constexpr std::uint64_t kBatchBytes = 64u << 20;
// Separate backing writes a batch may make: scattered small extents cost a
// seek each, and a batch holds backing_mu (which opens and changes of the
// file wait for) until it is done: 64 seeks is well under a second on a disk.
constexpr std::size_t kBatchRuns = 64;
constexpr std::uint64_t kRunBytes = 4u << 20;
constexpr auto kPassInterval = std::chrono::seconds(1);
constexpr auto kMaxBackoff = std::chrono::seconds(300);
// Rounds over one file a whole-file writeback makes before it gives up on
// extents that GC keeps moving under it (one is already rare).
constexpr int kWholeRounds = 8;

std::pair<std::uint64_t, std::uint64_t> id(const meta::FileKey& k) { return {k.fsid, k.ino}; }

// The file is not (or no longer) where the record says: its dirty data
// has nowhere to go.
bool is_gone(const Error& e) {
    return e.code == Errc::Sys && (e.sys_errno == ENOENT || e.sys_errno == ESTALE);
}

// Reopens a backing file from a stored handle (handle_type be32, bytes).
UniqueFd open_by_handle(int root, const std::string& h, int flags) {
    if (h.size() < 4 || h.size() - 4 > MAX_HANDLE_SZ)
        return {};
    alignas(struct file_handle) unsigned char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
    auto* fh = reinterpret_cast<struct file_handle*>(buf);
    fh->handle_type = static_cast<int>(meta::get_be32(h.data()));
    fh->handle_bytes = static_cast<unsigned>(h.size() - 4);
    std::memcpy(buf + sizeof(struct file_handle), h.data() + 4, h.size() - 4);
    return UniqueFd(::open_by_handle_at(root, fh, flags));
}

} // namespace

Writeback::Writeback(CacheCore& core, bg::Strand strand)
    : core_(core), strand_(std::move(strand)), timer_(strand_) {
    // Not O_PATH: open_by_handle_at refuses an O_PATH mount fd (EBADF).
    root_ = UniqueFd(::open(core_.p.backing_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root_ && !core_.p.backing_root.empty())
        log::warn("cache: cannot open the backing root ", core_.p.backing_root,
                  " for writeback: ", std::strerror(errno));
}

Writeback::~Writeback() = default;

void Writeback::start() {
    boost::asio::post(strand_, [this] {
        if (stopped_)
            return;
        if (const auto n = core_.dirty.size(); n > 0)
            log::info("cache: ", n, " files hold dirty data; writing them back");
        pass();
        schedule();
    });
}

void Writeback::schedule() {
    timer_.expires_after(kPassInterval);
    timer_.async_wait([this](boost::system::error_code ec) {
        if (ec || stopped_)
            return;
        pass();
        schedule();
    });
}

void Writeback::kick() {
    if (kicked_.exchange(true))
        return; // a pass is queued already
    boost::asio::post(strand_, [this] {
        kicked_.store(false);
        if (!stopped_)
            pass();
    });
}

void Writeback::flush(Done<void> done) {
    boost::asio::post(strand_, [this, done = std::move(done)]() mutable {
        if (stopped_)
            return done(fail(Errc::Sys, "the mount is stopping"));
        Flush f;
        for (auto& [key, v] : core_.dirty.oldest_first())
            f.files.push_back(key);
        f.done = std::move(done);
        flushes_.push_back(std::move(f));
        pass();
    });
}

void Writeback::pass_now() {
    std::promise<void> done;
    boost::asio::post(strand_, [this, &done] {
        if (!stopped_)
            pass();
        done.set_value();
    });
    done.get_future().wait();
}

void Writeback::stop() {
    stopping_.store(true);
    std::promise<void> stopped;
    boost::asio::post(strand_, [this, &stopped] {
        stopped_ = true;
        timer_.cancel();
        for (auto& f : flushes_)
            f.done(fail(Errc::Sys, "the mount is stopping"));
        flushes_.clear();
        stopped.set_value();
    });
    stopped.get_future().wait();
}

WritebackStats Writeback::stats() const {
    std::lock_guard lk(stats_mu_);
    return stats_;
}

void Writeback::note_error(const std::string& what) {
    std::lock_guard lk(stats_mu_);
    ++stats_.errors;
    stats_.last_error = what;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_log_ < std::chrono::minutes(1)) {
        ++unlogged_errors_;
        return;
    }
    last_log_ = now;
    if (unlogged_errors_ > 0)
        log::warn("writeback: ", what, " (and ", unlogged_errors_,
                  " more errors in the last minute); the data stays dirty and is retried");
    else
        log::warn("writeback: ", what, "; the data stays dirty and is retried");
    unlogged_errors_ = 0;
}

void Writeback::pass() {
    const auto now = std::chrono::steady_clock::now();
    const std::int64_t wall = now_ns();
    const std::uint64_t capacity =
        std::uint64_t{core_.alloc.bucket_count()} * core_.alloc.bucket_size();
    const std::uint64_t dirty = core_.alloc.dirty_bytes();
    // Writes parked for want of room: the foreground waits for what this
    // pass frees, so it writes back as fast as the backing takes.
    const bool room_wanted =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() <
        core_.room_wanted_until_ns.load();
    const bool over =
        room_wanted || dirty > bg::dirty_target_bytes(capacity, core_.p.writeback_percent);
    // Dirty data under another mode is written back regardless of settings.
    const bool wb_mode = core_.p.mode == config::CacheMode::writeback;
    // The controller sets the rate from how far dirty data is above its
    // target (and how fast it grows); a pass may spend what that rate
    // allows for the time since the last one (at most two intervals).
    const auto elapsed = std::min<std::chrono::nanoseconds>(
        last_pass_.time_since_epoch().count() == 0 ? kPassInterval : now - last_pass_,
        2 * std::chrono::nanoseconds(kPassInterval));
    last_pass_ = now;
    const std::uint64_t rate = rate_.update(
        bg::RateInputs{dirty, capacity, core_.p.writeback_percent, core_.p.writeback_rate_minimum},
        elapsed);
    // Over the target a pass (kicked by writes) may spend a whole second's
    // worth: writeback then runs at least at the rate, never below it.
    const double secs = std::max(std::chrono::duration<double>(elapsed).count(), over ? 1.0 : 0.1);
    const std::uint64_t budget =
        (!wb_mode || room_wanted || rate == bg::kUnlimitedRate ||
         static_cast<double>(rate) * secs >= static_cast<double>(UINT64_MAX / 2))
            ? UINT64_MAX
            : static_cast<std::uint64_t>(static_cast<double>(rate) * secs);
    const auto delay_ns = static_cast<std::int64_t>(core_.p.writeback_delay_s * 1e9);
    {
        std::lock_guard lk(stats_mu_);
        stats_.rate = wb_mode ? rate : bg::kUnlimitedRate;
        stats_.target = rate_.stats().target_bytes;
    }

    // Files a flush waits for: whole, whatever the settings.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> forced;
    for (const auto& f : flushes_)
        for (const auto& k : f.files)
            forced.push_back(id(k));
    std::sort(forced.begin(), forced.end());
    std::map<std::pair<std::uint64_t, std::uint64_t>, Error> failed;

    std::uint64_t spent = 0;
    for (const auto& [key, v] : core_.dirty.oldest_first()) {
        if (stopping_.load())
            break;
        const bool force = std::binary_search(forced.begin(), forced.end(), id(key));
        if (!force) {
            // A per-path mode decides for its file: writeback_delay and
            // writeback_running hold a writeback file back; dirty data of
            // a file under any other mode goes at once (never orphaned).
            const bool file_wb = core_.file_mode(key) == config::CacheMode::writeback;
            if (!(core_.p.writeback_running || !file_wb) || spent >= budget)
                continue;
            if (!over && file_wb && v.since_ns + delay_ns > wall)
                continue;
            if (auto b = backoff_.find(id(key)); b != backoff_.end() && b->second.first > now)
                continue;
        }
        auto r = run_file(key, force ? UINT64_MAX : budget - std::min(budget, spent), spent);
        if (!r) {
            failed.emplace(id(key), r.error());
            auto& b = backoff_[id(key)];
            b.second = std::min<std::chrono::seconds>(
                kMaxBackoff, b.second.count() == 0 ? std::chrono::seconds(1) : b.second * 2);
            b.first = now + b.second;
        } else {
            backoff_.erase(id(key));
        }
    }
    core_.prune_file_modes();
    // Every flush queued before this pass has had each of its files tried.
    for (auto& f : flushes_) {
        Result<void> out;
        for (const auto& k : f.files)
            if (auto it = failed.find(id(k)); it != failed.end()) {
                out = fail(it->second);
                break;
            }
        if (out && stopping_.load())
            out = fail(Errc::Sys, "the mount is stopping");
        f.done(std::move(out));
    }
    flushes_.clear();
}

Result<void> Writeback::run_file(const meta::FileKey& key, std::uint64_t budget,
                                 std::uint64_t& spent) {
    StateRef ref = core_.files.acquire(key);
    return write_back(*ref, budget, spent, budget == UINT64_MAX);
}

Result<void> Writeback::write_back_file(FileState& st) {
    std::uint64_t spent = 0;
    return write_back(st, UINT64_MAX, spent, true);
}

Result<void> Writeback::write_back(FileState& st, std::uint64_t budget, std::uint64_t& spent,
                                   bool whole) {
    {
        std::lock_guard lk(st.mu);
        if (auto r = core_.records.load(st); !r)
            return r;
        if (!st.rec || (st.rec->flags & meta::kFileAhead) == 0)
            return {}; // clean since the list was read
    }
    auto fd = open_backing(st);
    if (!fd) {
        if (is_gone(fd.error())) {
            orphaned(st, "it is gone from the backing");
            return {};
        }
        note_error("cannot open " + (st.rec ? st.rec->path : std::string("a file")) + ": " +
                   to_string(fd.error()));
        return fail(fd.error());
    }
    // A round leaves dirty the extents it chose that were replaced or
    // moved before it could mark them clean. Replaced: newer bytes, written
    // after the round began. Moved by GC: the same bytes, which may not
    // have gone out (the batch may have read their old place after GC
    // reused it). Callers that need the whole file on the backing (flush,
    // fsync_to_backing, copy_file_range, a collapse) go round until one
    // round marked every extent it chose: whatever is dirty after that was
    // written after it began. Writers that keep replacing what a round
    // chose end it after kWholeRounds (what they replaced is theirs);
    // extents that keep moving with no writer are an error, never success.
    for (int round = 1;; ++round) {
        bool complete = true;
        const std::uint64_t seq = st.write_seq.load();
        if (auto r = write_back_round(st, fd->get(), budget, spent, complete); !r)
            return r;
        if (complete || !whole || stopping_.load())
            return {};
        std::string path;
        {
            std::lock_guard lk(st.mu);
            if (!st.rec || (st.rec->flags & meta::kFileAhead) == 0)
                return {};
            path = st.rec->path;
        }
        if (round == kWholeRounds) {
            if (st.write_seq.load() != seq)
                return {};
            const std::string what = "the dirty data of " + path + " kept moving in the "
                                     "cache while it was written back; it stays dirty";
            note_error(what);
            return fail_sys(EAGAIN, what);
        }
    }
}

Result<void> Writeback::write_back_round(FileState& st, int fd, std::uint64_t budget,
                                         std::uint64_t& spent, bool& complete) {
    std::uint64_t from = 0;
    std::uint64_t pass_seq = 0;
    for (;;) {
        std::uint64_t written = 0;
        bool more = false;
        auto r = batch(st, fd, from, std::min(budget, kBatchBytes), written, from, more, pass_seq,
                       complete);
        spent += written;
        if (!r)
            return r;
        if (!more)
            return {};
        if (stopping_.load()) {
            complete = false;
            return {};
        }
        if (budget != UINT64_MAX) {
            budget -= std::min(budget, written);
            if (budget == 0) {
                complete = false;
                return {};
            }
        }
    }
}

Result<UniqueFd> Writeback::open_backing(FileState& st) {
    meta::FileRecord rec;
    {
        std::lock_guard lk(st.mu);
        if (!st.rec)
            return fail_sys(ENOENT, "no record");
        if (st.wb_fd) {
            struct stat s {};
            if (::fstat(st.wb_fd.get(), &s) == 0 && s.st_nlink == 0 && !st.unlinked_here.load())
                return fail_sys(ENOENT, st.rec->path + " was deleted behind the mount");
            const int d = ::fcntl(st.wb_fd.get(), F_DUPFD_CLOEXEC, 0);
            if (d >= 0)
                return UniqueFd(d);
        }
        rec = *st.rec;
    }
    if (!root_)
        return fail_sys(EBADF, "the backing root is not open");
    constexpr int kFlags = O_WRONLY | O_CLOEXEC | O_NOCTTY;
    UniqueFd fd;
    // The file is gone only when its handle is stale (or there is none) and
    // its path is missing too, while the backing root itself answers: an
    // NFS server that calls everything stale for a while (a re-export) is
    // an error to retry, never a reason to give the data up.
    int handle_err = 0;
    int path_err = ENOENT;
    if (!rec.handle.empty()) {
        fd = open_by_handle(root_.get(), rec.handle, kFlags);
        if (!fd)
            handle_err = errno;
    }
    if (!fd && !rec.path.empty()) {
        fd = UniqueFd(::openat(root_.get(), rec.path.c_str(), kFlags | O_NOFOLLOW));
        if (!fd)
            path_err = errno;
    }
    if (!fd) {
        const bool handle_gone = rec.handle.empty() || handle_err == ESTALE || handle_err == ENOENT;
        const bool path_gone = rec.path.empty() || path_err == ENOENT;
        struct stat root {};
        if (handle_gone && path_gone) {
            if (::fstat(root_.get(), &root) != 0)
                return fail_errno("the backing root does not answer");
            return fail_sys(ESTALE, "reopening " + rec.path);
        }
        return fail_sys(handle_gone ? path_err : handle_err, "reopening " + rec.path);
    }
    // A path may name another file by now.
    struct stat s {};
    if (::fstat(fd.get(), &s) != 0)
        return fail_errno("reopening " + rec.path);
    const meta::FileKey k = core_.key_of(fd.get(), s);
    if (k.fsid != st.key.fsid || k.ino != st.key.ino)
        return fail_sys(ENOENT, rec.path + " is another file now");
    if (s.st_nlink == 0 && !st.unlinked_here.load())
        return fail_sys(ENOENT, rec.path + " was deleted behind the mount");
    return fd;
}

Result<void> Writeback::batch(FileState& st, int fd, std::uint64_t from, std::uint64_t max_bytes,
                              std::uint64_t& written, std::uint64_t& next_from, bool& more,
                              std::uint64_t& pass_seq, bool& complete) {
    if (hooks_before_batch)
        hooks_before_batch(st, from);
    // On writeback's own thread: as long as the backing takes. Written
    // back for a request (an fsync to the backing, an unlink of an open
    // file): while the backing answers.
    auto bl = lock_backing(st);
    if (!bl)
        return fail(std::move(bl).error());
    // A change of this file given up on at its deadline released
    // backing_mu but may still land: copied now, our bytes could end up
    // under it. Asked with backing_mu held, so any such change of this
    // file is already counted.
    // EIO, as the stalled backing gives the foreground.
    if (core_.backing_unsettled()) {
        const std::string what = "a backing call given up on at its deadline has not ended yet";
        note_error(what);
        return fail_sys(EIO, what);
    }
    std::vector<Piece> todo;
    meta::FileRecord rec;
    std::uint64_t seq = 0;
    more = false;
    auto now = backing::fstat_file(fd);
    if (!now)
        return fail(now.error());
    {
        std::lock_guard lk(st.mu);
        if (!st.rec || (st.rec->flags & meta::kFileAhead) == 0)
            return {};
        // Someone else may have written the file since the cache last
        // looked: then it is a conflict (ours saved aside), never a copy
        // over their bytes.
        if ((st.rec->flags & meta::kFileWritingBack) == 0 && !same_file(*st.rec, *now)) {
            auto changed = core_.records.revalidate(st, *now);
            if (!changed)
                return fail(changed.error());
            return {};
        }
        // The file's extents from `from` are read only until the batch is
        // full: a file of many small dirty extents (random writes) would
        // otherwise have all of them read again for every batch.
        std::uint64_t bytes = 0;
        std::size_t runs = 0;
        const auto take = [&](const Piece& p) {
            if ((p.v.flags & meta::kExtentDirty) == 0 || p.start < from)
                return true; // clean, or cut by `from` (written in the last batch)
            const bool new_run = todo.empty() || todo.back().end() != p.start;
            if (!todo.empty() && (bytes + p.v.len > max_bytes || (new_run && runs == kBatchRuns))) {
                more = true;
                return false;
            }
            bytes += p.v.len;
            runs += new_run ? 1 : 0;
            todo.push_back(p);
            return true;
        };
        thread_local std::vector<Piece> seen;
        if (auto looked = core_.index.lookup(st.rec->file_id, from, UINT64_MAX, seen, take);
            !looked)
            return fail(looked.error());
        rec = *st.rec;
        seq = st.write_seq.load();
        if (from == 0)
            pass_seq = seq;
        if ((rec.flags & meta::kFileWritingBack) == 0) {
            meta::FileRecord marked = rec;
            marked.flags |= meta::kFileWritingBack;
            auto t = core_.index.txn();
            if (auto r = core_.records.commit(st, t, marked, true); !r)
                return r;
            rec = marked;
        }
    }
    // A batch that fails after the mark takes the mark back, with the
    // backing's attributes as the failure left them (the bytes it did write
    // are ours): left set, it would make any later change behind the mount
    // look like our own half-done copy.
    struct Unmark {
        Writeback& w;
        FileState& st;
        int fd;
        meta::FileId fid;
        bool armed = true;
        ~Unmark() {
            if (!armed)
                return;
            auto after = backing::fstat_file(fd);
            if (!after)
                return; // the mark stays: the next batch or open sorts it out
            std::lock_guard lk(st.mu);
            if (!st.rec || st.rec->file_id != fid)
                return;
            meta::FileRecord r = *st.rec;
            take_attrs(r, *after);
            r.flags &= ~meta::kFileWritingBack;
            auto t = w.core_.index.txn();
            if (auto c = w.core_.records.commit(st, t, r, true); !c)
                log::warn("writeback: ", to_string(c.error()));
        }
    } unmark{*this, st, fd, rec.file_id};
    if (hooks_before_copy)
        hooks_before_copy(st);

    // 2. Copy, neighbours coalesced.
    std::vector<Piece> lost;
    std::vector<const Piece*> copied;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> runs_out; // (start, len) written
    thread_local std::vector<char> buf;
    std::size_t i = 0;
    while (i < todo.size()) {
        const std::uint64_t run_start = todo[i].start;
        std::uint64_t run_len = 0;
        std::vector<const Piece*> run;
        while (i < todo.size() && todo[i].start == run_start + run_len &&
               (run.empty() || run_len + todo[i].v.len <= kRunBytes)) {
            const Piece& p = todo[i];
            buf.resize(run_len + p.v.len);
            const PieceRead pr = core_.index.read_piece(p, buf.data() + run_len);
            if (pr == PieceRead::io_error)
                return fail(Errc::CacheIo, "reading dirty data from the cache device");
            if (pr != PieceRead::ok) {
                lost.push_back(p);
                ++i;
                break; // the run ends before the bytes that failed
            }
            run_len += p.v.len;
            run.push_back(&p);
            ++i;
        }
        if (run_len == 0)
            continue;
        if (auto n = backing::write_all(fd, buf.data(), run_len, run_start); !n) {
            note_error("writing " + rec.path + ": " + to_string(n.error()));
            return fail(n.error());
        } else if (*n != run_len) {
            note_error("writing " + rec.path + ": short write");
            return fail_sys(EIO, "short write to the backing");
        }
        // The backing's disk writes this run while the next is read from
        // the cache (else it idles until the fdatasync below).
        backing::start_writeout(fd, run_start, run_len);
        moved_.fetch_add(run_len, std::memory_order_relaxed);
        runs_out.push_back({run_start, run_len});
        written += run_len;
        copied.insert(copied.end(), run.begin(), run.end());
    }
    const bool last = !more;
    if (last) {
        // The size and mtime the mount has shown, on the backing too.
        auto cur = backing::fstat_file(fd);
        if (!cur)
            return fail(cur.error());
        if (static_cast<std::uint64_t>(cur->st_size) < rec.cache_size &&
            ::ftruncate(fd, static_cast<off_t>(rec.cache_size)) != 0) {
            note_error("extending " + rec.path + ": " + std::strerror(errno));
            return fail_errno("extending " + rec.path);
        }
        struct timespec times[2];
        times[0].tv_sec = 0;
        times[0].tv_nsec = UTIME_OMIT;
        times[1].tv_sec = rec.cache_mtime_ns / 1000000000;
        times[1].tv_nsec = rec.cache_mtime_ns % 1000000000;
        if (::futimens(fd, times) != 0)
            log::debug("writeback: cannot set the mtime of ", rec.path, ": ", std::strerror(errno));
    }
    // The batch's pages reach the backing's disk run by run, each counted
    // as progress: over a slow backing whose writes the page cache takes at
    // once (NFS, a disk), the sync below would otherwise be one wait of the
    // whole batch, which the unmount watchdog cannot tell from a stall.
    // A range wait's error is the sync's: the file reports it once.
    auto synced = [&](Result<void> r) -> Result<void> {
        if (!r)
            note_error("syncing " + rec.path + ": " + to_string(r.error()));
        else
            moved_.fetch_add(1, std::memory_order_relaxed);
        return r;
    };
    for (const auto& [start, len] : runs_out)
        if (auto r = synced(backing::wait_writeout(fd, start, len)); !r)
            return r;
    if (auto r = synced(backing::sync_file(fd, true)); !r)
        return r;
    auto after = backing::fstat_file(fd);
    if (!after)
        return fail(after.error());

    // 4. Mark what was copied clean, in one synced batch with the record.
    unmark.armed = false;
    std::lock_guard lk(st.mu);
    if (!st.rec || st.rec->file_id != rec.file_id)
        return {}; // removed meanwhile: nothing to mark
    auto t = core_.index.txn();
    bool all = true;
    for (const Piece* p : copied) {
        auto r = core_.index.stage_clean(t, rec.file_id, *p);
        if (!r)
            return fail(r.error());
        all = all && *r;
    }
    std::uint64_t lost_bytes = 0;
    for (const Piece& p : lost) {
        // Only if it is still exactly the extent that failed.
        auto cur = core_.index.lookup(rec.file_id, p.start, p.end());
        if (cur && cur->size() == 1 && cur->front().start == p.start &&
            cur->front().v.bucket == p.v.bucket && cur->front().v.gen == p.v.gen &&
            cur->front().v.len == p.v.len) {
            if (auto r = core_.index.stage_punch(t, rec.file_id, p.start, p.end()); !r)
                return r;
            lost_bytes += p.v.len;
            log::error("writeback: dirty bytes [", p.start, ", ", p.end(), ") of ", rec.path,
                       " failed their checksum on the cache device and are lost; the backing "
                       "keeps what it had there");
        } else {
            all = false;
        }
    }
    complete = complete && all;
    meta::FileRecord out = *st.rec;
    take_attrs(out, *after);
    out.flags &= ~meta::kFileWritingBack;
    // Nothing dirty left, and nothing written since the pass began: a write
    // between two batches may have landed below `from`, where no later
    // batch of this pass looks.
    if (last && all && st.write_seq.load() == pass_seq)
        out.flags &= ~meta::kFileAhead;
    if (auto r = core_.records.commit(st, t, out, true); !r)
        return r;
    if ((out.flags & meta::kFileAhead) == 0)
        st.wb_fd.reset();
    next_from = todo.empty() ? from : todo.back().end();
    {
        std::lock_guard sl(stats_mu_);
        stats_.bytes += written;
        stats_.lost += lost_bytes;
    }
    if (lost_bytes > 0)
        note_error("dirty data of " + rec.path + " failed its checksum");
    return {};
}

void Writeback::orphaned(FileState& st, const std::string& why) {
    auto bl = lock_backing(st);
    if (!bl)
        return; // a request's write-back: its own error says why
    std::lock_guard lk(st.mu);
    if (!st.rec || (st.rec->flags & meta::kFileAhead) == 0)
        return;
    const std::string name = st.rec->path.empty() ? "file " + std::to_string(st.rec->file_id)
                                                   : st.rec->path;
    auto copy = save_dirty_copy(core_, st, core_.p.lost_found_dir);
    if (!copy) {
        note_error("cannot save the dirty data of " + name + " (" + why +
                   "): " + to_string(copy.error()));
        return; // kept dirty: tried again later
    }
    ++core_.c.writeback_conflicts;
    log::warn("writeback: ", name, " has dirty data but ", why, "; the data was saved as ",
              *copy);
    if (auto r = core_.records.remove(st); !r)
        log::warn("cache: dropping ", name, ": ", to_string(r.error()));
}

} // namespace overcache::cache
