// DOC: `overcache resize CACHEDIR SIZE` and `overcache format CACHEDIR`:
// commands on an unmounted cache. Both refuse a cache whose index LOCK a
// process holds ("in use by a mount"). resize grows or shrinks the cache by
// whole buckets (store::resize_cache_dir): clean data past a new, smaller end
// is dropped, dirty data moved below it or, when it does not fit, the resize
// refused with nothing changed. format starts a new, empty cache; it refuses
// a directory holding anything but a cache's index/ and data, and a cache
// that holds dirty data unless --discard-dirty. A cache it replaces keeps its
// backing; a new one belongs to the first backing mounted over it.
#include "cli/subcommands.hpp"
#include "overcache/config/config.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/store/cache_device.hpp"
#include "overcache/store/resize.hpp"
#include "util/size_text.hpp"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <string>
#include <sys/stat.h>

namespace overcache::cli {
namespace {

int failed(const char* cmd, const std::string& what) {
    std::fprintf(stderr, "overcache %s: %s\n", cmd, what.c_str());
    return 1;
}

// The first entry of `dir` that is not a cache's own (index/, data), or
// empty.
Result<std::string> foreign_entry(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr)
        return fail_errno("cannot read " + dir);
    std::string found;
    while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name != "." && name != ".." && name != "index" && name != "data") {
            found = name;
            break;
        }
    }
    ::closedir(d);
    return found;
}

std::string dirty_text(std::uint64_t bytes) {
    return size_text(bytes) + " (" + std::to_string(bytes) + " bytes)";
}

} // namespace

int resize_main(const Args& args) {
    const std::string& dir = args.positional[0];
    auto size = config::parse_size(args.positional[1]);
    if (!size)
        return usage_error(*find_subcommand("resize"),
                           "bad SIZE '" + args.positional[1] + "': " + size.error().message);
    auto r = store::resize_cache_dir(dir, *size);
    if (!r)
        return failed("resize", r.error().message);
    if (r->old_size == r->new_size) {
        std::printf("cache at %s: cache_size %s already\n", dir.c_str(),
                    size_text(r->new_size).c_str());
        return 0;
    }
    std::printf("cache at %s: cache_size %s -> %s\n", dir.c_str(), size_text(r->old_size).c_str(),
                size_text(r->new_size).c_str());
    if (r->moved_dirty_bytes > 0)
        std::printf("dirty data moved: %s\n", size_text(r->moved_dirty_bytes).c_str());
    if (r->kept_clean_bytes > 0)
        std::printf("clean data moved: %s\n", size_text(r->kept_clean_bytes).c_str());
    if (r->dropped_clean_bytes > 0)
        std::printf("clean data dropped: %s\n", size_text(r->dropped_clean_bytes).c_str());
    return 0;
}

int format_main(const Args& args) {
    const Subcommand& sc = *find_subcommand("format");
    const std::string& dir = args.positional[0];
    store::DeviceConfig cfg;
    cfg.dir = dir;
    if (auto v = args.value("--size")) {
        auto s = config::parse_size(*v);
        if (!s)
            return usage_error(sc, "bad --size '" + *v + "': " + s.error().message);
        cfg.cache_size = *s;
    }
    if (auto v = args.value("--bucket-size")) {
        auto s = config::parse_size(*v);
        if (!s)
            return usage_error(sc, "bad --bucket-size '" + *v + "': " + s.error().message);
        if (*s < meta::kSbMinBucketSize || *s > meta::kSbMaxBucketSize || (*s & (*s - 1)) != 0)
            return usage_error(sc, "--bucket-size " + size_text(*s) +
                                       " is not a power of two from " +
                                       size_text(meta::kSbMinBucketSize) + " to " +
                                       size_text(meta::kSbMaxBucketSize));
        cfg.bucket_size = *s;
    }
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return failed("format", dir + " is not a directory");
        auto other = foreign_entry(dir);
        if (!other)
            return failed("format", other.error().message);
        if (!other->empty())
            return failed("format", dir + " holds other files (" + *other +
                                        "); give an empty directory or an overcache cache");
    } else if (errno != ENOENT) {
        return failed("format", "cannot open " + dir + ": " + std::strerror(errno));
    }
    const std::string index_dir = dir + "/index";
    if (meta::MetaStore::exists(index_dir)) {
        if (const int pid = store::cache_in_use_by(dir); pid != 0)
            return failed("format", "the cache at " + dir + " is in use by a mount (process " +
                                        std::to_string(pid) + "); unmount it first");
        auto dirty = store::cache_dirty_bytes(dir);
        if (!dirty)
            return failed("format",
                          "cannot read the cache at " + dir + " (" + dirty.error().message + ")");
        if (dirty->value_or(0) > 0 && !args.has("--discard-dirty"))
            return failed("format",
                          "the cache at " + dir + " holds " + dirty_text(**dirty) +
                              " of dirty data (writes its backing does not have yet); mount it "
                              "over its backing and run `overcache flush MOUNTPOINT` first, or "
                              "give --discard-dirty to lose them");
        // The cache stays its backing's: a mount over that backing takes it.
        if (auto raw = meta::MetaStore::peek(index_dir, meta::Cf::meta, meta::kSuperblockKey);
            raw && raw->has_value()) {
            meta::Superblock sb;
            if (const auto how = meta::decode_superblock(**raw, sb);
                how == meta::SbDecode::ok || how == meta::SbDecode::old_version)
                cfg.backing =
                    store::BackingIdentity{sb.backing_path, sb.backing_fsid, sb.backing_root_ino};
        }
    }
    cfg.reformat = true;
    cfg.discard_dirty = true; // checked above, with the count in the message
    auto dev = store::open_cache_device(cfg);
    if (!dev)
        return failed("format", dev.error().message);
    const auto& sb = (*dev)->superblock();
    std::printf("formatted cache %s: cache_size %s in %llu buckets of %s\n", dir.c_str(),
                size_text(sb.cache_size).c_str(), static_cast<unsigned long long>(sb.bucket_count),
                size_text(sb.bucket_size).c_str());
    return 0;
}

} // namespace overcache::cli
