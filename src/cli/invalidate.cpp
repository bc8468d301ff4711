// DOC: `overcache invalidate PATH...`: drops what the cache holds of files
// on a mount, so their next reads come from the backing (rclone's
// vfs/forget). PATHs are found as mount_files.hpp says (a directory is
// walked here), one `invalidate REL` line a regular file, and one for a
// directory PATH itself (the names the mount kept under
// coherency=timeout|none are asked of the backing again). REL is the
// file's path below the mount's root, %XX-escaped
// (control::encode_path_arg) so that a name with blanks stays one word. A
// PATH that is not on a mount, or a file the mount refuses, is reported
// and makes the exit status 1; the rest goes on.
#include "cli/mount_files.hpp"
#include "cli/subcommands.hpp"
#include "control/command.hpp"

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/stat.h>

namespace overcache::cli {

int invalidate_main(const Args& args) {
    int rc = 0;
    for (const auto& path : args.positional) {
        auto mount = files_on_mount(path);
        if (!mount) {
            std::fprintf(stderr, "overcache invalidate: %s: %s\n", path.c_str(),
                         mount.error().message.c_str());
            rc = 1;
            continue;
        }
        // A directory: its names first (the mount's kept names and
        // attributes are asked of the backing again), then its files.
        if (struct stat st {}; ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
            char real[PATH_MAX];
            if (::realpath(path.c_str(), real) != nullptr) {
                const std::string abs = real;
                const std::string rel = abs == mount->root ? "." : mount->rel(abs);
                if (auto r = mount->control.run("invalidate " + control::encode_path_arg(rel)); !r) {
                    std::fprintf(stderr, "overcache invalidate: %s: %s\n", path.c_str(),
                                 reason_of(r.error()).c_str());
                    rc = 1;
                }
            }
        }
        for (const auto& file : mount->files) {
            auto r = mount->control.run("invalidate " + control::encode_path_arg(mount->rel(file)));
            if (!r) {
                std::fprintf(stderr, "overcache invalidate: %s: %s\n", file.c_str(),
                             reason_of(r.error()).c_str());
                rc = 1;
            }
        }
    }
    return rc;
}

} // namespace overcache::cli
