// Commands written to the control file (.overcache): one a line, a verb and
// its arguments separated by blanks. Parsing only; running them is
// command_runner.hpp's. Pure code, no libfuse, so it is unit-tested (and
// later fuzzed) on its own.
#pragma once

#include "overcache/util/result.hpp"

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace overcache::control {

enum class Verb { flush, gc, set, invalidate, prefetch, reset_stats };

// One row of the command table: what a line may start with and how many
// arguments it takes. New commands (issue #8: set, prefetch, ...) are a row
// here, a member of CommandTarget and a case in the runner.
struct CommandSpec {
    Verb verb;
    const char* name;
    unsigned min_args;
    unsigned max_args;
    const char* usage; // e.g. "flush"; "set KEY VALUE"
    const char* help;  // one line, for the CLI and the man page
};

std::span<const CommandSpec> command_table() noexcept;
const CommandSpec& spec_of(Verb v) noexcept;

struct Command {
    Verb verb;
    std::vector<std::string> args;
};

// Parses one line (without its '\n'; a trailing '\r' is ignored). An empty
// line, an unknown verb or a wrong number of arguments fails with
// Errc::BadValue and a message that names the command as written.
Result<Command> parse_command(std::string_view line);

// Splits one write's bytes into lines at '\n' (a last line without one
// counts too) and parses every line. All or nothing: the first bad line
// fails the whole batch ("line N: ..." when there is more than one line),
// so a write with a bad line runs none of its commands. No bytes: no
// commands.
Result<std::vector<Command>> parse_commands(std::string_view text);

// A path as a command argument (`invalidate REL`): a word has no blanks,
// so every byte outside printable, non-blank ASCII, and '%' itself, is
// written %XX (two hex digits). encode_path_arg never fails;
// decode_path_arg refuses a '%' without two hex digits after it and a NUL.
std::string encode_path_arg(std::string_view path);
Result<std::string> decode_path_arg(std::string_view word);

// `s` quoted for a message: at most 64 bytes, bytes outside printable ASCII
// as \xNN, so an error stays one short line whatever was written.
std::string quote(std::string_view s);

} // namespace overcache::control
