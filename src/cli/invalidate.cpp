// DOC: `overcache invalidate PATH...`: drops what the cache holds of files
// on a mount, so their next reads come from the backing (rclone's
// vfs/forget). PATHs are found as mount_files.hpp says (a directory is
// walked here), one `invalidate REL` line a regular file. REL is the
// file's path below the mount's root, %XX-escaped
// (control::encode_path_arg) so that a name with blanks stays one word. A
// PATH that is not on a mount, or a file the mount refuses, is reported
// and makes the exit status 1; the rest goes on.
#include "cli/mount_files.hpp"
#include "cli/subcommands.hpp"
#include "control/command.hpp"

#include <cstdio>
#include <string>

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
