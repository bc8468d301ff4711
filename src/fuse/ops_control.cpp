// DOC: the control file's data handlers. An open renders the text a reader
// will see (a snapshot: reads in pieces stay consistent); reads are answered
// from a per-thread copy of it, never from the handle, which RELEASE on
// another thread may free while the reply is still being written. A write
// carries whole command lines (control/command.hpp) and is answered once
// its commands have finished: a flush replies from the DataPath's
// completion, on whatever thread that runs, and holds no FUSE thread or lock
// meanwhile, so reads of the control file go on during it. An interrupted
// writer (Ctrl-C) gets EINTR at once and the command goes on in the
// background; whichever of the completion and the interrupt comes first
// replies, the other does nothing. Writing needs the mount's owner or root:
// the kernel checks the mode (0644, owned by the daemon's user) with
// default_permissions, and may_command() does without it.
#include "backing/backing_fs.hpp"
#include "fuse/adapter.hpp"
#include "fuse/reply.hpp"
#include "overcache/cache/caching_path.hpp"
#include "util/log.hpp"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>
#include <vector>

namespace overcache::fuse {
namespace {

// Per FUSE thread: the bytes of one read reply.
std::vector<char>& reply_buffer(std::size_t size) {
    thread_local std::vector<char> buf;
    if (buf.size() < size)
        buf.resize(size);
    return buf;
}

// Where a setting's change goes: the DataPath's tunables, the kernel's
// timeouts, the log level, and the cache's index to keep it.
class MountSettingsSink final : public control::SettingsSink {
public:
    MountSettingsSink(cache::DataPath& data, KernelTimeouts& timeouts)
        : data_(data), timeouts_(timeouts) {}

    Result<void> check(const config::Config& next) override {
        if (next.cache_mode != config::CacheMode::none && !has_cache())
            return fail(Errc::BadValue,
                        std::string("cache_mode ") + config::to_string(next.cache_mode) +
                            ": this mount has no cache (it was mounted with cache_mode=none); "
                            "mount it again with the cache mode it should have");
        return {};
    }
    void apply(const config::Config& c) override {
        timeouts_.attr.set(c.attr_timeout);
        timeouts_.entry.set(c.entry_timeout);
        timeouts_.negative.set(c.negative_timeout);
        log::set_level(static_cast<log::Level>(static_cast<int>(c.log_level)));
        data_.apply_settings(c);
    }
    Result<void> save(const std::string& name, const std::string& value) override {
        return data_.save_setting(name, value);
    }

private:
    bool has_cache() const { return dynamic_cast<cache::CacheControl*>(&data_) != nullptr; }

    cache::DataPath& data_;
    KernelTimeouts& timeouts_;
};

class DataPathTarget final : public control::CommandTarget {
public:
    DataPathTarget(cache::DataPath& data, std::shared_ptr<ControlGate> gate,
                   control::Settings& settings, KernelTimeouts& timeouts, const InodeTable& inodes,
                   control::StatSampler& sampler)
        : data_(data), gate_(std::move(gate)), settings_(settings), sink_(data, timeouts),
          inodes_(inodes), sampler_(sampler) {}

    // The file is found below the backing root one component at a time
    // without following symlinks, so no name leads out of the backing. It
    // is opened as the daemon: only root or the mount's owner may write
    // commands (may_command). A directory is the CLI's to walk.
    void invalidate(const std::string& rel_path, control::CommandDone done) override {
        if (!open())
            return done(closing());
        if (rel_path == ".") { // the root: its names, as any directory's below
            inodes_.distrust_all();
            log::info("control: invalidated the names below the mount's root");
            return done({});
        }
        const InodeRef root = inodes_.root();
        auto fd = open_below(root.fd(), rel_path);
        if (!fd)
            return done(fail(fd.error()));
        struct stat st {};
        if (const int err = backing::stat_fd(fd->get(), st))
            return done(fail_sys(err, control::quote(rel_path)));
        // Names and attributes the mount kept (coherency=timeout|none) are
        // asked of the backing again, everywhere: cheap, and a directory
        // needs nothing more.
        inodes_.distrust_all();
        if (S_ISDIR(st.st_mode)) {
            log::info("control: invalidated the names below ", control::quote(rel_path));
            return done({});
        }
        if (!S_ISREG(st.st_mode))
            return done(fail(Errc::BadValue,
                             control::quote(rel_path) + " is not a regular file or directory"));
        auto held = std::make_shared<UniqueFd>(std::move(*fd));
        data_.invalidate(cache::FileRef{held->get(), st},
                         [held, rel_path, done = std::move(done)](Result<void> r) {
                             if (!r) {
                                 Error e = std::move(r).error();
                                 e.message = control::quote(rel_path) + ": " + e.message;
                                 return done(fail(std::move(e)));
                             }
                             log::info("control: invalidated ", control::quote(rel_path));
                             done({});
                         });
    }

    // As invalidate finds the file; then opened for reading (the prefetch
    // reads it as the daemon), under the per-path policy of the file and
    // the directories above it, read along the path just walked. The
    // prefetch runs on the DataPath's own thread; `done` replies.
    void prefetch(const std::string& rel_path, control::CommandDone done) override {
        if (!open())
            return done(closing());
        const InodeRef root = inodes_.root();
        std::vector<cache::PathSettings> chain; // nearest first
        auto fd = open_below(root.fd(), rel_path, data_.has_path_settings() ? &chain : nullptr);
        if (!fd)
            return done(fail(fd.error()));
        struct stat st {};
        if (const int err = backing::stat_fd(fd->get(), st))
            return done(fail_sys(err, control::quote(rel_path)));
        if (!S_ISREG(st.st_mode))
            return done(fail(Errc::BadValue, control::quote(rel_path) + " is not a regular file"));
        auto readable = backing::reopen(fd->get(), O_RDONLY | O_CLOEXEC);
        if (!readable) {
            Error e = std::move(readable).error();
            e.message = control::quote(rel_path) + ": opening it for reading: " + e.message;
            return done(fail(std::move(e)));
        }
        if (data_.has_path_settings())
            if (auto own = data_.path_settings(cache::FileRef{readable->get(), st}))
                chain.insert(chain.begin(), *own);
        const cache::FilePolicy policy = cache::resolve(chain);
        data_.prefetch(cache::FileRef{readable->get(), st}, policy,
                       [rel_path, done = std::move(done)](Result<void> r) {
                           if (!r) {
                               Error e = std::move(r).error();
                               e.message = control::quote(rel_path) + ": " + e.message;
                               return done(fail(std::move(e)));
                           }
                           log::info("control: prefetched ", control::quote(rel_path));
                           done({});
                       });
    }

    // A switch away from writeback writes the dirty data back before it is
    // done, as bcache does. Twice: a write that chose writeback just before
    // the switch (or waited parked for room, which the first flush frees)
    // lands dirty after the first flush began; the second takes it.
    void set(const std::string& key, const std::string& value,
             control::CommandDone done) override {
        if (!open())
            return done(closing());
        std::string name = key;
        std::replace(name.begin(), name.end(), '-', '_');
        if (name == "cache_size")
            return set_cache_size(value, std::move(done));
        auto r = settings_.set(key, value, sink_);
        if (!r)
            return done(fail(r.error()));
        log::info("control: ", r->name, " set to ", r->value);
        if (!r->left_writeback)
            return done({});
        log::info("control: cache_mode left writeback: writing the dirty data back");
        flush([this, done = std::move(done)](Result<void> first) mutable {
            if (!first)
                return done(std::move(first));
            flush(std::move(done));
        });
    }

    // A resize moves data, so it is not a registry change: the option
    // table checks the value, the cache resizes (its superblock keeps the
    // size), and the reply waits for it, from the cache's thread; this
    // FUSE thread and the mount's other requests go on meanwhile.
    void set_cache_size(const std::string& value, control::CommandDone done) {
        config::Config next = settings_.current();
        if (auto r = config::set_option(next, "cache_size", value); !r)
            return done(fail(r.error()));
        // The answer comes from the cache's thread, maybe as the mount goes
        // down: the registry is touched only while the gate is open.
        data_.resize(next.cache_size, [gate = gate_, &settings = settings_,
                                       done = std::move(done)](Result<std::uint64_t> r) {
            if (!r)
                return done(fail(r.error()));
            {
                std::lock_guard lk(gate->mu);
                if (gate->open) {
                    settings.record("cache_size", std::to_string(*r));
                    log::info("control: cache_size set to ",
                              config::option_value(settings.current(), "cache_size").value_or("?"));
                }
            }
            done({});
        });
    }

    void reset_stats(control::CommandDone done) override {
        if (!open())
            return done(closing());
        data_.reset_stats();
        sampler_.reset();
        log::info("control: stats reset");
        done({});
    }

    void flush(control::CommandDone done) override {
        if (!open())
            return done(closing());
        data_.flush(std::move(done));
    }

    // TODO(#8): CacheControl has only a waiting gc_now(); it runs on this
    // FUSE thread. A pass touches the cache device and the index, never the
    // backing, so the wait is bounded.
    void gc(control::CommandDone done) override {
        if (!open())
            return done(closing());
        auto* cc = dynamic_cast<cache::CacheControl*>(&data_);
        if (cc == nullptr)
            return done(fail(Errc::NotSupported, "this mount has no cache (cache_mode=none)"));
        cc->gc_now();
        done({});
    }

private:
    bool open() {
        std::lock_guard lk(gate_->mu);
        return gate_->open;
    }
    static Unexpected closing() { return fail_sys(ESHUTDOWN, "the mount is shutting down"); }

    // `rel` below `root` (an O_PATH fd), with no symlink followed: an O_PATH
    // fd of it. Refuses an absolute path and '..'. With `dirs`, the per-path
    // settings of the directories passed (the root included) go there,
    // nearest first.
    Result<UniqueFd> open_below(int root, const std::string& rel,
                                std::vector<cache::PathSettings>* dirs = nullptr) {
        if (rel.empty() || rel.front() == '/')
            return fail(Errc::BadValue,
                        control::quote(rel) + ": the path must be relative to the mount's root");
        std::vector<std::string_view> parts;
        std::string_view rest = rel;
        while (!rest.empty()) {
            const std::size_t slash = rest.find('/');
            const std::string_view part = rest.substr(0, slash);
            rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
            if (part == "..")
                return fail(Errc::BadValue,
                            control::quote(rel) + ": '..' is not allowed in the path");
            if (!part.empty() && part != ".")
                parts.push_back(part);
        }
        UniqueFd cur;
        int dir = root;
        auto note_dir = [&](int fd) {
            struct stat dst {};
            if (dirs != nullptr && backing::stat_fd(fd, dst) == 0)
                if (auto s = data_.path_settings(cache::FileRef{fd, dst}))
                    dirs->insert(dirs->begin(), *s);
        };
        note_dir(root);
        for (std::size_t i = 0; i < parts.size(); ++i) {
            if (i > 0)
                note_dir(dir);
            const std::string name(parts[i]);
            const int flags =
                O_PATH | O_NOFOLLOW | O_CLOEXEC | (i + 1 < parts.size() ? O_DIRECTORY : 0);
            auto fd = backing::open_at(dir, name.c_str(), flags, 0);
            if (!fd) {
                Error e = std::move(fd).error();
                e.message = control::quote(rel);
                return fail(std::move(e));
            }
            cur = std::move(*fd);
            dir = cur.get();
        }
        if (!cur)
            return fail(Errc::BadValue, control::quote(rel) + " is the mount's root");
        return cur;
    }

    cache::DataPath& data_; // valid while the gate is open
    std::shared_ptr<ControlGate> gate_;
    control::Settings& settings_; // the adapter's: valid while the gate is open
    MountSettingsSink sink_;
    const InodeTable& inodes_; // the adapter's: valid while the gate is open
    control::StatSampler& sampler_; // the adapter's: valid while the gate is open
};

// The one reply to a control write, sent by the commands' completion or by
// an interrupt, whichever claims it first.
class WriteReply {
public:
    // `size` for a reply that is not a write's (setxattr): success is 0.
    static constexpr std::size_t kNoBytes = ~std::size_t{0};

    WriteReply(fuse_req_t req, std::size_t size, std::shared_ptr<ControlGate> gate)
        : req_(req), size_(size), gate_(std::move(gate)) {}

    // Registers for the request's interrupt; false if it was interrupted
    // already (and has been answered with EINTR).
    bool watch_interrupt() {
        fuse_req_interrupt_func(req_, &WriteReply::on_interrupt, this);
        return !answered_.load();
    }

    void send(const Result<void>& r) {
        std::lock_guard lk(gate_->mu);
        if (!gate_->open || answered_.exchange(true))
            return;
        // Unregister, which waits for an interrupt callback that is running
        // now (it holds the request's lock): after this none can see `this`.
        fuse_req_interrupt_func(req_, nullptr, nullptr);
        if (r && size_ == kNoBytes)
            fuse_reply_err(req_, 0);
        else if (r)
            fuse_reply_write(req_, size_);
        else
            fuse_reply_err(req_, errno_of(r.error()));
    }

private:
    // Runs on the FUSE thread that handles the INTERRUPT, with the session
    // alive and the request held. Touches `data` only to claim the reply.
    static void on_interrupt(fuse_req_t req, void* data) {
        if (static_cast<WriteReply*>(data)->answered_.exchange(true))
            return;
        fuse_reply_err(req, EINTR);
    }

    fuse_req_t req_;
    std::size_t size_;
    std::shared_ptr<ControlGate> gate_;
    std::atomic<bool> answered_{false};
};

} // namespace

std::shared_ptr<control::CommandTarget> make_command_target(cache::DataPath& data,
                                                            std::shared_ptr<ControlGate> gate,
                                                            control::Settings& settings,
                                                            KernelTimeouts& timeouts,
                                                            const InodeTable& inodes,
                                                            control::StatSampler& sampler) {
    return std::make_shared<DataPathTarget>(data, std::move(gate), settings, timeouts, inodes,
                                            sampler);
}

bool may_command(fuse_req_t req, const Adapter& a) noexcept {
    if (a.cfg.default_permissions)
        return true; // the kernel checked the mode against the caller already
    const uid_t uid = fuse_req_ctx(req)->uid;
    return uid == 0 || uid == ::geteuid();
}

int open_control(fuse_req_t req, fuse_file_info* fi) {
    Adapter& a = adapter_of(req);
    const int access = fi->flags & O_ACCMODE;
    // O_TRUNC is what `echo flush > .overcache` opens with; there is
    // nothing to truncate, but it needs the right to write.
    const bool writes = access != O_RDONLY || (fi->flags & O_TRUNC) != 0;
    if (writes && (access == O_RDONLY || !may_command(req, a)))
        return EACCES;
    auto fh = std::make_unique<FileHandle>();
    fh->control = true;
    if (access != O_WRONLY)
        fh->control_text = control::render_stats(all_stats(a));
    const FileHandle* key = fh.get();
    fi->fh = reinterpret_cast<std::uint64_t>(key); // NOLINT: returned at release
    fi->direct_io = 1; // size 0 in stat; reads are served from the text, writes whole
    fi->keep_cache = 0;
    a.files.adopt(std::move(fh));
    if (fuse_reply_open(req, fi) != 0)
        a.files.take(key);
    return 0;
}

int read_control(fuse_req_t req, const FileHandle& fh, std::size_t size, off_t off) {
    const std::string& text = fh.control_text;
    if (off < 0 || static_cast<std::size_t>(off) >= text.size()) {
        fuse_reply_buf(req, nullptr, 0);
        return 0;
    }
    // Reply from a copy, never from the handle: once the reply is written
    // the reader may close, and RELEASE (another FUSE thread) frees the
    // handle while this thread is still inside the reply call (ASan checks
    // writev's buffers after the syscall).
    const std::size_t n = std::min(size, text.size() - static_cast<std::size_t>(off));
    std::vector<char>& copy = reply_buffer(n);
    std::memcpy(copy.data(), text.data() + off, n);
    fuse_reply_buf(req, copy.data(), n);
    return 0;
}

int write_control(fuse_req_t req, fuse_bufvec* in_buf) {
    Adapter& a = adapter_of(req);
    const std::size_t size = fuse_buf_size(in_buf);
    if (size > control::kMaxControlWrite) {
        a.commands.record_error("a write of " + std::to_string(size) +
                                " bytes was refused: at most " +
                                std::to_string(control::kMaxControlWrite) + " bytes a write");
        return EINVAL;
    }
    // The bytes may still be in the kernel's pipe (splice): copy them out.
    std::string text(size, '\0');
    fuse_bufvec mem = FUSE_BUFVEC_INIT(size);
    mem.buf[0].mem = text.data();
    const ssize_t got = fuse_buf_copy(&mem, in_buf, FUSE_BUF_NO_SPLICE);
    if (got < 0)
        return static_cast<int>(-got);
    text.resize(static_cast<std::size_t>(got));

    auto reply = std::make_shared<WriteReply>(req, size, a.control_gate);
    if (!reply->watch_interrupt())
        return 0; // the writer is gone before anything ran: run nothing
    try {
        a.commands.run(text, [reply](Result<void> r) { reply->send(r); });
    } catch (const std::bad_alloc&) {
        reply->send(fail_sys(ENOMEM)); // nothing if a reply went out already
    } catch (const std::exception& e) {
        log::error("control write: unexpected exception: ", e.what());
        reply->send(fail_sys(EIO));
    }
    return 0;
}

int control_getxattr(fuse_req_t req, std::string_view key, std::size_t size) {
    Adapter& a = adapter_of(req);
    for (const auto& [k, v] : all_stats(a)) {
        if (k != key)
            continue;
        if (size == 0) {
            fuse_reply_xattr(req, v.size());
        } else if (v.size() > size) {
            return ERANGE;
        } else {
            std::vector<char>& copy = reply_buffer(v.size());
            std::memcpy(copy.data(), v.data(), v.size());
            fuse_reply_buf(req, copy.data(), v.size());
        }
        return 0;
    }
    return ENODATA;
}

int control_listxattr(fuse_req_t req, std::string_view prefix, std::size_t size) {
    Adapter& a = adapter_of(req);
    control::StatLines lines;
    a.settings.add_lines(lines);
    std::string list;
    for (const auto& [k, v] : lines) {
        list += prefix;
        list += k;
        list += '\0';
    }
    if (size == 0) {
        fuse_reply_xattr(req, list.size());
        return 0;
    }
    if (list.size() > size)
        return ERANGE;
    std::vector<char>& copy = reply_buffer(list.size());
    std::memcpy(copy.data(), list.data(), list.size());
    fuse_reply_buf(req, copy.data(), list.size());
    return 0;
}

int control_setxattr(fuse_req_t req, std::string_view key, std::string_view value) {
    Adapter& a = adapter_of(req);
    if (!may_command(req, a))
        return EPERM;
    // `setfattr -v 8M` sends "8M"; a value written with a newline is
    // taken the same.
    if (!value.empty() && value.back() == '\n')
        value.remove_suffix(1);
    if (value.empty() || value.find_first_of(" \t\r\n") != std::string_view::npos) {
        a.commands.record_error("setting " + std::string(key) + ": the value " +
                                control::quote(value) + " is not one word");
        return EINVAL;
    }
    auto reply = std::make_shared<WriteReply>(req, WriteReply::kNoBytes, a.control_gate);
    if (!reply->watch_interrupt())
        return 0;
    try {
        a.commands.run("set " + std::string(key) + " " + std::string(value),
                       [reply](Result<void> r) { reply->send(r); });
    } catch (const std::bad_alloc&) {
        reply->send(fail_sys(ENOMEM));
    } catch (const std::exception& e) {
        log::error("control setxattr: unexpected exception: ", e.what());
        reply->send(fail_sys(EIO));
    }
    return 0;
}

void close_control(Adapter& a) noexcept {
    std::lock_guard lk(a.control_gate->mu);
    a.control_gate->open = false;
}

} // namespace overcache::fuse
