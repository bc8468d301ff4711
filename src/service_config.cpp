#include "service_config.hpp"

#include "util/printable.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace overcache {
namespace {

std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos)
        return {};
    return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

} // namespace

bool parse_service_config(std::string_view text, const std::string& file, ServiceConfig& out,
                          std::string& error) {
    ServiceConfig cfg;
    bool seen[4] = {};
    unsigned lineno = 0;
    auto bad = [&](const std::string& what) {
        error = file + ":" + std::to_string(lineno) + ": " + what;
        return false;
    };
    // Lines as std::getline gives them: a last line without '\n' counts.
    for (std::size_t start = 0; start < text.size();) {
        const std::size_t nl = std::min(text.find('\n', start), text.size());
        const std::string raw(text.substr(start, nl - start));
        start = nl + 1;
        ++lineno;
        const std::string line = trim(raw);
        if (line.empty() || line[0] == '#')
            continue;
        const auto eq = line.find('=');
        if (eq == std::string::npos)
            return bad("expected KEY=VALUE, found '" + printable(line) + "'");
        const std::string key = trim(line.substr(0, eq));
        std::string value = trim(line.substr(eq + 1));
        if (value.size() >= 2 && (value[0] == '"' || value[0] == '\'') && value.back() == value[0])
            value = value.substr(1, value.size() - 2);
        else if (!value.empty() && (value[0] == '"' || value[0] == '\''))
            return bad(printable(key) + "= has an unterminated quote");
        static const char* const kKeys[] = {"BACKING", "MOUNTPOINT", "CACHE", "OPTIONS"};
        std::string* const fields[] = {&cfg.backing, &cfg.mountpoint, &cfg.cache, &cfg.options};
        int k = -1;
        for (int i = 0; i < 4; ++i)
            if (key == kKeys[i])
                k = i;
        if (k < 0)
            return bad("unknown key '" + printable(key) +
                       "' (known: BACKING, MOUNTPOINT, CACHE, OPTIONS)");
        if (seen[k])
            return bad(key + "= is given twice");
        seen[k] = true;
        if (k < 3 && value.empty())
            return bad(key + "= is empty");
        if (k < 3 && value[0] != '/')
            return bad(key + "=" + printable(value) + " is not an absolute path");
        *fields[k] = value;
    }
    for (int k = 0; k < 2; ++k) {
        if (!seen[k]) {
            error = file + ": " + (k == 0 ? "BACKING" : "MOUNTPOINT") + "= is missing (the " +
                    (k == 0 ? "directory to cache" : "path to mount on") + ")";
            return false;
        }
    }
    out = std::move(cfg);
    return true;
}

bool read_service_config(const std::string& file, ServiceConfig& out, std::string& error) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        error = "cannot read " + file + ": " + std::strerror(errno) +
                " (it names the mount's BACKING and MOUNTPOINT; see overcache.conf(5))";
        return false;
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) {
        error = "cannot read " + file + ": " + std::strerror(errno);
        return false;
    }
    return parse_service_config(text.str(), file, out, error);
}

} // namespace overcache
