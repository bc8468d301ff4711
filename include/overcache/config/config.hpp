// The settings of one mount, as parsed from -o options. One table
// (src/config/options.cpp) defines every option: its name, type, bounds,
// default and help; the CLI, the man page test and (later) the control
// file all read that table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "overcache/util/result.hpp"

namespace overcache::config {

enum class CacheMode { writethrough, writearound, none, writeback };
const char* to_string(CacheMode m) noexcept;
// The least severe messages logged.
enum class LogLevel { debug, info, warning, error };
const char* to_string(LogLevel l) noexcept;
// Which clean buckets GC reclaims first (bcache's cache_replacement_policy):
// the least recently used, the one filled longest ago, or any.
enum class ReplacementPolicy { lru, fifo, random };
const char* to_string(ReplacementPolicy p) noexcept;
// Where the request handlers' calls into the backing run: through the
// backing gate with its deadline, on the request's own thread, or chosen
// by the backing's filesystem type (gated unless it is a local disk's).
enum class BackingCalls { automatic, gated, direct };
const char* to_string(BackingCalls b) noexcept;
// When names and attributes the mount kept are used without asking the
// backing: cto (never: checked at open and after the kernel's timeouts),
// timeout (within an interval that grows with the file's age, as NFS's
// attribute cache), none (until a change through the mount or an
// invalidate).
enum class Coherency { cto, timeout, none };
const char* to_string(Coherency c) noexcept;

struct Config {
    // Kernel caching of names and attributes (seconds).
    double attr_timeout = 1.0;
    double entry_timeout = 1.0;
    double negative_timeout = 0.0;
    // Permissions: checked by the kernel against the backing's modes.
    bool default_permissions = true;
    bool allow_other = true; // applied only when running as root unless given explicitly
    bool allow_other_given = false;
    // The mount is nosuid,nodev unless these say otherwise, however it is
    // started: mount.fuse3 adds "suid,dev" to every root mount, so the
    // generic suid and dev options cannot say what the user meant.
    bool allow_suid = false;
    bool allow_dev = false;

    // Cache location. Empty cache_dir means the default location.
    std::string cache_dir;
    std::string cache_dev;          // block device or file for the data; default DIR/data
    std::uint64_t cache_size = 0;   // bytes; 0 means the default size rule
    // A cache data file takes no new space that would leave its filesystem
    // with fewer free bytes than this (0: no floor). 1 GiB, fixed rather than
    // a share of the disk: it is what a system needs to keep working (logs,
    // package updates, a user's save), whatever the disk's size, and costs
    // a large disk's cache next to nothing. Like cachefilesd's bstop.
    std::uint64_t cache_min_free = 1ull << 30;
    // The most the names and attributes kept in the index may take; 0: an
    // eighth of cache_size, at least 16 MiB.
    std::uint64_t metadata_max = 0;
    std::uint64_t bucket_size = 1u << 20;
    std::uint64_t fill_size = 256u << 10;
    std::uint64_t sequential_cutoff = 4u << 20;
    // A missed range is cached once it has been missed this many times
    // lately (admission filter); 1: at the first miss.
    unsigned promote_after_hits = 1;
    // While the cache device's smoothed read (write) latency is above this
    // many microseconds, I/O bypasses it to the backing, as bcache's
    // congested_*_threshold_us; 0: never. bcache's defaults.
    unsigned congested_read_threshold_us = 2000;
    unsigned congested_write_threshold_us = 20000;
    std::uint64_t block_cache_size = 32u << 20; // RocksDB block cache
    unsigned gc_low_percent = 5;  // reclaim starts when free buckets fall below this
    unsigned gc_high_percent = 10; // ... and stops when they reach this
    CacheMode cache_mode = CacheMode::writethrough;
    ReplacementPolicy cache_replacement_policy = ReplacementPolicy::lru;
    bool reformat = false;
    // Refusing to lose data the backing does not have is the default:
    // reformat, or a cache that belongs to another backing, is refused while
    // it holds dirty data unless this is given.
    bool discard_dirty = false;

    // Writeback (cache_mode=writeback); names and meanings as bcache's.
    // Share of the cache dirty data may hold before writeback runs at full
    // speed; 0: always at full speed.
    unsigned writeback_percent = 10;
    // A dirty extent ages this long before it is written back.
    double writeback_delay_s = 30;
    // Bytes per second written back while dirty data is below its share.
    std::uint64_t writeback_rate_minimum = 1u << 20;
    bool writeback_running = true; // false: writeback paused
    bool fsync_to_backing = false; // fsync writes the file back and syncs the backing
    bool flush_on_unmount = false; // a clean unmount writes back all dirty data first
    // In writeback mode the kernel buffers writes in its page cache as well
    // and sends them in batches (FUSE's writeback cache).
    bool kernel_writeback_cache = false;
    // A write waits this long for cache space, then goes around the cache.
    double writeback_wait_max_s = 10;


    // Threads serving FUSE requests at most.
    unsigned max_threads = 16;
    // Past this many inodes known to the kernel, the names of files not
    // used lately are dropped from its caches (fuse/inode_trimmer.hpp); 0 never.
    unsigned max_inodes = 131072;

    // A call into the backing that takes longer than this (seconds) marks
    // it offline: cached names, attributes and data are served read-only
    // until it answers again. offline_ok=0 waits for it instead.
    double backing_timeout_s = 5;
    bool offline_ok = true;
    BackingCalls backing_calls = BackingCalls::automatic;
    // Seconds a directory must have gone unchanged before a reading of it
    // is kept as a whole listing: more than the backing's timestamp
    // granularity, plus the clock skew to an NFS server.
    double dir_settle_s = 2;
    Coherency coherency = Coherency::cto;
    // A backing on a local filesystem is watched for changes (fanotify):
    // kept names and attributes no change has touched since they were seen
    // are used without asking it, in every coherency mode.
    bool watch_backing = true;
    // coherency=timeout: a file's attributes (a directory's, with its
    // names) are used for a tenth of the time since it last changed, but
    // at least ac*min and at most ac*max seconds (NFS's defaults).
    double acregmin_s = 3;
    double acregmax_s = 60;
    double acdirmin_s = 30;
    double acdirmax_s = 60;
    LogLevel log_level = LogLevel::info;
};

enum class OptType { flag, boolean, size, uint, seconds, string, mode, policy, level };

struct OptionInfo {
    const char* name;
    OptType type;
    const char* default_text; // as shown in --help and the man page
    const char* help;
};

// Every overcache option, in the order --help and the man page list them.
const std::vector<OptionInfo>& option_table();

struct Parsed {
    Config config;
    // Options that are not overcache's but the kernel's or libfuse's
    // (ro, nosuid, fsname=..., ...), to be handed to fuse_session_new.
    std::vector<std::string> fuse_options;
    // The overcache options the lists named, each once, as in the table:
    // they win over settings stored in the cache by a runtime `set`.
    std::vector<std::string> given;
};

// Parses the comma-separated lists given with -o (in order; later wins).
// An unknown option or a bad value fails with a message naming it.
Result<Parsed> parse_options(const std::vector<std::string>& option_lists);

// The checks between options (gc_low_percent below gc_high_percent, ...).
Result<void> check_config(const Config& c);

const OptionInfo* find_option(std::string_view name);
// Whether a mounted overcache takes a new value of the option (the control
// file's `set`, `overcache set`); the others are fixed at mount.
bool is_live(std::string_view name);
// Applies one option by name ('-' taken for '_') to `c`, with the same
// parsing and checks as -o; on failure `c` is unchanged.
Result<void> set_option(Config& c, std::string_view name, const std::string& value);
// The option's value in `c` as -o would say it ("4M", "writeback", "0.5",
// "1"); nullopt for an unknown name.
std::optional<std::string> option_value(const Config& c, std::string_view name);

// "4M", "1G", "512K", "4096", "0.5G" -> bytes. Suffixes are binary
// (K = 1024); a fraction needs one and is rounded down to a whole byte.
Result<std::uint64_t> parse_size(const std::string& text);
// Bytes in the largest binary unit that divides them: "64M", "1536K", "4097".
std::string format_size(std::uint64_t bytes);

} // namespace overcache::config
