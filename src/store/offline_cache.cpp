// DOC: helpers of the offline tools (resize.cpp, fsck.cpp): they look at a
// cache no mount holds, so the LOCK check comes first and every damage is
// reported in words that name the file and the field.
#include "offline_cache.hpp"

#include "data_header.hpp"

#include <algorithm>
#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

namespace overcache::store {

pid_t lock_holder(const std::string& index_dir) {
    const int fd = ::open((index_dir + "/LOCK").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    const bool held = ::fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    ::close(fd);
    return held ? fl.l_pid : 0;
}

Unexpected in_use(const std::string& dir, pid_t pid) {
    return fail(Errc::Foreign, "the cache at " + dir + " is in use by a mount" +
                                   (pid > 0 ? " (process " + std::to_string(pid) + ")" : "") +
                                   "; unmount it first");
}

std::string superblock_damage(const std::string& dir, const std::optional<std::string>& raw,
                              meta::Superblock& sb) {
    if (!raw || meta::decode_superblock(*raw, sb) != meta::SbDecode::ok)
        return "the cache at " + dir + " has no superblock of format " +
               std::to_string(meta::kFormatVersion) + " (damaged, or another version)";
    if (const std::string problem = meta::superblock_problem(sb); !problem.empty())
        return "the cache at " + dir + " is damaged: its superblock's " + problem;
    return {};
}

Result<std::string> data_header_damage(int data_fd, const std::string& data_path,
                                       const meta::Superblock& sb) {
    auto hdr = read_header(data_fd);
    if (!hdr)
        return fail(hdr.error());
    DataHeader h;
    if (decode_header(*hdr, h) != HeaderState::ours || h.uuid != sb.uuid ||
        h.bucket_size != sb.bucket_size)
        return data_path + " does not carry its index's superblock";
    return std::string{};
}

bool checksums_match(std::uint64_t start, const std::vector<char>& data,
                     const std::vector<std::uint64_t>& csums) {
    const std::uint64_t end = start + data.size();
    std::size_t i = 0;
    for (std::uint64_t at = start; at < end; ++i) {
        const std::uint64_t next = std::min(end, (at / meta::kCsumBlock + 1) * meta::kCsumBlock);
        if (i >= csums.size() || XXH3_64bits(data.data() + (at - start), next - at) != csums[i])
            return false;
        at = next;
    }
    return i == csums.size();
}

} // namespace overcache::store
