// DataPath: the seam between the FUSE adapter and the cache. The adapter
// translates requests and errno; the DataPath owns everything that touches
// a regular file's bytes: read, write, fsync, truncate, fallocate,
// copy_file_range, lseek, and the attributes the cache may be ahead on. For
// metadata the adapter changes itself (chmod, chown, utimes, xattrs, link),
// it reports the file's attributes before and after, so the cache can tell
// our own change from one made behind the mount (NFS's weak cache
// consistency). A passthrough DataPath serves every call from the backing;
// the caching one puts the cache device in between. Neither knows libfuse.
#pragma once

#include "overcache/cache/path_settings.hpp"
#include "overcache/config/config.hpp"
#include "overcache/util/result.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace overcache::cache {

// A backing file as the adapter holds it: any fd on it (O_PATH will do for
// everything but reading) and its attributes as of just now.
struct FileRef {
    int fd;
    const struct stat& st;
};

// State a DataPath keeps for one open of a file; owned by the FUSE file handle.
class OpenFile {
public:
    virtual ~OpenFile() = default;
};

// Where a read's reply comes from: either `len` bytes already in the
// caller's buffer (fd < 0), or `len` bytes to splice from `fd` at `fd_offset`
// (zero copy; the fd stays valid until the reply is sent).
struct ReadOut {
    int fd = -1;
    off_t fd_offset = 0;
    std::size_t len = 0;
    // Nothing read: an open made from kept attributes (open_kept) needs its
    // backing file for this request; attach_backing, then read again.
    bool needs_backing = false;
};

struct OpenOut {
    std::unique_ptr<OpenFile> file;
    bool keep_page_cache = false; // the kernel may keep its cached pages of this file
};

// The bytes of a write as the request carries them: in memory or still in
// the kernel's pipe. Valid only until the call it is passed to returns, so a
// DataPath that replies later copies what it needs first.
class WriteSource {
public:
    virtual ~WriteSource() = default;
    virtual std::size_t size() const = 0;
    // Copies all size() bytes to `out`; bytes copied or -errno.
    virtual ssize_t copy_to(char* out) = 0;
    // Moves the bytes to `fd` at `off` (splice where possible); bytes or -errno.
    virtual ssize_t write_to(int fd, off_t off) = 0;
    // The kernel writing back its page cache (FUSE's writeback cache): it
    // keeps the file's mtime itself, from the write(2), and sends it in a
    // setattr of its own, possibly before these bytes arrive.
    virtual bool from_kernel_cache() const { return false; }
};

// Completion of a request that a DataPath may answer later, from another
// thread. Called exactly once.
template <class T> using Done = std::function<void(Result<T>)>;

// What a change reported to the DataPath found.
struct ChangeOut {
    // The backing had changed behind the mount before this change: the
    // kernel's cached pages of the file are stale and must be dropped.
    bool backing_changed = false;
};

// See DataPath::begin_attr_change.
class AttrChange {
public:
    virtual ~AttrChange() = default; // finish()es if the caller did not
    // The change is made (or failed: the guard records whatever the backing
    // shows now). `renamed`: the file has a new name, which a cache that
    // finds files again by path after a restart keeps current. Once only.
    virtual ChangeOut finish(bool renamed = false) = 0;
};

class MetaCache;

// What a data path may ask of the mount's gate (backing/gate.hpp).
struct BackingWatch {
    // Whether a backing call given up on at its deadline is still running
    // (Gate::unsettled_watch): such a change may yet land, so work that
    // changes the backing on its own (writeback) waits while it is true,
    // and its newer bytes never end up under the late ones.
    std::function<bool()> unsettled;
    // Runs `work` with its backing calls under the gate's deadline, as a
    // request handler's are (a RequestScope on the calling thread): for a
    // request answered from another thread (a parked write).
    std::function<void(const std::function<void()>& work)> with_deadline;
    // Runs `job` on a gate thread without waiting for it (Gate::post): the
    // close of a descriptor of the backing, which a stalled FUSE or NFS
    // backing never answers.
    std::function<void(std::function<void()> job)> post;
};

class DataPath {
public:
    virtual ~DataPath() = default;

    // The adapter has opened the backing file: `fd` is readable if the open
    // was, and stays open until the OpenFile is destroyed. Compares the
    // backing's attributes with what the cache knew (close-to-open). With
    // O_TRUNC in `open_flags` the open itself emptied the file. `policy`:
    // the per-path settings this open runs under (unset fields: the
    // mount's), resolved by the adapter.
    virtual Result<OpenOut> open(int fd, const struct stat& st, int open_flags,
                                 const FilePolicy& policy) = 0;
    Result<OpenOut> open(int fd, const struct stat& st, int open_flags) {
        return open(fd, st, open_flags, FilePolicy{});
    }
    // An open while the backing is offline: read-only and without a
    // backing descriptor. `st` holds the attributes the mount saw last;
    // what the cache holds of that version of the file is served, the rest
    // fails with EIO. Default: nothing is cached (EIO).
    virtual Result<OpenOut> open_offline(const struct stat& st, int open_flags,
                                         const FilePolicy& policy) {
        (void)st, (void)open_flags, (void)policy;
        return fail_sys(EIO, "the backing is offline and nothing of the file is cached");
    }

    // A read-only open from attributes kept by the mount (coherency=timeout
    // or none) while the backing is online, without asking it: `st` holds
    // them. The cache serves what it holds of that version; a request it
    // cannot answer alone (ReadOut::needs_backing) makes the adapter open
    // the backing file and attach_backing() it. Fails when the cache has
    // no record of the file (the adapter then opens it as usual).
    virtual Result<OpenOut> open_kept(const struct stat& st, int open_flags,
                                      const FilePolicy& policy) {
        (void)st, (void)open_flags, (void)policy;
        return fail_sys(ENODATA, "nothing of the file is cached");
    }
    // The backing fd of an open_kept() open, opened now; `st` its
    // attributes, compared with what the cache holds as at an open. `fd`
    // stays open until the OpenFile is destroyed.
    // Fails (EIO) when the comparison cannot be made before the backing
    // stops answering; the open stays without its backing file.
    virtual Result<void> attach_backing(OpenFile& f, int fd, const struct stat& st) {
        (void)f, (void)fd, (void)st;
        return {};
    }

    // How a read reaches the backing: `len` bytes of `fd` at `off` into
    // `out`, fewer only at the end of the file; the count or -errno. The
    // adapter passes one that runs on the backing gate, so that a backing
    // that stalls costs a read its deadline, not a request thread.
    using BackingRead = std::function<ssize_t(int fd, char* out, std::size_t len, std::uint64_t off)>;

    // Whether attributes of a regular file kept as `st` (st_dev the running
    // system's) are still the backing's as far as the cache knows: false
    // once the cache has seen the backing's file change since (its own
    // writeback, a change found at an open), so that they are not trusted
    // (coherency=timeout|none). Default: nothing is known against them.
    virtual bool attrs_current(const struct stat& st) {
        (void)st;
        return true;
    }

    // Reads up to `size` bytes at `off`; `buf` has room for `size` bytes.
    // What comes from the backing comes through `backing`; a ReadOut with
    // an fd (bytes to splice from the backing) is the caller's to read.
    virtual Result<ReadOut> read(OpenFile& f, char* buf, std::size_t size, off_t off,
                                 const BackingRead& backing) = 0;
    // The same, reading the backing directly (pread).
    Result<ReadOut> read(OpenFile& f, char* buf, std::size_t size, off_t off);

    // Writes the source's bytes at `off` (through `fd`, the open's writable
    // backing fd); `done` gets the byte count.
    virtual void write(OpenFile& f, WriteSource& src, off_t off, Done<std::size_t> done) = 0;

    // Makes the file's data durable where the cache mode promises it.
    virtual void fsync(OpenFile& f, bool datasync, Done<void> done) = 0;

    // Sets the file's size. `fd` is writable when `fd_is_open`, else an
    // O_PATH fd of the file.
    virtual Result<ChangeOut> truncate(int fd, bool fd_is_open, std::uint64_t size) = 0;

    // fallocate(2) on the open's backing fd, and the cache follows.
    virtual Result<void> fallocate(OpenFile& f, int mode, off_t off, off_t len) = 0;

    // copy_file_range(2) between two opens; bytes copied.
    virtual Result<std::size_t> copy_file_range(OpenFile& in, off_t off_in, OpenFile& out,
                                                off_t off_out, std::size_t len,
                                                unsigned flags) = 0;

    // lseek(2) SEEK_DATA/SEEK_HOLE (and the rest) as the mount sees the file.
    virtual Result<off_t> lseek(OpenFile& f, off_t off, int whence) = 0;

    // getattr of a regular file: `st` is the backing's fstat; the DataPath
    // may overlay its own view (size, mtime) and notices a backing change
    // for files it has open.
    virtual ChangeOut getattr(FileRef file, struct stat& st) = 0;

    // Puts the DataPath's own view of a regular file (size, mtime while
    // the cache is ahead of the backing) over `st`, the backing's fstat of
    // `file`: for every reply that carries attributes (lookup, setattr,
    // readdirplus). Cheap: no backing I/O.
    virtual void show_attrs(FileRef file, struct stat& st) = 0;
    // The kernel's writeback cache sends the mtime of the writes it held in
    // a setattr of its own. A file ahead of the backing takes it as its own
    // mtime, and writeback puts it on the backing with the bytes: true. A
    // file that is not (false) gets it on the backing from the caller.
    virtual bool keep_mtime(FileRef file, const struct timespec& mtime) = 0;

    // A change the mount is about to make to a regular file's inode on the
    // backing that leaves its bytes alone: chmod, chown, utimes, xattrs, a
    // link, the unlink of one of several names, a rename. It moves the
    // file's ctime, which the cache compares to notice changes behind the
    // mount, so it is made between begin_attr_change() (`file`: an fd of
    // the file, O_PATH will do, and its fstat) and the end of the returned
    // guard: meanwhile nothing compares the file, and the guard's end
    // records the backing as the change left it. Writes and writeback of
    // the file wait for it.
    // Fails (EIO, nothing changed) when the file's writeback holds it in a
    // backing that stopped answering.
    virtual Result<std::unique_ptr<AttrChange>> begin_attr_change(FileRef file) = 0;

    // The last name of the file is gone (`st` is as before the unlink).
    virtual void removed(FileRef file) = 0;

    // Writes every byte the backing does not have yet (writeback's dirty
    // data) to the backing and syncs it there; `done` once the backing has
    // all that was dirty when flush was called, or with the first error that
    // stopped it (the data stays dirty and is retried). Nothing to do in the
    // other cache modes.
    virtual void flush(Done<void> done) = 0;

    // `key value` lines for the control file, in a stable order.
    virtual std::vector<std::pair<std::string, std::string>> stats() const = 0;

    // Changes the cache's size while mounted (`set cache_size`): `size`
    // bytes rounded down to whole buckets. `done` (on a background thread)
    // gets the new size once the cache runs with it, or why not, with
    // nothing changed. The caller's thread never waits for it.
    virtual void resize(std::uint64_t size, Done<std::uint64_t> done) {
        (void)size;
        done(fail(Errc::NotSupported, "this mount has no cache (cache_mode=none)"));
    }
    // The cache's size now (0: no cache).
    virtual std::uint64_t cache_size() const { return 0; }

    // reset_stats: forgets the working set. The counters are not touched:
    // the control file counts them from a baseline instead (StatSampler),
    // so no module's counting races with a reset.
    virtual void reset_stats() {}

    // The cache mode in force now (it changes with a live `set`).
    virtual config::CacheMode mode() const { return config::CacheMode::none; }

    // What the cache holds of one regular file, for its read-only xattrs
    // (user.overcache.cached_bytes, ...) and `overcache status`.
    struct FileCacheInfo {
        std::uint64_t cached_bytes = 0; // bytes of the file in the cache, dirty ones included
        std::uint64_t dirty_bytes = 0;  // of those, the ones the backing does not have yet
        std::uint64_t extents = 0;
        // The file's last writeback found it changed behind the mount and
        // saved the cache's bytes as a conflict copy; until it is next
        // written through the mount or invalidated.
        bool conflict = false;
    };
    virtual Result<FileCacheInfo> file_info(FileRef file) {
        (void)file;
        return FileCacheInfo{};
    }

    // `invalidate`: drops what the cache holds of the file, so its next
    // read comes from the backing (rclone's vfs/forget). Dirty data is
    // written back first and never dropped: if the write-back fails, so
    // does this, and the file keeps its cache. The kernel's cached pages
    // of the file go at its next open. Without a cache there is nothing to
    // drop.
    virtual void invalidate(FileRef file, Done<void> done) {
        (void)file;
        done({});
    }

    // `prefetch`: reads the parts of the file the cache lacks from the
    // backing and caches them as clean data, as if they had been read
    // (sequential_cutoff and promote_after_hits do not apply), off the
    // calling thread; `done` once all of the file is in the cache, or with
    // why not (the cache is full: how much was fetched). `file.fd` must be
    // readable; the DataPath keeps a duplicate of it. `policy`: the file's
    // per-path settings (a file whose mode is none is refused). Dirty data
    // is kept as it is. Without a cache there is nothing to fetch.
    virtual void prefetch(FileRef file, const FilePolicy& policy, Done<void> done) {
        (void)file;
        (void)policy;
        done({});
    }
    void prefetch(FileRef file, Done<void> done) {
        prefetch(file, FilePolicy{}, std::move(done));
    }

    // What the mount's gate (backing/gate.hpp) offers the path, from the
    // adapter's start until it goes (then an empty watch). Nothing to do
    // without a cache.
    virtual void watch_backing(BackingWatch w) { (void)w; }

    // The mount's settings changed (`set`): the path takes the new values
    // of those it reads (config::is_live) at once. Nothing to do without a
    // cache.
    virtual void apply_settings(const config::Config& c) { (void)c; }
    // Settings changed at runtime are kept in the cache's index, so the
    // next mount starts with them (options given at mount win): name ->
    // value as -o says it. A mount without a cache keeps none.
    virtual Result<void> save_setting(const std::string& name, const std::string& value) {
        (void)name;
        (void)value;
        return {};
    }
    virtual Result<std::vector<std::pair<std::string, std::string>>> saved_settings() const {
        return std::vector<std::pair<std::string, std::string>>{};
    }

    // Per-path settings (user.overcache.mode, ...) of a file or directory,
    // kept in the index under its backing identity. path_settings() does no
    // I/O of the backing or the index (`file.fd` may be -1: only st_dev and
    // st_ino are used then, and a filesystem not seen yet reads as nothing
    // set); has_path_settings() is false while
    // none is set anywhere (the adapter then skips resolving). A mount
    // without a cache keeps none: setting them fails with ENOTSUP.
    virtual bool has_path_settings() const { return false; }
    // The directory listings kept in the index (meta_cache.hpp); nullptr
    // for a mount without a cache.
    virtual MetaCache* listings() { return nullptr; }
    virtual std::optional<PathSettings> path_settings(FileRef file) {
        (void)file;
        return std::nullopt;
    }
    virtual Result<void> set_path_settings(FileRef file, const PathSettings& s) {
        (void)file;
        (void)s;
        return fail_sys(ENOTSUP, "per-path settings need a cache");
    }
    // The file's effective user.overcache.pin changed to `pin` (set or
    // removed on the file itself): its cached extents are marked or
    // unmarked now, not at its next open. Fetching it is prefetch()'s.
    virtual Result<void> repin(FileRef file, bool pin) {
        (void)file;
        (void)pin;
        return {};
    }

    // Stops background work and makes everything durable; called once,
    // after the FUSE session has ended and before destruction.
    virtual void stop() = 0;
    // While stop() runs on another thread: how much of its work is done so
    // far (bytes written back), so that a watchdog tells a long flush at
    // unmount from one stuck in a backing that stopped answering
    // (stop_watchdog.hpp).
    virtual std::uint64_t stop_progress() const { return 0; }
    // While stop() may still run on another thread: makes what the cache
    // holds durable (its data file and the index's log) for a process that
    // then ends without it; the next mount recovers as after a crash.
    virtual Result<void> sync_for_exit() { return {}; }
};

} // namespace overcache::cache
