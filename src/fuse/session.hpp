// The FUSE session of one mount: builds the adapter state, creates the
// libfuse low-level session with overcache's handlers, mounts it, runs the
// multithreaded request loop, and unmounts. Knows nothing of daemonizing or
// the CLI (daemon.cpp) and nothing of caching (the DataPath it is given).
#pragma once

#include "overcache/cache/data_path.hpp"
#include "overcache/config/config.hpp"
#include "overcache/util/result.hpp"
#include "util/unique_fd.hpp"

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

struct fuse_session;

namespace overcache::fuse {

struct Adapter;

struct LoopOptions {
    bool single_thread = false;
    bool clone_fd = true;
    unsigned max_threads = 16;
    int max_idle_threads = -1; // libfuse's default when negative
};

class Session {
public:
    // `root_fd`: O_PATH fd on the backing root. `fuse_options` go to
    // fuse_session_new as one -o list each; libfuse refuses the ones it
    // does not know (with a message on stderr).
    static Result<std::unique_ptr<Session>> create(const config::Config& cfg, cache::DataPath& data,
                                                   UniqueFd root_fd,
                                                   const std::vector<std::string>& fuse_options,
                                                   bool debug);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Mounts and installs the signal handlers that end run().
    Result<void> mount(const std::string& mountpoint);
    // Serves requests until the file system is unmounted or SIGTERM, SIGINT
    // or SIGHUP arrives, then unmounts.
    Result<void> run(const LoopOptions& opts);
    // Unmounts if mounted; safe to call more than once.
    void unmount() noexcept;

    // Read-ahead to raise, as a /sys/class/bdi/.../read_ahead_kb path,
    // written once the kernel has finished INIT. Call before run().
    void set_readahead_path(std::string path);

    // Inodes the kernel currently holds references to (root included).
    std::size_t inode_count() const;

private:
    Session() = default;
    std::unique_ptr<Adapter> adapter_;
    fuse_session* se_ = nullptr;
    bool mounted_ = false;
    bool signals_ = false; // libfuse's SIGTERM/SIGINT/SIGHUP handlers are ours
};

// Escapes ',' and '\' for a libfuse -o list (fsname=/path,with,commas).
std::string escape_option_value(const std::string& v);

} // namespace overcache::fuse
