// DOC: JSON and Prometheus renderings of the control file's lines. Both are
// checked by real parsers in the tests (python3's json, promtool check
// metrics, whose lint rules shape the names: counters end in _total, gauges
// do not, units are spelled out in base units). A family's series are kept
// together and a name that two keys sanitize to is used once, as the
// exposition format demands.
#include "control/stats_export.hpp"

#include "control/stat_windows.hpp"

#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace overcache::control {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// JSON's number grammar, without exponents (the control file has none).
bool is_json_number(std::string_view s) {
    std::size_t i = 0;
    if (i < s.size() && s[i] == '-')
        ++i;
    if (i == s.size() || !is_digit(s[i]))
        return false;
    if (s[i] == '0' && i + 1 < s.size() && is_digit(s[i + 1]))
        return false;
    while (i < s.size() && is_digit(s[i]))
        ++i;
    if (i < s.size() && s[i] == '.') {
        ++i;
        if (i == s.size() || !is_digit(s[i]))
            return false;
        while (i < s.size() && is_digit(s[i]))
            ++i;
    }
    return i == s.size();
}

// The length of the UTF-8 sequence at the start of `s`, 0 if it is not one
// (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF).
std::size_t utf8_len(std::string_view s) {
    const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const auto cont = [&](std::size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
    const unsigned char c = b(0);
    if (c < 0x80)
        return 1;
    std::size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF; // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (s.size() < n || b(1) < lo || b(1) > hi)
        return 0;
    for (std::size_t i = 2; i < n; ++i)
        if (!cont(i))
            return 0;
    return n;
}

// `s` as valid UTF-8: a byte that starts no sequence becomes U+FFFD (a
// path in last_error or a mountpoint need not be UTF-8; JSON and
// Prometheus text must be).
std::string utf8_clean(std::string_view s) {
    std::string out;
    while (!s.empty()) {
        const std::size_t n = utf8_len(s);
        if (n == 0) {
            out += "\xEF\xBF\xBD";
            s.remove_prefix(1);
        } else {
            out += s.substr(0, n);
            s.remove_prefix(n);
        }
    }
    return out;
}

void json_string(std::string& out, std::string_view raw) {
    const std::string s = utf8_clean(raw);
    out += '"';
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c == '\r') {
            out += "\\r";
        } else if (u < 0x20 || u == 0x7f) {
            static const char* const kHex = "0123456789abcdef";
            out += "\\u00";
            out += kHex[u >> 4];
            out += kHex[u & 15];
        } else {
            out += c;
        }
    }
    out += '"';
}

std::string sanitize_name(std::string_view s) {
    std::string out;
    for (const char c : s) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
        out += ok ? c : '_';
    }
    return out;
}

std::string label_value(std::string_view raw) {
    const std::string s = utf8_clean(raw);
    std::string out;
    for (const char c : s) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string help_text(std::string_view s) {
    std::string out;
    for (const char c : s) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::optional<double> number(std::string_view s) {
    if (s == "max")
        return kInf;
    if (!is_json_number(s))
        return std::nullopt;
    double v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size())
        return std::nullopt;
    return v;
}

std::string format_value(double v) {
    if (v == kInf)
        return "+Inf";
    char buf[64];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return ec == std::errc() ? std::string(buf, end) : std::string("NaN");
}

bool ends_with(std::string_view s, std::string_view tail) {
    return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

struct Family {
    std::string name;
    const char* type;
    std::string help;
    std::vector<std::pair<std::string, std::string>> series; // labels, value
};

class Families {
public:
    void add(std::string name, const char* type, std::string help, std::string labels,
             std::string value) {
        for (auto& f : families_) {
            if (f.name != name)
                continue;
            if (std::string_view(f.type) != type)
                return; // the name is taken by another kind of metric
            for (const auto& s : f.series)
                if (s.first == labels)
                    return; // two keys sanitized to one series: the first wins
            f.series.emplace_back(std::move(labels), std::move(value));
            return;
        }
        families_.push_back(Family{std::move(name), type, std::move(help), {}});
        families_.back().series.emplace_back(std::move(labels), std::move(value));
    }

    std::string text() const {
        std::string out;
        for (const auto& f : families_) {
            out += "# HELP " + f.name + " " + help_text(f.help) + "\n";
            out += "# TYPE " + f.name + " " + f.type + "\n";
            for (const auto& [labels, value] : f.series)
                out += f.name + "{" + labels + "} " + value + "\n";
        }
        return out;
    }

private:
    std::vector<Family> families_;
};

// "five_minute" for "five_minute.cache_hits", with the rest in `key`.
const WindowSpec* window_of(std::string_view& key) {
    for (const auto& w : kWindows) {
        const std::string_view name = w.name;
        if (key.size() > name.size() + 1 && key.substr(0, name.size()) == name &&
            key[name.size()] == '.') {
            key.remove_prefix(name.size() + 1);
            return &w;
        }
    }
    return nullptr;
}

} // namespace

StatLines parse_stats(std::string_view text) {
    StatLines out;
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t end = text.find('\n', pos);
        if (end == std::string_view::npos)
            end = text.size();
        const std::string_view line = text.substr(pos, end - pos);
        pos = end + 1;
        if (line.empty())
            continue;
        const std::size_t sp = line.find(' ');
        if (sp == std::string_view::npos)
            out.emplace_back(std::string(line), "");
        else
            out.emplace_back(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
    }
    return out;
}

std::string render_json(const StatLines& lines) {
    std::string out = "{";
    bool first = true;
    for (const auto& [key, value] : lines) {
        if (!first)
            out += ", ";
        first = false;
        json_string(out, key);
        out += ": ";
        if (value == "-")
            out += "null";
        else if (is_json_number(value))
            out += value;
        else
            json_string(out, value);
    }
    out += "}\n";
    return out;
}

std::string render_prometheus(const StatLines& lines, std::string_view mountpoint) {
    const std::string mp = "mountpoint=\"" + label_value(mountpoint) + "\"";
    Families fams;
    std::string info_labels;
    for (const auto& [full_key, value] : lines) {
        if (full_key == "cache_mode" || full_key == "cache_state") {
            info_labels += "," + full_key + "=\"" + label_value(value) + "\"";
            continue;
        }
        const std::optional<double> v = number(value);
        if (!v)
            continue;
        // The control file's digits as they are (exact, however large),
        // unless the unit changes.
        const auto as_is = [&] { return *v == kInf ? format_value(*v) : value; };
        std::string_view key = full_key;
        if (const WindowSpec* w = window_of(key); w != nullptr && key == "working_set_bytes") {
            fams.add("overcache_working_set_bytes", "gauge",
                     "Distinct bytes read or written through the mount over the window "
                     "(five_minute, hour, day), an estimate",
                     mp + ",window=\"" + w->name + "\"", as_is());
            continue;
        } else if (w != nullptr) {
            const bool ratio = key == "cache_hit_ratio";
            const std::string name = sanitize_name(key);
            fams.add("overcache_window_" + name, "gauge",
                     "Increase of " + name + " over the window (five_minute, hour, day)" +
                         (ratio ? "; here hits over reads, 0 to 1" : ""),
                     mp + ",window=\"" + w->name + "\"", ratio ? format_value(*v / 100) : as_is());
            continue;
        }
        std::string name = sanitize_name(key);
        if (is_counter(key)) {
            fams.add("overcache_" + name + "_total", "counter",
                     "overcache " + name + " since the mount (overcache(8), CONTROL FILE)", mp,
                     as_is());
            continue;
        }
        std::string shown = as_is();
        if (ends_with(name, "_ms")) {
            name.replace(name.size() - 3, 3, "_seconds");
            shown = format_value(*v / 1e3);
        } else if (ends_with(name, "_us")) {
            name.replace(name.size() - 3, 3, "_seconds");
            shown = format_value(*v / 1e6);
        } else if (name == "cache_hit_ratio") {
            shown = format_value(*v / 100);
        } else if (ends_with(name, "_total")) {
            name.resize(name.size() - 6);
        }
        fams.add("overcache_" + name, "gauge",
                 "overcache " + std::string(key) + " now (overcache(8), CONTROL FILE)", mp,
                 std::move(shown));
    }
    if (!info_labels.empty())
        fams.add("overcache_info", "gauge", "The mount's cache mode and state, as labels",
                 mp + info_labels, "1");
    return fams.text();
}

} // namespace overcache::control
