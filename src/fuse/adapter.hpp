// Private to the FUSE adapter: the state every handler reaches through
// fuse_req_userdata(), the file and directory handles, helpers shared by the
// ops_*.cpp files, and the handler declarations that make_operations() wires.
#pragma once

#include "backing/change_watch.hpp"
#include "backing/creds.hpp"
#include "backing/gate.hpp"
#include "backing/request_scope.hpp"
#include "control/command_runner.hpp"
#include "control/control_file.hpp"
#include "control/settings.hpp"
#include "control/stat_sampler.hpp"
#include "control/stats_text.hpp"
#include "fuse/handle_table.hpp"
#include "fuse/inode_table.hpp"
#include "fuse/inode_trimmer.hpp"
#include "fuse/kernel_channel.hpp"
#include "fuse/page_invalidator.hpp"
#include "overcache/cache/data_path.hpp"
#include "overcache/cache/meta_cache.hpp"
#include "overcache/config/config.hpp"
#include "overcache/util/tunable.hpp"
#include "util/unique_fd.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <dirent.h>
#include <functional>
#include <fuse_lowlevel.h>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unordered_map>
#include <vector>

namespace overcache::fuse {

using control::kControlName;

// Whether replies to control-file commands may still be sent. A command
// (flush) may complete after the session has ended, from a thread of the
// DataPath; the session closes the gate before it is destroyed, and a
// completion that finds it closed neither replies nor starts more work.
struct ControlGate {
    std::mutex mu;
    bool open = true; // guarded by mu; taken before any libfuse request lock
};

// How long the kernel may keep what a reply told it: live settings,
// read at each reply.
struct KernelTimeouts {
    explicit KernelTimeouts(const config::Config& c)
        : attr(c.attr_timeout), entry(c.entry_timeout), negative(c.negative_timeout) {}
    Tunable<double> attr;
    Tunable<double> entry;
    Tunable<double> negative;
};

// The commands' view of the mount (ops_control.cpp): flush, gc, set,
// invalidate and reset_stats on the DataPath, the mount's settings and the
// stats sampler (invalidate finds its
// file below `inodes`' root), refused once `gate` is closed.
std::shared_ptr<control::CommandTarget> make_command_target(cache::DataPath& data,
                                                            std::shared_ptr<ControlGate> gate,
                                                            control::Settings& settings,
                                                            KernelTimeouts& timeouts,
                                                            const InodeTable& inodes,
                                                            control::StatSampler& sampler);

// The requesting process's uid, gid and groups, when `active` (creating
// files always; everything when the kernel does not check permissions
// because default_permissions is off); a value, so that a gate thread can
// take it on.
struct CallerId {
    bool active = false;
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
};

// One open of a file. Members are destroyed in reverse order: the DataPath's
// OpenFile goes before the fd it borrows.
struct FileHandle {
    // The backing file; none for an open made while the backing was
    // offline (read-only, served from the cache). An open made from kept
    // attributes (`kept_of`) gets it at the first request that needs it
    // (ops_file.cpp, need_backing); until then it is read under attach_mu.
    UniqueFd fd;
    int flags = 0; // the open's flags (a FLUSH request does not carry them)
    // Opened from kept attributes (coherency=timeout|none), without the
    // backing: the inode whose backing file `fd` will be, opened as `who`.
    Ino kept_of = 0;
    CallerId who;
    std::mutex attach_mu; // a leaf: guards `fd` of a kept open until it is set
    // The inode this open counts as a writer of (Inode::add_writer); 0: none.
    Ino writer = 0;
    std::unique_ptr<cache::OpenFile> open;
    bool control = false;
    std::string control_text; // the control file's text as of open
};

// `fh`'s backing fd, or -1 while it has none (opened without the backing).
int backing_fd_of(FileHandle& fh);

class DirStream; // fuse/dir_stream.hpp

struct DirHandle {
    // `listed`: served from the index's listing of it (fuse/listings.hpp),
    // which the backing's is the same as (online) or stands in for (offline,
    // or from kept names: `s` nullptr).
    DirHandle(std::unique_ptr<DirStream> s, bool root,
              std::optional<meta::FileKey> key = std::nullopt);
    ~DirHandle();
    DirHandle(const DirHandle&) = delete;
    DirHandle& operator=(const DirHandle&) = delete;

    std::mutex mutex; // readdir calls on one handle are serialised by it
    // The backing's directory; nullptr for a listing opened without it.
    // Its entries, and `entry` below, are guarded by mutex.
    const std::unique_ptr<DirStream> stream;
    const bool is_root;
    const std::optional<meta::FileKey> listed; // the index's listing it serves
    // Keeps `listed` from the metadata trim while the handle lives.
    std::unique_ptr<cache::MetaCache::ListingHold> hold;
    off_t offset = 0; // guarded by mutex: position of `entry`/of the stream
    // Guarded by mutex: read but not yet replied (its name points into the
    // stream's buffer until the stream's next read).
    bool has_entry = false;
    std::string_view entry_name;
    ino_t entry_ino = 0;
    unsigned char entry_type = 0;
    off_t entry_next = 0;
    // Its listing being recorded into the index while it is read in order
    // from its start (guarded by mutex).
    std::unique_ptr<cache::MetaCache::Recorder> recorder;
};

// The gate's settings from the mount's options and, for backing_calls=auto,
// the filesystem type of the backing's root `root_fd`.
backing::Gate::Options gate_options(const config::Config& c, int root_fd);
// Asks the backing whether it answers: statfs of its root (a dup of
// `root_fd`, owned by the probe), which no kernel cache answers.
std::function<int()> backing_probe(int root_fd);
// The name of the local-disk filesystem `root_fd` is on; nullptr for any
// other (a network or FUSE filesystem, one this build does not know).
const char* local_fs_name(int root_fd) noexcept;

struct Adapter {
    Adapter(const config::Config& config, cache::DataPath& data_path, UniqueFd root_fd,
            const struct stat& root_st)
        : cfg(config), data(data_path), inodes(std::move(root_fd), root_st, pinned_budget()),
          gate(gate_options(config, inodes.root().fd()), backing_probe(inodes.root().fd())),
          // coherency=none asks the backing nothing it kept anyway.
          watch(inodes.root().fd(),
                config.watch_backing && config.coherency != config::Coherency::none,
                local_fs_name(inodes.root().fd())),
          timeouts(config), settings(config), trimmer(inodes, config.max_inodes),
          control_gate(std::make_shared<ControlGate>()),
          // The sampler is constructed after the target but used by it only
          // once requests arrive.
          commands(make_command_target(data_path, control_gate, settings, timeouts, inodes,
                                       stat_sampler)),
          stat_sampler([&d = data_path] { return d.stats(); }) {
        inodes.on_grow([this](std::size_t n) { trimmer.note_size(n); });
        data_path.watch_backing({gate.unsettled_watch(),
                                 [this](const std::function<void()>& work) {
                                     backing::RequestScope scope(gate);
                                     work();
                                 },
                                 [this](std::function<void()> job) { gate.post(std::move(job)); }});
        stat_sampler.start();
        // The mount has just reached the backing's root: df has numbers
        // from the start, should the backing stall before anyone asks.
        struct statvfs sv {};
        if (::fstatvfs(inodes.root().fd(), &sv) == 0)
            last_statfs = sv;
    }

    // The gate goes with us; parked writes answered later (the data path's
    // stop) call the backing directly.
    ~Adapter() { data.watch_backing({}); }
    Adapter(const Adapter&) = delete;
    Adapter& operator=(const Adapter&) = delete;

    // Half the descriptor limit for pinned inodes; the rest is for open
    // files, directories and the cache.
    static std::size_t pinned_budget() noexcept {
        struct rlimit rl {};
        if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
            return 1u << 16;
        return std::max<std::size_t>(64, static_cast<std::size_t>(rl.rlim_cur / 2));
    }

    // The options as mounted; those that change live are read from
    // `timeouts` and `settings` instead.
    const config::Config cfg;
    cache::DataPath& data;
    InodeTable inodes;
    // Calls into the backing that may stall run through it (ops_backing.cpp).
    backing::Gate gate;
    // The backing's changes, when it is on a local disk (coherency.cpp).
    backing::ChangeWatch watch;
    KernelTimeouts timeouts;
    control::Settings settings;
    PageInvalidator invalidator;
    InodeTrimmer trimmer; // keeps `inodes` near max_inodes
    std::atomic<std::uint64_t> open_files{0};
    std::shared_ptr<ControlGate> control_gate;
    control::CommandRunner commands; // what writes to the control file run
    // Every open file (the control file's too) and directory the kernel
    // holds a handle of: freed at RELEASE, or with the adapter if the mount
    // goes away first.
    HandleTable<FileHandle> files;
    HandleTable<DirHandle> dirs;
    // /dev/fuse as the session reads and writes it (kernel_channel.hpp).
    KernelChannel channel{true};

    // The backing's statfs as last answered, for df while it is offline.
    std::mutex last_statfs_mu;
    std::optional<struct statvfs> last_statfs; // guarded by last_statfs_mu

    // The kernel buffers writes (FUSE's writeback cache, negotiated at
    // INIT): it may read through any handle it writes through.
    std::atomic<bool> kernel_caches_writes{false};

    // Work for the first request after INIT (see after_init()).
    std::string readahead_path; // /sys/class/bdi/M:N/read_ahead_kb, or empty
    std::once_flag init_done;

    // The stats windows (five_minute.cache_hits, ...): sampled from the
    // DataPath by a thread of their own while the adapter lives. Last, so
    // it stops first.
    control::StatSampler stat_sampler;
};

// Runs once, from the first lookup or getattr: by then the kernel has
// applied the INIT reply, which would undo a read-ahead set earlier, and no
// thread of the daemon has to touch its own mount to wait for that.
void after_init(Adapter& a) noexcept;

inline Adapter& adapter_of(fuse_req_t req) {
    return *static_cast<Adapter*>(fuse_req_userdata(req));
}

// The DataPath found the backing changed behind the mount: the kernel's
// pages of `ino` are stale, whatever its attributes say.
inline void note_change(Adapter& a, fuse_ino_t ino, const cache::ChangeOut& c) {
    if (c.backing_changed)
        a.invalidator.post(ino);
}

// Brackets a change of a regular file's inode on the backing (see
// DataPath::begin_attr_change) in `out`; null for other kinds of files. `fd`
// (O_PATH will do) must stay open until the guard is gone. 0, or the errno
// the request fails with (nothing changed).
inline int begin_attr_change(Adapter& a, int fd, const struct stat& st,
                             std::unique_ptr<cache::AttrChange>& out) {
    out.reset();
    if (!S_ISREG(st.st_mode))
        return 0;
    auto r = a.data.begin_attr_change(cache::FileRef{fd, st});
    if (!r)
        return to_errno(r.error());
    out = std::move(*r);
    return 0;
}

inline FileHandle& file_of(const fuse_file_info* fi) {
    return *reinterpret_cast<FileHandle*>(fi->fh); // NOLINT: fh is our pointer
}
inline DirHandle& dir_of(const fuse_file_info* fi) {
    return *reinterpret_cast<DirHandle*>(fi->fh); // NOLINT
}

inline bool is_control_name(fuse_ino_t parent, const char* name) noexcept {
    return parent == kRootIno && std::string_view(name) == kControlName;
}

CallerId caller_id(fuse_req_t req, bool active);

// Takes a caller's identity on this thread for the scope.
class CallerScope {
public:
    CallerScope(fuse_req_t req, bool active) : CallerScope(caller_id(req, active)) {}
    explicit CallerScope(const CallerId& who);

private:
    std::optional<backing::AsCaller> as_;
};

inline bool check_as_caller(const Adapter& a) noexcept {
    return !a.cfg.default_permissions;
}

// Looks `name` up in `parent` on the backing (as `who`) and counts a kernel
// lookup of it. 0, an errno, or kNoAnswer (backing_calls.hpp) when `gated`
// and the backing did not answer in time. `record_always`: the attributes
// go to the index even if unchanged (a listing being recorded vouches
// only for attributes written since its reading began).
int lookup_entry(Adapter& a, const InodeRef& parent, const char* name, fuse_entry_param& e,
                 const CallerId& who = {}, bool gated = true, bool record_always = false);
// The mount's answer to a lookup while the backing is offline: the entry
// last seen under `name`; ENOENT if the parent's kept listing lacks it;
// EACCES if the caller may not search the parent; or EIO.
int lookup_offline(fuse_req_t req, Adapter& a, fuse_ino_t parent, const char* name,
                   fuse_entry_param& e);
// Sends an entry reply; if the kernel did not take it, undoes the lookup.
void reply_entry(fuse_req_t req, Adapter& a, const fuse_entry_param& e);
void control_attr(struct stat& st) noexcept;
void control_entry(fuse_entry_param& e, const Adapter& a) noexcept;
// The control file's lines: the DataPath's stats, then the adapter's, then
// the commands' (last_error), then the stats windows (five_minute.*, ...).
control::StatLines all_stats(Adapter& a);

// ops_control.cpp: the control file's open, read and write, each returning
// 0 once it has replied (or a completion will), else the errno to reply.
int open_control(fuse_req_t req, fuse_file_info* fi);
int read_control(fuse_req_t req, const FileHandle& fh, std::size_t size, off_t off);
int write_control(fuse_req_t req, fuse_bufvec* in_buf);
// The control file's xattrs (as mergerfs'): user.overcache.KEY reads any
// key of its text and sets a live setting (`set KEY VALUE`); the list is
// the settings. `key` is without the prefix.
int control_getxattr(fuse_req_t req, std::string_view key, std::size_t size);
int control_listxattr(fuse_req_t req, std::string_view prefix, std::size_t size);
int control_setxattr(fuse_req_t req, std::string_view key, std::string_view value);
// Whether the caller may run commands (open the control file for writing).
bool may_command(fuse_req_t req, const Adapter& a) noexcept;
// No reply to a command is sent after this (Session teardown).
void close_control(Adapter& a) noexcept;

// ops_entry.cpp
void op_init(void* userdata, fuse_conn_info* conn);
void op_destroy(void* userdata);
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
void op_forget(fuse_req_t req, fuse_ino_t ino, std::uint64_t nlookup) noexcept;
void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) noexcept;
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                fuse_file_info* fi) noexcept;
void op_readlink(fuse_req_t req, fuse_ino_t ino) noexcept;
void op_statfs(fuse_req_t req, fuse_ino_t ino) noexcept;
void op_access(fuse_req_t req, fuse_ino_t ino, int mask) noexcept;

// ops_dir.cpp
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              dev_t rdev) noexcept;
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept;
void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) noexcept;
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) noexcept;
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept;
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) noexcept;
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                fuse_file_info* fi) noexcept;
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    fuse_file_info* fi) noexcept;
void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) noexcept;

// ops_file.cpp
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) noexcept;
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept;
void op_write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in_buf, off_t off,
                  fuse_file_info* fi) noexcept;
void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept;
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) noexcept;
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  fuse_file_info* fi) noexcept;
void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) noexcept;
void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                        fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                        int flags) noexcept;

// ops_xattr.cpp
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags) noexcept;
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept;
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept;
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept;

} // namespace overcache::fuse
