// DOC: `overcache show-super CACHEDIR`: the superblock of a cache as `key
// value` lines (sizes human-readable), like bcache-super-show. It only reads:
// the index is opened read-only without its LOCK (MetaStore::peek), which
// RocksDB allows while a mount holds that LOCK, and nothing is written, not
// even a LOG, so a running mount is not disturbed; what it shows of a mounted
// cache (dirty_data) is as of the mount's last index write. Whether a process
// has the cache open is asked of the LOCK's fcntl lock (F_GETLK), as a mount
// does before it waits. Exit 1 with one line naming the problem for a
// directory that is not a cache, a damaged or foreign superblock or one of a
// version this overcache does not know; 2 for a usage error.
#include "cli/subcommands.hpp"
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "util/size_text.hpp"

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace overcache::cli {
namespace {

int failed(const std::string& what) {
    std::fprintf(stderr, "overcache show-super: %s\n", what.c_str());
    return 1;
}

std::string uuid_text(const std::array<std::uint8_t, 16>& u) {
    std::string out;
    for (std::size_t i = 0; i < u.size(); ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out += '-';
        char hex[3];
        std::snprintf(hex, sizeof hex, "%02x", u[i]);
        out += hex;
    }
    return out;
}

// "1234 (overcache /srv /mnt ...)" for the process holding the index's
// LOCK, "none" when no process does.
std::string lock_holder(const std::string& index_dir) {
    const int fd = ::open((index_dir + "/LOCK").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return "none";
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    const bool held = ::fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    ::close(fd);
    if (!held)
        return "none";
    std::string cmd;
    if (FILE* f = std::fopen(("/proc/" + std::to_string(fl.l_pid) + "/cmdline").c_str(), "re")) {
        for (int c; (c = std::fgetc(f)) != EOF && cmd.size() < 200;)
            cmd += c == '\0' ? ' ' : static_cast<char>(c);
        std::fclose(f);
    }
    while (!cmd.empty() && cmd.back() == ' ')
        cmd.pop_back();
    return std::to_string(fl.l_pid) + (cmd.empty() ? "" : " (" + cmd + ")");
}

// A mount may delete a WAL or table file (a flush, a compaction) between
// RocksDB reading the list of them and opening them: a read that failed is
// tried twice more.
template <typename Read> auto with_retries(Read read) {
    auto r = read();
    for (int i = 0; i < 2 && !r; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        r = read();
    }
    return r;
}

// What the bucket records say: dirty bytes, buckets in use, and how many
// records do not decode (a damaged index).
struct BucketSums {
    std::uint64_t dirty_bytes = 0;
    std::uint64_t in_use = 0;
    std::uint64_t damaged = 0;
};

} // namespace

int show_super_main(const Args& args) {
    const std::string& dir = args.positional[0];
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0)
        return failed("cannot open " + dir + ": " + std::strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return failed(dir + " is not a directory (give the cache= directory of a mount)");
    const std::string index_dir = dir + "/index";
    if (!meta::MetaStore::exists(index_dir))
        return failed(dir + " is not an overcache cache: it has no index (" + index_dir + ")");

    auto raw = with_retries(
        [&] { return meta::MetaStore::peek(index_dir, meta::Cf::meta, meta::kSuperblockKey); });
    if (!raw)
        return failed(raw.error().message);
    if (!raw->has_value())
        return failed("the index at " + index_dir +
                      " has no overcache superblock (not an overcache cache, or damaged)");
    meta::Superblock sb;
    const auto how = meta::decode_superblock(**raw, sb);
    switch (how) {
    case meta::SbDecode::bad_magic:
        return failed("the index at " + index_dir +
                      " holds a superblock that is not overcache's (not an overcache cache, or "
                      "damaged)");
    case meta::SbDecode::truncated:
        return failed("the cache at " + dir + " is damaged: its superblock does not decode");
    case meta::SbDecode::bad_version:
        return failed("the cache at " + dir + " has an unknown format version " +
                      std::to_string(sb.version) + " (this overcache reads version " +
                      std::to_string(meta::kFormatVersion) +
                      " and older; a newer overcache made it, or it is damaged)");
    case meta::SbDecode::ok:
    case meta::SbDecode::old_version:
        break;
    }
    const bool old = how == meta::SbDecode::old_version;
    if (!old)
        if (const std::string problem = meta::superblock_problem(sb); !problem.empty())
            return failed("the cache at " + dir + " is damaged: its superblock's " + problem);

    // Bucket records of older formats have another layout: not summed.
    BucketSums sums;
    bool sums_known = !old;
    if (sums_known) {
        auto r = with_retries([&] {
            sums = BucketSums{};
            return meta::MetaStore::peek_each(
                index_dir, meta::Cf::buckets, [&](std::string_view, std::string_view value) {
                    if (auto b = meta::decode_bucket(value)) {
                        sums.dirty_bytes += b->dirty_bytes;
                        sums.in_use += b->state != meta::BucketState::free ? 1 : 0;
                    } else {
                        ++sums.damaged;
                    }
                    return true;
                });
        });
        if (!r)
            return failed(r.error().message);
    }

    std::printf("cache_dir %s\n", dir.c_str());
    if (old)
        std::printf("format_version %u (older than this overcache's %u: a mount drops its data "
                    "and starts it anew)\n",
                    sb.version, meta::kFormatVersion);
    else
        std::printf("format_version %u\n", sb.version);
    std::printf("uuid %s\n", uuid_text(sb.uuid).c_str());
    std::printf("backing_path %s\n", sb.backing_path.c_str());
    std::printf("backing_fsid %llu\n", static_cast<unsigned long long>(sb.backing_fsid));
    std::printf("backing_root_ino %llu\n", static_cast<unsigned long long>(sb.backing_root_ino));
    std::printf("bucket_size %s\n", size_text(sb.bucket_size).c_str());
    std::printf("bucket_count %llu\n", static_cast<unsigned long long>(sb.bucket_count));
    std::printf("cache_size %s\n", size_text(sb.cache_size).c_str());
    std::printf("data_offset %s\n", size_text(sb.data_offset).c_str());
    if (sums_known) {
        std::printf("buckets_in_use %llu\n", static_cast<unsigned long long>(sums.in_use));
        std::printf("dirty_data %s\n", size_text(sums.dirty_bytes).c_str());
        if (sums.damaged > 0)
            std::printf("damaged_bucket_records %llu\n",
                        static_cast<unsigned long long>(sums.damaged));
    } else {
        std::printf("dirty_data unknown\n");
    }
    std::printf("in_use_by %s\n", lock_holder(index_dir).c_str());
    return 0;
}

} // namespace overcache::cli
