// DOC: the control file's grammar (see fault_config.hpp). A file with any
// bad line is refused whole, so a test never runs under half of what it
// asked for; faultfs then keeps the settings it had and says why on stderr.
#include "fault_config.hpp"

#include <cerrno>
#include <cstdlib>
#include <sstream>
#include <utility>
#include <vector>

namespace faultfs {
namespace {

// Every errno a backing filesystem is likely to return, by name.
constexpr std::pair<const char*, int> kErrnos[] = {
    {"EIO", EIO},       {"ENOSPC", ENOSPC},       {"EACCES", EACCES},
    {"EROFS", EROFS},   {"ESTALE", ESTALE},       {"EPERM", EPERM},
    {"ENOENT", ENOENT}, {"EDQUOT", EDQUOT},       {"EFBIG", EFBIG},
    {"EAGAIN", EAGAIN}, {"EINTR", EINTR},         {"ENOTCONN", ENOTCONN},
    {"EBUSY", EBUSY},   {"ENOMEM", ENOMEM},       {"ETIMEDOUT", ETIMEDOUT},
    {"ENXIO", ENXIO},   {"EREMOTEIO", EREMOTEIO}, {"EOPNOTSUPP", EOPNOTSUPP},
};

constexpr std::pair<const char*, OpClass> kClasses[] = {
    {"read", OpClass::read},     {"write", OpClass::write},       {"fsync", OpClass::fsync},
    {"open", OpClass::open},     {"truncate", OpClass::truncate}, {"meta", OpClass::meta},
    {"lookup", OpClass::lookup},
};

// "write,fsync" -> those classes; "all" -> every class; false on an unknown name.
bool parse_classes(const std::string& list, std::vector<std::size_t>& out) {
    std::stringstream ss(list);
    for (std::string name; std::getline(ss, name, ',');) {
        if (name == "all") {
            for (std::size_t i = 0; i < kOpClasses; ++i)
                out.push_back(i);
            continue;
        }
        bool found = false;
        for (const auto& [n, c] : kClasses)
            if (name == n) {
                out.push_back(static_cast<std::size_t>(c));
                found = true;
            }
        if (!found)
            return false;
    }
    return !out.empty();
}

// "4M" -> 4 << 20; false on anything that is not a number with an optional suffix.
bool parse_size(const std::string& s, std::uint64_t& out) {
    if (s.empty())
        return false;
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (errno != 0 || end == s.c_str())
        return false;
    unsigned shift = 0;
    const std::string suffix(end);
    if (suffix == "K")
        shift = 10;
    else if (suffix == "M")
        shift = 20;
    else if (suffix == "G")
        shift = 30;
    else if (!suffix.empty())
        return false;
    out = static_cast<std::uint64_t>(v) << shift;
    return true;
}

} // namespace

int errno_from_name(const std::string& name) {
    for (const auto& [n, e] : kErrnos)
        if (name == n)
            return e;
    char* end = nullptr;
    const long v = std::strtol(name.c_str(), &end, 10);
    return (end != name.c_str() && *end == '\0' && v > 0 && v < 4096) ? static_cast<int>(v) : 0;
}

std::string parse_fault_config(const std::string& text, FaultConfig& out) {
    FaultConfig c;
    std::istringstream in(text);
    int lineno = 0;
    for (std::string line; std::getline(in, line);) {
        ++lineno;
        std::istringstream ls(line);
        std::string verb, what, value, extra;
        ls >> verb;
        if (verb.empty() || verb[0] == '#')
            continue;
        ls >> what >> value >> extra;
        const std::string where = "line " + std::to_string(lineno) + " '" + line + "': ";
        if (value.empty() || !extra.empty())
            return where + "expected three words";
        if (verb == "fail" || verb == "delay") {
            std::vector<std::size_t> classes;
            if (!parse_classes(what, classes))
                return where + "unknown operation class";
            std::uint64_t n = 0;
            if (verb == "fail") {
                const int e = errno_from_name(value);
                if (e == 0 && value != "0")
                    return where + "unknown errno";
                for (auto i : classes)
                    c.fail_errno[i] = e;
            } else {
                if (!parse_size(value, n) || n > 600000)
                    return where + "bad delay (milliseconds, at most 600000)";
                for (auto i : classes)
                    c.delay_ms[i] = static_cast<unsigned>(n);
            }
        } else if (verb == "throttle") {
            std::uint64_t n = 0;
            if (!parse_size(value, n))
                return where + "bad rate";
            if (what == "read")
                c.read_bytes_per_s = n;
            else if (what == "write")
                c.write_bytes_per_s = n;
            else
                return where + "throttle read or write";
        } else {
            return where + "unknown directive";
        }
    }
    out = c;
    return {};
}

} // namespace faultfs
