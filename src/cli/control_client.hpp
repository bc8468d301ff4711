// The client side of a mount's control file (MOUNTPOINT/.overcache): finds
// it and makes sure it is one (not a file of that name elsewhere), reads its
// `key value` text, and writes a command line. Used by the subcommands that
// talk to a running mount.
#pragma once

#include "overcache/util/result.hpp"
#include "util/unique_fd.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace overcache::cli {

class ControlClient {
public:
    // Opens MOUNTPOINT/.overcache for reading and checks that it is the
    // control file of an overcache mount. The error's message is a sentence
    // about `mountpoint` for the user ("... is not an overcache mount").
    static Result<ControlClient> open(const std::string& mountpoint);

    const std::string& path() const noexcept { return path_; }

    // The control file's whole text as of now (a fresh open each time:
    // reads show the state as of their open).
    Result<std::string> read_text() const;

    // Writes `line` (a command, '\n' added) with one write(2) and returns
    // once the mount has run it; the failure's errno, and the control
    // file's last_error as its message when there is one. Opens for
    // writing only now: reading needs no rights, commands need the owner's.
    Result<void> run(std::string_view line) const;

private:
    ControlClient(std::string path, UniqueFd fd, dev_t dev, ino_t ino, uid_t owner)
        : path_(std::move(path)), fd_(std::move(fd)), dev_(dev), ino_(ino), owner_(owner) {}

    Result<UniqueFd> open_again(int flags) const;

    std::string path_;
    UniqueFd fd_; // read-only, held so the mount stays the one checked
    dev_t dev_;
    ino_t ino_;
    uid_t owner_;
};

// The value of `key` in a control file's text, if the key is there.
std::optional<std::string> value_of(std::string_view text, std::string_view key);

} // namespace overcache::cli
