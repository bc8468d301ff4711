// DOC: the option table and the -o parser. Every overcache option is one row
// of kOptions; parse_options() applies rows to a Config. Options that belong
// to the kernel or libfuse are recognised by name and passed through, so that
// fstab lines with rw,nosuid,nodev,... work; anything else is refused with a
// message naming it, before anything is mounted.
#include "overcache/config/config.hpp"
#include "util/printable.hpp"
#include "util/size_text.hpp"

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <sstream>

namespace overcache::config {

const char* to_string(CacheMode m) noexcept {
    switch (m) {
    case CacheMode::writethrough:
        return "writethrough";
    case CacheMode::writearound:
        return "writearound";
    case CacheMode::none:
        return "none";
    case CacheMode::writeback:
        return "writeback";
    }
    return "?";
}

const char* to_string(ReplacementPolicy p) noexcept {
    switch (p) {
    case ReplacementPolicy::lru:
        return "lru";
    case ReplacementPolicy::fifo:
        return "fifo";
    case ReplacementPolicy::random:
        return "random";
    }
    return "?";
}

const char* to_string(BackingCalls b) noexcept {
    switch (b) {
    case BackingCalls::automatic:
        return "auto";
    case BackingCalls::gated:
        return "gated";
    case BackingCalls::direct:
        return "inline";
    }
    return "?";
}

const char* to_string(Coherency c) noexcept {
    switch (c) {
    case Coherency::cto:
        return "cto";
    case Coherency::timeout:
        return "timeout";
    case Coherency::none:
        return "none";
    }
    return "?";
}

const char* to_string(LogLevel l) noexcept {
    switch (l) {
    case LogLevel::debug:
        return "debug";
    case LogLevel::info:
        return "info";
    case LogLevel::warning:
        return "warning";
    case LogLevel::error:
        return "error";
    }
    return "?";
}

namespace {

struct Row {
    OptionInfo info;
    std::function<Result<void>(Config&, const std::string&)> apply;
    // The value as an option would say it: what `get` shows and `set`
    // takes back.
    std::function<std::string(const Config&)> show;
};

std::string show_seconds(double s) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, s);
    return std::string(buf, r.ptr);
}

Result<bool> parse_bool(const std::string& name, const std::string& v) {
    if (v.empty() || v == "1" || v == "yes" || v == "true" || v == "on")
        return true;
    if (v == "0" || v == "no" || v == "false" || v == "off")
        return false;
    return fail(Errc::BadValue, "option " + name + ": '" + printable(v) + "' is not a boolean");
}

Result<std::uint64_t> parse_uint(const std::string& name, const std::string& v) {
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos)
        return fail(Errc::BadValue,
                    "option " + name + ": '" + printable(v) + "' is not a whole number");
    errno = 0;
    const unsigned long long n = std::strtoull(v.c_str(), nullptr, 10);
    if (errno == ERANGE)
        return fail(Errc::BadValue, "option " + name + ": '" + printable(v) + "' is too large");
    return static_cast<std::uint64_t>(n);
}

Result<double> parse_seconds(const std::string& name, const std::string& v) {
    char* end = nullptr;
    errno = 0;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || end == nullptr || *end != '\0' || errno != 0 || !std::isfinite(d) || d < 0 ||
        d > 86400.0 * 365)
        return fail(Errc::BadValue, "option " + name + ": '" + printable(v) +
                                        "' is not a number of seconds (0 or more)");
    return d;
}

Result<std::uint64_t> parse_size_named(const std::string& name, const std::string& v,
                                       std::uint64_t min, std::uint64_t max) {
    auto r = parse_size(v);
    if (!r)
        return fail(Errc::BadValue, "option " + name + ": " + r.error().message);
    if (*r < min || *r > max) {
        std::ostringstream os;
        os << "option " << name << ": " << printable(v) << " is out of range (" << format_size(min)
           << " to " << format_size(max) << ")";
        return fail(Errc::BadValue, os.str());
    }
    return *r;
}

bool is_power_of_two(std::uint64_t v) {
    return v != 0 && (v & (v - 1)) == 0;
}

constexpr std::uint64_t kKiB = 1024, kMiB = kKiB * 1024, kGiB = kMiB * 1024, kTiB = kGiB * 1024;

template <typename T> using Field = T Config::*;

// Row makers: one per value type, so each table row says only what differs.
Row string_row(OptionInfo info, Field<std::string> field, const char* needs) {
    return {info, [info, field, needs](Config& c, const std::string& v) -> Result<void> {
                if (v.empty())
                    return fail(Errc::BadValue,
                                std::string("option ") + info.name + ": needs " + needs);
                c.*field = v;
                return {};
            },
            [field](const Config& c) { return c.*field; }};
}

Row size_row(OptionInfo info, Field<std::uint64_t> field, std::uint64_t min, std::uint64_t max,
             bool power_of_two = false) {
    return {info,
            [info, field, min, max, power_of_two](Config& c, const std::string& v) -> Result<void> {
                auto r = parse_size_named(info.name, v, min, max);
                if (!r)
                    return fail(r.error());
                if (power_of_two && !is_power_of_two(*r))
                    return fail(Errc::BadValue, std::string("option ") + info.name + ": " +
                                                    printable(v) + " is not a power of two");
                c.*field = *r;
                return {};
            },
            [field](const Config& c) { return format_size(c.*field); }};
}

Row uint_row(OptionInfo info, Field<unsigned> field, unsigned min, unsigned max) {
    return {info, [info, field, min, max](Config& c, const std::string& v) -> Result<void> {
                auto r = parse_uint(info.name, v);
                if (!r)
                    return fail(r.error());
                if (*r < min || *r > max)
                    return fail(Errc::BadValue, std::string("option ") + info.name + ": " +
                                                    printable(v) + " is not in " +
                                                    std::to_string(min) + ".." +
                                                    std::to_string(max));
                c.*field = static_cast<unsigned>(*r);
                return {};
            },
            [field](const Config& c) { return std::to_string(c.*field); }};
}

Row seconds_row(OptionInfo info, Field<double> field) {
    return {info, [info, field](Config& c, const std::string& v) -> Result<void> {
                auto r = parse_seconds(info.name, v);
                if (!r)
                    return fail(r.error());
                c.*field = *r;
                return {};
            },
            [field](const Config& c) { return show_seconds(c.*field); }};
}

// `given`, when set, records that the option was said explicitly.
Row bool_row(OptionInfo info, Field<bool> field, Field<bool> given = nullptr) {
    return {info, [info, field, given](Config& c, const std::string& v) -> Result<void> {
                auto r = parse_bool(info.name, v);
                if (!r)
                    return fail(r.error());
                c.*field = *r;
                if (given != nullptr)
                    c.*given = true;
                return {};
            },
            [field](const Config& c) { return std::string(c.*field ? "1" : "0"); }};
}

Result<void> apply_cache_mode(Config& c, const std::string& v) {
    if (v == "writethrough")
        c.cache_mode = CacheMode::writethrough;
    else if (v == "writearound")
        c.cache_mode = CacheMode::writearound;
    else if (v == "none")
        c.cache_mode = CacheMode::none;
    else if (v == "writeback")
        c.cache_mode = CacheMode::writeback;
    else
        return fail(Errc::BadValue,
                    "option cache_mode: '" + printable(v) +
                        "' is not one of writethrough, writearound, writeback, none");
    return {};
}

Result<void> apply_backing_calls(Config& c, const std::string& v) {
    if (v == "auto")
        c.backing_calls = BackingCalls::automatic;
    else if (v == "gated")
        c.backing_calls = BackingCalls::gated;
    else if (v == "inline")
        c.backing_calls = BackingCalls::direct;
    else
        return fail(Errc::BadValue, "option backing_calls: '" + printable(v) +
                                        "' is not one of auto, gated, inline");
    return {};
}

Result<void> apply_coherency(Config& c, const std::string& v) {
    if (v == "cto")
        c.coherency = Coherency::cto;
    else if (v == "timeout")
        c.coherency = Coherency::timeout;
    else if (v == "none")
        c.coherency = Coherency::none;
    else
        return fail(Errc::BadValue, "option coherency: '" + printable(v) +
                                        "' is not one of cto, timeout, none");
    return {};
}

Result<void> apply_replacement_policy(Config& c, const std::string& v) {
    if (v == "lru")
        c.cache_replacement_policy = ReplacementPolicy::lru;
    else if (v == "fifo")
        c.cache_replacement_policy = ReplacementPolicy::fifo;
    else if (v == "random")
        c.cache_replacement_policy = ReplacementPolicy::random;
    else
        return fail(Errc::BadValue, "option cache_replacement_policy: '" + printable(v) +
                                        "' is not one of lru, fifo, random");
    return {};
}

Result<void> apply_log_level(Config& c, const std::string& v) {
    if (v == "debug")
        c.log_level = LogLevel::debug;
    else if (v == "info")
        c.log_level = LogLevel::info;
    else if (v == "warning")
        c.log_level = LogLevel::warning;
    else if (v == "error")
        c.log_level = LogLevel::error;
    else
        return fail(Errc::BadValue, "option log_level: '" + printable(v) +
                                        "' is not one of debug, info, warning, error");
    return {};
}

const std::vector<Row>& rows() {
    using T = OptType;
    static const std::vector<Row> table = {
        string_row({"cache", T::string, "see FILES",
                    "directory holding the cache: the data file and the index"},
                   &Config::cache_dir, "a directory"),
        string_row({"cache_dev", T::string, "CACHE/data",
                    "block device or file that holds the cached data instead of CACHE/data"},
                   &Config::cache_dev, "a path"),
        size_row({"cache_size", T::size, "see FILES",
                  "size of the cache data file (K, M, G, T suffixes), in whole buckets; "
                  "a live setting: `overcache set MOUNTPOINT cache_size SIZE` grows or shrinks "
                  "a mounted cache, keeping what still fits (dirty data always); kept in the "
                  "cache, and given at mount it resizes the cache first"},
                 &Config::cache_size, 16 * kMiB, 1024 * kTiB),
        size_row({"cache_min_free", T::size, "1G",
                  "the cache data file takes no new space that would leave its filesystem with "
                  "less free than this, and gives freed space back while below it; 0 off"},
                 &Config::cache_min_free, 0, 1024 * kTiB),
        size_row({"metadata_max", T::size, "0",
                  "the most the names, listings and attributes of the backing kept in the index "
                  "may take; past it those read longest ago are dropped (pinned trees stay); "
                  "0: an eighth of cache_size, at least 16M"},
                 &Config::metadata_max, 0, 1024 * kTiB),
        size_row({"bucket_size", T::size, "1M",
                  "unit of cache allocation and reclaim; a power of two from 64K to 64M"},
                 &Config::bucket_size, 64 * kKiB, 64 * kMiB, true),
        size_row({"fill_size", T::size, "256K",
                  "a miss reads the backing in aligned chunks of this size; a power of two from "
                  "4K to bucket_size; a change applies to the next misses, what is cached "
                  "stays"},
                 &Config::fill_size, 4 * kKiB, 64 * kMiB, true),
        size_row({"sequential_cutoff", T::size, "4M",
                  "a stream reading sequentially past this many bytes bypasses the cache; 0 "
                  "never"},
                 &Config::sequential_cutoff, 0, 1024 * kTiB),
        uint_row({"promote_after_hits", T::uint, "1",
                  "a missed range is cached only once it has been missed this many times "
                  "lately (1 to 255; 1: at the first miss), so one-off scans do not evict the "
                  "working set"},
                 &Config::promote_after_hits, 1, 255),
        uint_row({"congested_read_threshold_us", T::uint, "2000",
                  "while cache device reads take longer than this (microseconds, a smoothed "
                  "mean per 64K) read misses go to the backing without filling the cache; hits "
                  "are still read from it; 0 never (0 to 10000000)"},
                 &Config::congested_read_threshold_us, 0, 10'000'000),
        uint_row({"congested_write_threshold_us", T::uint, "20000",
                  "while cache device writes take longer than this (microseconds, a smoothed "
                  "mean per 64K) writes and read misses go around the cache (writeback keeps "
                  "writes over dirty data in it); 0 never (0 to 10000000)"},
                 &Config::congested_write_threshold_us, 0, 10'000'000),
        {{"cache_mode", T::mode, "writethrough", "writethrough, writearound, writeback or none"},
         apply_cache_mode,
         [](const Config& c) { return std::string(to_string(c.cache_mode)); }},
        {{"cache_replacement_policy", T::policy, "lru",
          "which clean buckets GC reclaims first: lru (least recently used), fifo (filled "
          "longest ago, whatever their hits) or random"},
         apply_replacement_policy,
         [](const Config& c) { return std::string(to_string(c.cache_replacement_policy)); }},
        bool_row({"reformat", T::flag, "off",
                  "format the cache even if it holds another backing's, an unknown version's or "
                  "a damaged cache; its contents are lost"},
                 &Config::reformat),
        bool_row({"discard_dirty", T::flag, "off",
                  "let reformat, or replacing a cache that belongs to another backing, throw away "
                  "dirty data (writes the backing does not have yet); without it both are refused"},
                 &Config::discard_dirty),
        size_row({"block_cache_size", T::size, "32M",
                  "memory for the index's block cache (bounds the daemon's resident set)"},
                 &Config::block_cache_size, 1 * kMiB, 64 * kGiB),
        uint_row({"gc_low_percent", T::uint, "5",
                  "reclaim starts when free buckets fall below this percentage"},
                 &Config::gc_low_percent, 1, 50),
        uint_row({"gc_high_percent", T::uint, "10",
                  "reclaim stops when free buckets reach this percentage"},
                 &Config::gc_high_percent, 2, 90),
        uint_row({"writeback_percent", T::uint, "10",
                  "writeback: share of the cache that dirty data may hold before writeback runs "
                  "at full speed (0 to 100; 0 always at full speed)"},
                 &Config::writeback_percent, 0, 100),
        seconds_row({"writeback_delay", T::seconds, "30",
                     "writeback: seconds a dirty extent ages before it is written to the backing"},
                    &Config::writeback_delay_s),
        size_row({"writeback_rate_minimum", T::size, "1M",
                  "writeback: bytes per second written back while dirty data is below its share "
                  "(4K to 1T)"},
                 &Config::writeback_rate_minimum, 4 * kKiB, 1 * kTiB),
        bool_row({"writeback_running", T::boolean, "on",
                  "writeback: write dirty data back to the backing; off pauses it"},
                 &Config::writeback_running),
        seconds_row({"writeback_wait_max", T::seconds, "10",
                     "writeback: seconds a write waits for cache space before it goes around the "
                     "cache to the backing (0: at once)"},
                    &Config::writeback_wait_max_s),
        bool_row({"fsync_to_backing", T::boolean, "off",
                  "writeback: fsync writes the file's dirty data to the backing and syncs it "
                  "there, not only to the cache"},
                 &Config::fsync_to_backing),
        bool_row({"kernel_writeback_cache", T::boolean, "off",
                  "writeback: the kernel buffers writes in its page cache and sends them in "
                  "batches; errors then show at fsync and close"},
                 &Config::kernel_writeback_cache),
        bool_row({"flush_on_unmount", T::boolean, "off",
                  "writeback: a clean unmount first writes all dirty data back to the backing"},
                 &Config::flush_on_unmount),
        seconds_row({"attr_timeout", T::seconds, "1",
                     "seconds the kernel may cache attributes; lower it over NFS shared with "
                     "other clients"},
                    &Config::attr_timeout),
        seconds_row({"entry_timeout", T::seconds, "1", "seconds the kernel may cache name lookups"},
                    &Config::entry_timeout),
        seconds_row({"negative_timeout", T::seconds, "0",
                     "seconds the kernel may cache that a name does not exist"},
                    &Config::negative_timeout),
        seconds_row({"backing_timeout", T::seconds, "5",
                     "seconds a call into the backing may take before the backing counts as "
                     "offline: cached names, attributes and data are then served read-only, and "
                     "the rest fails at once, until it answers again (0.1 to 3600)"},
                    &Config::backing_timeout_s),
        bool_row({"offline_ok", T::boolean, "on",
                  "serve what the cache holds while the backing is offline; off: requests wait "
                  "for the backing however long it takes"},
                 &Config::offline_ok),
        seconds_row({"dir_settle", T::seconds, "2",
                     "seconds a directory must have gone unchanged before a listing of it is "
                     "kept in the index; above the backing's timestamp granularity (FAT: 2, "
                     "ext3: 1) and any clock skew to an NFS server (0 to 3600)"},
                    &Config::dir_settle_s),
        {{"coherency", T::mode, "cto",
          "when kept names and attributes are used without asking the backing: cto: never "
          "(checked at open and after attr_timeout/entry_timeout); timeout: within "
          "acregmin..acregmax (files) and acdirmin..acdirmax (directories) seconds, longer for "
          "files unchanged for longer; none: until changed through the mount or invalidated"},
         apply_coherency,
         [](const Config& c) { return std::string(to_string(c.coherency)); }},
        seconds_row({"acregmin", T::seconds, "3",
                     "coherency=timeout: seconds a file's attributes are used at least"},
                    &Config::acregmin_s),
        seconds_row({"acregmax", T::seconds, "60",
                     "coherency=timeout: seconds a file's attributes are used at most"},
                    &Config::acregmax_s),
        seconds_row({"acdirmin", T::seconds, "30",
                     "coherency=timeout: seconds a directory's attributes and names are used "
                     "at least"},
                    &Config::acdirmin_s),
        seconds_row({"acdirmax", T::seconds, "60",
                     "coherency=timeout: seconds a directory's attributes and names are used "
                     "at most"},
                    &Config::acdirmax_s),
        bool_row({"watch_backing", T::boolean, "on",
                  "on a backing on a local filesystem (ext4, xfs, btrfs, tmpfs, ...): watch it "
                  "for changes (fanotify; needs CAP_SYS_ADMIN), and use kept names and "
                  "attributes that no change has touched since they were seen without asking "
                  "the backing, under cto and timeout; stores through a shared mmap of a "
                  "backing file are seen once its writer closes it. off: the coherency rule "
                  "alone decides"},
                 &Config::watch_backing),
        {{"backing_calls", T::mode, "auto",
          "gated: calls into the backing wait at most backing_timeout on threads of their own; "
          "inline: they run on the request's thread (a local disk's calls cost less than the "
          "hand-over); auto: inline for local disk filesystems, gated for the rest (NFS, SMB, "
          "FUSE, ...)"},
         apply_backing_calls,
         [](const Config& c) { return std::string(to_string(c.backing_calls)); }},
        bool_row({"default_permissions", T::boolean, "on",
                  "let the kernel check permissions against the backing's modes"},
                 &Config::default_permissions),
        bool_row({"allow_other", T::boolean, "on as root",
                  "let users other than the mounting one use the mount"},
                 &Config::allow_other, &Config::allow_other_given),
        bool_row({"allow_suid", T::boolean, "off",
                  "honour set-user-ID and set-group-ID bits of the backing's files (the mount "
                  "is nosuid otherwise)"},
                 &Config::allow_suid),
        bool_row({"allow_dev", T::boolean, "off",
                  "let device nodes on the backing be opened through the mount (nodev "
                  "otherwise)"},
                 &Config::allow_dev),
        uint_row({"max_threads", T::uint, "16", "threads serving requests at most (1 to 256)"},
                 &Config::max_threads, 1, 256),
        uint_row({"max_inodes", T::uint, "131072",
                  "past this many files known to the kernel (about a kilobyte of the daemon's "
                  "memory each), the kernel is asked to forget the files not used lately; "
                  "directories are kept, and nothing is dropped while something is mounted "
                  "below the mountpoint (0 to 100000000; 0: never)"},
                 &Config::max_inodes, 0, 100000000),
        {{"log_level", T::level, "info",
          "the least severe messages logged: debug, info, warning or error"},
         apply_log_level,
         [](const Config& c) { return std::string(to_string(c.log_level)); }},
    };
    return table;
}

// Options of the kernel, mount(8) and libfuse that pass through unchanged.
bool is_passthrough(const std::string& name, bool has_value) {
    static const char* const kFlags[] = {
        "ro",         "rw",           "suid",        "nosuid",        "dev",
        "nodev",      "exec",         "noexec",      "atime",         "noatime",
        "relatime",   "norelatime",   "strictatime", "nostrictatime", "diratime",
        "nodiratime", "lazytime",     "nolazytime",  "sync",          "async",
        "dirsync",    "auto_unmount", "allow_root",  "blkdev",        "clone_fd",
        "user",       "nouser",       "users",       "auto",          "noauto",
        "_netdev",    "nofail",       "defaults",    "silent",        "loud",
    };
    static const char* const kValued[] = {
        "fsname",          "subtype", "max_read",        "blksize", "x-systemd.requires",
        "x-systemd.after", "comment", "max_idle_threads"};
    if (name.rfind("x-", 0) == 0)
        return true; // x-systemd.*, x-gvfs-*: for mount(8) and systemd, with or without values
    if (!has_value)
        return std::any_of(std::begin(kFlags), std::end(kFlags),
                           [&](const char* f) { return name == f; });
    return std::any_of(std::begin(kValued), std::end(kValued),
                       [&](const char* f) { return name == f; });
}

// Options that mount(8) keeps for itself and libfuse must not see.
bool is_mount_only(const std::string& name) {
    return name == "user" || name == "nouser" || name == "users" || name == "auto" ||
           name == "noauto" || name == "_netdev" || name == "nofail" || name == "defaults" ||
           name == "comment" || name.rfind("x-", 0) == 0;
}

std::vector<std::string> split_commas(const std::string& list) {
    std::vector<std::string> out;
    std::string cur;
    for (char ch : list) {
        if (ch == ',') {
            out.push_back(cur);
            cur.clear();
        } else {
            cur += ch;
        }
    }
    out.push_back(cur);
    return out;
}

} // namespace

const std::vector<OptionInfo>& option_table() {
    static const std::vector<OptionInfo> infos = [] {
        std::vector<OptionInfo> v;
        for (const auto& r : rows())
            v.push_back(r.info);
        return v;
    }();
    return infos;
}

Result<std::uint64_t> parse_size(const std::string& text) {
    if (text.empty())
        return fail(Errc::BadValue, "empty size");
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9')
        ++digits;
    if (digits == 0)
        return fail(Errc::BadValue,
                    "'" + printable(text) + "' is not a size (like 4096, 512K, 4M, 1G)");
    // A decimal fraction: "0.5G", "1.25T".
    std::size_t frac_end = digits;
    if (frac_end < text.size() && text[frac_end] == '.') {
        ++frac_end;
        while (frac_end < text.size() && text[frac_end] >= '0' && text[frac_end] <= '9')
            ++frac_end;
        if (frac_end == digits + 1)
            return fail(Errc::BadValue,
                        "'" + printable(text) + "' is not a size (like 4096, 512K, 0.5G)");
    }
    std::string suffix = text.substr(frac_end);
    std::uint64_t mult = 1;
    if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b') && suffix.size() > 1)
        suffix.pop_back(); // "4MB", "4MiB" -> "4M", "4Mi"
    if (suffix.size() == 2 && suffix[1] == 'i')
        suffix.pop_back();
    if (suffix.empty() || suffix == "B" || suffix == "b")
        mult = 1;
    else if (suffix == "K" || suffix == "k")
        mult = kKiB;
    else if (suffix == "M" || suffix == "m")
        mult = kMiB;
    else if (suffix == "G" || suffix == "g")
        mult = kGiB;
    else if (suffix == "T" || suffix == "t")
        mult = kTiB;
    else
        return fail(Errc::BadValue,
                    "'" + printable(text) + "' has an unknown suffix (use K, M, G or T)");
    errno = 0;
    const unsigned long long n = std::strtoull(text.substr(0, digits).c_str(), nullptr, 10);
    if (errno == ERANGE || (n != 0 && mult > UINT64_MAX / n))
        return fail(Errc::BadValue, "'" + printable(text) + "' is too large");
    std::uint64_t bytes = static_cast<std::uint64_t>(n) * mult;
    if (frac_end > digits) {
        if (mult == 1)
            return fail(Errc::BadValue, "'" + printable(text) +
                                            "': a byte count has no fraction (use a suffix: 0.5G)");
        // mult * F / 10^d exactly (F the d digits after the point), in
        // parts that cannot overflow: F < 10^d, mult <= 2^40, d <= 9.
        const std::size_t d = frac_end - digits - 1;
        if (d > 9)
            return fail(Errc::BadValue, "'" + printable(text) + "' has more than 9 decimals");
        std::uint64_t pow10 = 1;
        for (std::size_t i = 0; i < d; ++i)
            pow10 *= 10;
        const std::uint64_t f = std::strtoull(text.substr(digits + 1, d).c_str(), nullptr, 10);
        const std::uint64_t add = f * (mult / pow10) + f * (mult % pow10) / pow10;
        if (bytes > UINT64_MAX - add)
            return fail(Errc::BadValue, "'" + printable(text) + "' is too large");
        bytes += add;
    }
    return bytes;
}

std::string format_size(std::uint64_t bytes) {
    return size_text(bytes);
}

Result<Parsed> parse_options(const std::vector<std::string>& option_lists) {
    Parsed out;
    for (const auto& list : option_lists) {
        for (const auto& item : split_commas(list)) {
            if (item.empty())
                continue;
            const auto eq = item.find('=');
            const bool has_value = eq != std::string::npos;
            const std::string raw_name = has_value ? item.substr(0, eq) : item;
            const std::string value = has_value ? item.substr(eq + 1) : std::string();
            // Our own options accept '-' for '_', as mergerfs does.
            std::string name = raw_name;
            std::replace(name.begin(), name.end(), '-', '_');

            auto match = [&](const std::string& n) {
                return std::find_if(rows().begin(), rows().end(),
                                    [&](const Row& r) { return n == r.info.name; });
            };
            auto it = match(name);
            std::string applied_value = value;
            if (it == rows().end() && !has_value && name.rfind("no", 0) == 0) {
                // "noallow_other", "noreformat": the negation of a boolean.
                auto neg = match(name.substr(2));
                if (neg != rows().end() &&
                    (neg->info.type == OptType::boolean || neg->info.type == OptType::flag)) {
                    it = neg;
                    applied_value = "0";
                }
            }
            if (it != rows().end()) {
                const bool boolean =
                    it->info.type == OptType::boolean || it->info.type == OptType::flag;
                if (!has_value && !boolean)
                    return fail(Errc::BadValue, std::string("option ") + it->info.name +
                                                    " needs a value (" + it->info.name + "=...)");
                auto r = it->apply(out.config, applied_value);
                if (!r)
                    return fail(std::move(r).error());
                if (std::find(out.given.begin(), out.given.end(), it->info.name) ==
                    out.given.end())
                    out.given.emplace_back(it->info.name);
                continue;
            }
            if (is_passthrough(raw_name, has_value)) {
                if (!is_mount_only(raw_name))
                    out.fuse_options.push_back(item);
                continue;
            }
            return fail(Errc::BadValue,
                        "unknown option '" + printable(item) + "' (see overcache --help)");
        }
    }
    if (auto r = check_config(out.config); !r)
        return fail(std::move(r).error());
    return out;
}

Result<void> check_config(const Config& c) {
    if (c.gc_low_percent >= c.gc_high_percent)
        return fail(Errc::BadValue, "option gc_low_percent (" + std::to_string(c.gc_low_percent) +
                                        ") must be below gc_high_percent (" +
                                        std::to_string(c.gc_high_percent) + ")");
    if (c.fill_size > c.bucket_size)
        return fail(Errc::BadValue, "option fill_size must not exceed bucket_size");
    if (c.backing_timeout_s < 0.1 || c.backing_timeout_s > 3600)
        return fail(Errc::BadValue, "option backing_timeout must be from 0.1 to 3600 seconds");
    if (c.dir_settle_s < 0 || c.dir_settle_s > 3600)
        return fail(Errc::BadValue, "option dir_settle must be from 0 to 3600 seconds");
    for (const auto& [name, v] : {std::pair{"acregmin", c.acregmin_s}, {"acregmax", c.acregmax_s},
                                  {"acdirmin", c.acdirmin_s}, {"acdirmax", c.acdirmax_s}})
        if (v < 0 || v > 86400)
            return fail(Errc::BadValue,
                        std::string("option ") + name + " must be from 0 to 86400 seconds");
    if (c.acregmin_s > c.acregmax_s)
        return fail(Errc::BadValue, "option acregmin must not exceed acregmax");
    if (c.acdirmin_s > c.acdirmax_s)
        return fail(Errc::BadValue, "option acdirmin must not exceed acdirmax");
    return {};
}

const OptionInfo* find_option(std::string_view name) {
    const auto& t = option_table();
    auto it = std::find_if(t.begin(), t.end(), [&](const OptionInfo& i) { return name == i.name; });
    return it == t.end() ? nullptr : &*it;
}

bool is_live(std::string_view name) {
    // Read by the I/O paths at each use (atomics), or re-applied by their
    // owner on a change; cache_size is resized by the cache itself (its
    // superblock, not the stored settings, keeps it). Not here: what fixes
    // the cache's layout or memory (cache, cache_dev, bucket_size,
    // block_cache_size, cache_min_free), what the kernel fixed at mount
    // (permissions, allow_*, kernel_writeback_cache, max_threads), and the
    // one-shot format flags.
    static constexpr std::string_view kLive[] = {
        "sequential_cutoff",        "promote_after_hits", "cache_mode",
        "cache_replacement_policy", "gc_low_percent",     "gc_high_percent",
        "writeback_percent",        "writeback_delay",    "writeback_rate_minimum",
        "writeback_running",        "writeback_wait_max", "fsync_to_backing",
        "flush_on_unmount",         "attr_timeout",       "entry_timeout",
        "negative_timeout",         "log_level",          "fill_size",
        "congested_read_threshold_us", "congested_write_threshold_us", "cache_size",
    };
    return std::find(std::begin(kLive), std::end(kLive), name) != std::end(kLive);
}

Result<void> set_option(Config& c, std::string_view raw_name, const std::string& value) {
    std::string name(raw_name);
    std::replace(name.begin(), name.end(), '-', '_');
    auto it = std::find_if(rows().begin(), rows().end(),
                           [&](const Row& r) { return name == r.info.name; });
    if (it == rows().end())
        return fail(Errc::BadValue, "unknown setting '" + name + "'");
    Config next = c;
    if (auto r = it->apply(next, value); !r)
        return fail(std::move(r).error());
    if (auto r = check_config(next); !r)
        return fail(std::move(r).error());
    c = std::move(next);
    return {};
}

std::optional<std::string> option_value(const Config& c, std::string_view name) {
    auto it = std::find_if(rows().begin(), rows().end(),
                           [&](const Row& r) { return name == r.info.name; });
    if (it == rows().end())
        return std::nullopt;
    return it->show(c);
}

} // namespace overcache::config
