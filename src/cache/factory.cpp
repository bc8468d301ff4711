// DOC: chooses and builds the DataPath of a mount. cache_mode=none is the
// passthrough and does not open (or create) a cache at all; writeback is
// refused until it exists; writethrough and writearound open the cache
// device (formatting a new one, refusing a foreign or damaged one) at
// cache= or the default location, and start the caching path.
//
// Default location: /var/cache/overcache/<escaped mountpoint> for root,
// $XDG_CACHE_HOME/overcache/<...> (else ~/.cache/overcache/<...>) for other
// users; escape_path() keeps the name typable. Default size: see
// store::default_cache_size() (10% of the size of the filesystem holding
// the cache, clamped to [64 MiB, 64 GiB], never more than half of it), fixed
// when the cache is formatted. The data file is sparse and grows as buckets
// are used, stopping at cache_min_free.
#include "overcache/cache/factory.hpp"

#include "overcache/cache/caching_path.hpp"
#include "overcache/store/cache_device.hpp"
#include "util/log.hpp"
#include "util/size_text.hpp"
#include "util/unique_fd.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

namespace overcache::cache {

namespace {

enum class Naming {
    typable, // "/" -> "-", "-" -> "--", %XX: "srv-my--data-fast"
    // How earlier versions named it (systemd-escape --path): "mnt-a\\x2db".
    // A cache there is still found, so an upgrade does not orphan its data.
    legacy,
};

bool kept_as_is(unsigned char c, Naming n) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
        c == ':' || c == '.')
        return true;
    return n == Naming::typable && (c == '+' || c == ',' || c == '@' || c == '=');
}

// Leading and trailing slashes go and runs of them count as one; a leading
// "." is escaped (no hidden name).
std::string name_for(const std::string& path, Naming n) {
    std::size_t b = 0, e = path.size();
    while (b < e && path[b] == '/')
        ++b;
    while (e > b && path[e - 1] == '/')
        --e;
    if (b == e)
        return "-";
    std::string out;
    for (std::size_t i = b; i < e; ++i) {
        const unsigned char c = static_cast<unsigned char>(path[i]);
        char hex[5];
        if (c == '/') {
            if (path[i - 1] != '/')
                out += '-';
        } else if (c == '-' && n == Naming::typable) {
            out += "--"; // "/a-b" and "/a/b" stay apart
        } else if (kept_as_is(c, n) && !(c == '.' && i == b)) {
            out += static_cast<char>(c);
        } else {
            std::snprintf(hex, sizeof hex, n == Naming::typable ? "%%%02X" : "\\x%02x", c);
            out += hex;
        }
    }
    return out;
}

} // namespace

std::string escape_path(const std::string& path) {
    return name_for(path, Naming::typable);
}

std::string default_cache_dir(const std::string& mountpoint) {
    std::string base;
    if (::geteuid() == 0) {
        base = "/var/cache/overcache";
    } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && x[0] == '/') {
        base = std::string(x) + "/overcache";
    } else if (const char* h = std::getenv("HOME"); h != nullptr && h[0] != '\0') {
        base = std::string(h) + "/.cache/overcache";
    } else {
        base = "/tmp/overcache-" + std::to_string(::geteuid());
    }
    const std::string dir = base + "/" + escape_path(mountpoint);
    const std::string legacy = base + "/" + name_for(mountpoint, Naming::legacy);
    struct stat st {};
    if (legacy != dir && ::stat(dir.c_str(), &st) != 0 && ::stat(legacy.c_str(), &st) == 0)
        return legacy;
    return dir;
}

namespace {

Result<store::BackingIdentity> backing_identity(const MountPaths& paths) {
    UniqueFd own;
    int fd = paths.backing_fd;
    if (fd < 0) {
        own = UniqueFd(::open(paths.backing.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!own)
            return fail_errno("cannot open the backing " + paths.backing);
        fd = own.get();
    }
    struct stat st {};
    struct statfs sfs {};
    if (::fstat(fd, &st) != 0 || ::fstatfs(fd, &sfs) != 0)
        return fail_errno("cannot stat the backing " + paths.backing);
    store::BackingIdentity id;
    id.path = paths.backing;
    id.fsid = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(sfs.f_fsid.__val[0])) << 32) |
              static_cast<std::uint32_t>(sfs.f_fsid.__val[1]);
    id.root_ino = st.st_ino;
    return id;
}

} // namespace

Result<std::unique_ptr<DataPath>> open_data_path(const config::Config& cfg,
                                                 const MountPaths& paths, bg::Executors& ex) {
    // cache_mode=none still opens a cache that exists: dirty data left in
    // it by a writeback mount is served and written back first.
    const std::string dir =
        cfg.cache_dir.empty() ? default_cache_dir(paths.mountpoint) : cfg.cache_dir;
    if (cfg.cache_mode == config::CacheMode::none) {
        struct stat sb {};
        if (::stat((dir + "/index").c_str(), &sb) != 0)
            return make_passthrough();
    }
    auto id = backing_identity(paths);
    if (!id)
        return fail(id.error());
    store::DeviceConfig dc;
    dc.dir = dir;
    dc.dev = cfg.cache_dev;
    dc.cache_size = cfg.cache_size;
    dc.bucket_size = cfg.bucket_size;
    dc.min_free_bytes = cfg.cache_min_free;
    dc.reformat = cfg.reformat;
    dc.discard_dirty = cfg.discard_dirty;
    dc.backing = std::move(*id);
    dc.store.block_cache_bytes = cfg.block_cache_size;
    dc.store.write_buffer_bytes =
        std::clamp<std::uint64_t>(cfg.block_cache_size / 4, 1u << 20, 16u << 20);
    auto dev = store::open_cache_device(dc);
    if (!dev)
        return fail(dev.error());
    log::info("cache at ", dc.dir, ": cache_size=", size_text((*dev)->superblock().cache_size),
              ", ", (*dev)->superblock().bucket_count, " buckets of ",
              size_text((*dev)->superblock().bucket_size));
    CachingParams p;
    p.mode = cfg.cache_mode;
    p.fill_size = cfg.fill_size;
    p.sequential_cutoff = cfg.sequential_cutoff;
    p.promote_after_hits = cfg.promote_after_hits;
    p.congested_read_threshold_us = cfg.congested_read_threshold_us;
    p.congested_write_threshold_us = cfg.congested_write_threshold_us;
    p.gc_low_percent = cfg.gc_low_percent;
    p.gc_high_percent = cfg.gc_high_percent;
    p.replacement_policy = cfg.cache_replacement_policy;
    p.backing_root = paths.backing;
    p.dir_settle = std::chrono::nanoseconds(static_cast<long long>(cfg.dir_settle_s * 1e9));
    p.writeback_percent = cfg.writeback_percent;
    p.writeback_delay_s = cfg.writeback_delay_s;
    p.writeback_rate_minimum = cfg.writeback_rate_minimum;
    p.writeback_running = cfg.writeback_running;
    p.fsync_to_backing = cfg.fsync_to_backing;
    p.flush_on_unmount = cfg.flush_on_unmount;
    p.writeback_wait_max_s = cfg.writeback_wait_max_s;
    p.lost_found_dir = dir + "/lost+found";
    p.metadata_max = cfg.metadata_max;
    log::info("cache device I/O ", (*dev)->direct_io() ? "bypasses" : "goes through",
              " the page cache");
    return make_caching_path(std::move(*dev), p, ex);
}

} // namespace overcache::cache
