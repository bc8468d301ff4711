// DOC: writing fsck's lost+found copies. The copy is synced (file and
// directory) before save_salvage() returns, because the caller drops the
// extent right after: the bytes must outlive the index entry that pointed
// at them. The directory is the one the mount uses for conflict copies
// (CACHE_DIR/lost+found); the fsck- prefix tells the two apart.
#include "fsck_salvage.hpp"

#include "util/file_io.hpp"
#include "util/size_text.hpp"
#include "util/unique_fd.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace overcache::store {
namespace {

Result<void> write_synced(int fd, const char* data, std::size_t len, const std::string& path) {
    if (len > 0 && pwrite_upto(fd, data, len, 0) != static_cast<ssize_t>(len))
        return fail_errno("cannot write " + path);
    if (::fsync(fd) != 0)
        return fail_errno("cannot sync " + path);
    return {};
}

Result<void> sync_dir(const std::string& dir) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0)
        return fail_errno("cannot sync " + dir);
    return {};
}

std::string parent_of(const std::string& dir) {
    const auto slash = dir.find_last_of('/');
    return slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
}

} // namespace

Result<std::string> save_salvage(const std::string& lost_found, const Salvage& s) {
    if (::mkdir(lost_found.c_str(), 0700) == 0) {
        if (auto r = sync_dir(parent_of(lost_found)); !r)
            return fail(r.error());
    } else if (errno != EEXIST) {
        return fail_errno("cannot create " + lost_found);
    }
    const std::string base =
        lost_found + "/fsck-" + std::to_string(s.file_id) + "-" + std::to_string(s.offset);
    std::string path;
    UniqueFd fd;
    for (int n = 0; n < 1000 && !fd; ++n) {
        path = base + (n == 0 ? "" : "." + std::to_string(n));
        fd = UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!fd && errno != EEXIST)
            return fail_errno("cannot create " + path);
    }
    if (!fd)
        return fail_sys(EEXIST, "cannot name a copy in " + lost_found);
    if (auto r = write_synced(fd.get(), s.bytes.data(), s.bytes.size(), path); !r)
        return fail(r.error());

    const std::string note_path = path + ".txt";
    UniqueFd note(::open(note_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!note)
        return fail_errno("cannot create " + note_path);
    const std::string text =
        "overcache fsck dropped dirty data of " +
        (s.file_path.empty() ? std::string("an unknown file") : "/" + s.file_path) + " (file id " +
        std::to_string(s.file_id) + ") at offset " + std::to_string(s.offset) + ", length " +
        std::to_string(s.len) + " (" + size_text(s.len) + "): " + s.why + "; " +
        (s.readable ? "the bytes as the cache device held them are in " + path
                    : std::string("its bytes could not be read from the cache device")) +
        "\n";
    if (auto r = write_synced(note.get(), text.data(), text.size(), note_path); !r)
        return fail(r.error());
    if (auto r = sync_dir(lost_found); !r)
        return fail(r.error());
    return s.readable ? path : note_path;
}

} // namespace overcache::store
