// DOC: the control file's command language. A line is a verb from the
// command table and its arguments, separated by runs of blanks (space, tab);
// a trailing '\r' is dropped so that a file written on another system works.
// Nothing is trimmed or guessed beyond that: an empty line, an unknown verb
// or a wrong argument count is refused, so a typo never runs something else.
// A write is parsed whole before anything runs (all or nothing). Messages
// name the command as written (quoted, made printable, cut short), because
// they end up as the control file's one-line `last_error`.
#include "control/command.hpp"

#include <array>
#include <cstdio>

namespace overcache::control {
namespace {

constexpr std::array<CommandSpec, 6> kCommands{{
    {Verb::flush, "flush", 0, 0, "flush",
     "write all dirty data back to the backing and sync it; returns when done"},
    {Verb::gc, "gc", 0, 0, "gc", "run a garbage collection pass of the cache now"},
    {Verb::set, "set", 2, 2, "set KEY VALUE",
     "change a setting of the mounted cache now; kept for the next mount"},
    {Verb::invalidate, "invalidate", 1, 1, "invalidate PATH",
     "drop the cached data of a file (PATH below the mount's root, %XX-escaped); "
     "dirty data is written back first"},
    {Verb::prefetch, "prefetch", 1, 1, "prefetch PATH",
     "read a file's data the cache lacks from the backing into the cache now (PATH below the "
     "mount's root, %XX-escaped); returns once all of it is cached"},
    {Verb::reset_stats, "reset_stats", 0, 0, "reset_stats",
     "start the counters, their windows and the working set from zero"},
}};

bool is_blank(char c) noexcept {
    return c == ' ' || c == '\t';
}

std::vector<std::string_view> words_of(std::string_view line) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && is_blank(line[i]))
            ++i;
        const std::size_t start = i;
        while (i < line.size() && !is_blank(line[i]))
            ++i;
        if (i > start)
            out.push_back(line.substr(start, i - start));
    }
    return out;
}

std::string count_text(unsigned n) {
    return n == 0 ? "no arguments" : n == 1 ? "1 argument" : std::to_string(n) + " arguments";
}

} // namespace

std::span<const CommandSpec> command_table() noexcept {
    return kCommands;
}

const CommandSpec& spec_of(Verb v) noexcept {
    for (const auto& c : kCommands)
        if (c.verb == v)
            return c;
    return kCommands[0]; // unreachable: every Verb has a row
}

std::string encode_path_arg(std::string_view path) {
    std::string out;
    out.reserve(path.size());
    for (const char ch : path) {
        const auto c = static_cast<unsigned char>(ch);
        if (c > 0x20 && c < 0x7f && c != '%') {
            out += ch;
        } else {
            char hex[4];
            std::snprintf(hex, sizeof hex, "%%%02X", c);
            out += hex;
        }
    }
    return out;
}

Result<std::string> decode_path_arg(std::string_view word) {
    auto digit = [](char c) -> int {
        if (c >= '0' && c <= '9')
            return c - '0';
        if (c >= 'a' && c <= 'f')
            return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
            return c - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(word.size());
    for (std::size_t i = 0; i < word.size(); ++i) {
        if (word[i] != '%') {
            out += word[i];
            continue;
        }
        const int hi = i + 2 < word.size() ? digit(word[i + 1]) : -1;
        const int lo = hi >= 0 ? digit(word[i + 2]) : -1;
        if (lo < 0)
            return fail(Errc::BadValue, "bad %XX escape in the path " + quote(word));
        if (hi == 0 && lo == 0)
            return fail(Errc::BadValue, "a NUL byte in the path " + quote(word));
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

std::string quote(std::string_view s) {
    constexpr std::size_t kMax = 64;
    std::string out = "'";
    for (std::size_t i = 0; i < s.size() && i < kMax; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            out += static_cast<char>(c);
        } else {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        }
    }
    if (s.size() > kMax)
        out += "...";
    out += '\'';
    return out;
}

Result<Command> parse_command(std::string_view line) {
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
    const auto words = words_of(line);
    if (words.empty())
        return fail(Errc::BadValue, "empty command line");
    const CommandSpec* spec = nullptr;
    for (const auto& c : kCommands)
        if (words[0] == c.name)
            spec = &c;
    if (spec == nullptr)
        return fail(Errc::BadValue, "unknown command " + quote(words[0]));
    const std::size_t nargs = words.size() - 1;
    if (nargs < spec->min_args || nargs > spec->max_args) {
        std::string msg = quote(spec->name) + " takes ";
        msg += spec->min_args == spec->max_args
                   ? count_text(spec->max_args)
                   : "from " + std::to_string(spec->min_args) + " to " + count_text(spec->max_args);
        msg += " (usage: " + std::string(spec->usage) + "), got " + quote(line);
        return fail(Errc::BadValue, std::move(msg));
    }
    Command cmd{spec->verb, {}};
    for (std::size_t i = 1; i < words.size(); ++i)
        cmd.args.emplace_back(words[i]);
    return cmd;
}

Result<std::vector<Command>> parse_commands(std::string_view text) {
    std::vector<std::string_view> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        const std::size_t nl = text.find('\n', start);
        const std::size_t end = nl == std::string_view::npos ? text.size() : nl;
        lines.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    std::vector<Command> out;
    out.reserve(lines.size());
    for (std::size_t i = 0; i < lines.size(); ++i) {
        auto cmd = parse_command(lines[i]);
        if (!cmd) {
            Error e = std::move(cmd).error();
            if (lines.size() > 1)
                e.message = "line " + std::to_string(i + 1) + ": " + e.message;
            return fail(std::move(e));
        }
        out.push_back(std::move(*cmd));
    }
    return out;
}

} // namespace overcache::control
