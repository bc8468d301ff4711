// DOC: the conflict copy of a file's dirty data (writeback conflicts and
// files gone from the backing). The copy is made from the cache device with
// every block's checksum verified; a block that fails is left a hole and
// named in the log, never written as garbage.
#include "cache/conflict_copy.hpp"

#include "util/file_io.hpp"
#include "util/log.hpp"

#include <cerrno>
#include <climits>
#include <ctime>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace overcache::cache {
namespace {

std::string copy_name(const FileState& st) {
    std::string base = st.rec->path;
    for (char& c : base)
        if (c == '/')
            c = '_'; // one flat directory: the path is kept readable in the name
    if (base.empty())
        base = "file-" + std::to_string(st.rec->file_id);
    if (base.size() > 180)
        base = base.substr(base.size() - 180);
    const std::time_t now = std::time(nullptr);
    struct tm tm {};
    ::gmtime_r(&now, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    return base + ".overcache-conflict-" + stamp;
}

} // namespace

Result<std::string> save_dirty_copy(CacheCore& core, FileState& st, const std::string& dir) {
    if (!st.rec)
        return fail(Errc::BadValue, "no record");
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return fail_errno("cannot create " + dir);
    auto pieces = core.index.lookup(st.rec->file_id, 0, UINT64_MAX);
    if (!pieces)
        return fail(pieces.error());
    const std::string name = copy_name(st);
    std::string path;
    UniqueFd fd;
    for (int n = 0; n < 100 && !fd; ++n) {
        path = dir + "/" + name + (n == 0 ? "" : "." + std::to_string(n));
        fd = UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!fd && errno != EEXIST)
            return fail_errno("cannot create " + path);
    }
    if (!fd)
        return fail_sys(EEXIST, "cannot name a conflict copy in " + dir);
    std::vector<char> buf;
    for (const auto& p : *pieces) {
        if ((p.v.flags & meta::kExtentDirty) == 0)
            continue;
        buf.resize(p.v.len);
        if (core.index.read_piece(p, buf.data()) != PieceRead::ok) {
            log::error("cache: dirty bytes [", p.start, ", ", p.end(), ") of ", st.rec->path,
                       " cannot be read back from the cache device; left out of ", path);
            continue;
        }
        if (auto n = pwrite_upto(fd.get(), buf.data(), buf.size(), p.start);
            n != static_cast<ssize_t>(buf.size()))
            return fail_sys(n < 0 ? static_cast<int>(-n) : EIO, "writing " + path);
    }
    const std::uint64_t size =
        (st.rec->flags & meta::kFileAhead) != 0 ? st.rec->cache_size : st.rec->size;
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0 || ::fsync(fd.get()) != 0)
        return fail_errno("writing " + path);
    return path;
}

} // namespace overcache::cache
