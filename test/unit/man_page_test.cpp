// The man page documents every option of the option table, in the table's
// order, with the table's default: a new option or a changed default that
// is not written up fails here rather than in a user's hands.
#include "overcache/config/config.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#ifndef OVERCACHE_MAN_PAGE
#error "OVERCACHE_MAN_PAGE must name man/overcache.8"
#endif

namespace {

std::string read_man_page() {
    std::ifstream in(OVERCACHE_MAN_PAGE);
    REQUIRE_MESSAGE(in.good(), "cannot open " OVERCACHE_MAN_PAGE);
    std::ostringstream os;
    os << in.rdbuf();
    return os.str();
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream is(text);
    for (std::string line; std::getline(is, line);)
        out.push_back(line);
    return out;
}

// Drops troff font escapes (\fB, \fI, \fR, \fP) and turns "\-" into "-", so
// that the text can be compared with the option table's plain strings.
std::string plain(const std::string& troff) {
    std::string out;
    for (std::size_t i = 0; i < troff.size(); ++i) {
        if (troff[i] == '\\' && i + 1 < troff.size()) {
            if (troff[i + 1] == 'f' && i + 2 < troff.size()) {
                i += 2;
                continue;
            }
            if (troff[i + 1] == '-' || troff[i + 1] == '&') {
                if (troff[i + 1] == '-')
                    out += '-';
                ++i;
                continue;
            }
        }
        out += troff[i];
    }
    return out;
}

struct Entry {
    std::string name;
    std::string text; // the paragraph, troff macros' arguments included
};

// The .TP entries of the OPTIONS section: the tag line's first word (up to
// '='), and the text up to the next .TP or section.
std::vector<Entry> option_entries(const std::vector<std::string>& lines) {
    std::vector<Entry> out;
    bool in_options = false;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const std::string& l = lines[i];
        if (l.rfind(".SH", 0) == 0) {
            in_options = l.find("OPTIONS") != std::string::npos;
            continue;
        }
        if (!in_options)
            continue;
        if (l.rfind(".TP", 0) == 0 && i + 1 < lines.size()) {
            std::string tag = lines[++i];
            const auto sp = tag.find(' ');
            if (sp == std::string::npos)
                continue;
            std::string word = plain(tag.substr(sp + 1));
            word = word.substr(0, word.find_first_of("= "));
            out.push_back({word, ""});
            continue;
        }
        if (!out.empty())
            out.back().text += plain(l) + "\n";
    }
    return out;
}

// Joins the paragraph into one line of words, so that a default split over
// two source lines still matches.
std::string words(const std::string& text) {
    std::string out;
    std::istringstream is(text);
    for (std::string w; is >> w;) {
        if (!w.empty() && w[0] == '.') // a macro name such as .B or .IR
            continue;
        if (!out.empty())
            out += ' ';
        out += w;
    }
    return out;
}

} // namespace

TEST_SUITE("man page") {
    TEST_CASE("every option is documented, in the option table's order, with its default") {
        const auto entries = option_entries(lines_of(read_man_page()));
        const auto& table = overcache::config::option_table();
        REQUIRE_FALSE(table.empty());

        std::size_t pos = 0;
        for (const auto& opt : table) {
            const std::string name = opt.name;
            const std::string default_text = opt.default_text;
            CAPTURE(name);
            const auto it =
                std::find_if(entries.begin() + static_cast<std::ptrdiff_t>(pos), entries.end(),
                             [&](const Entry& e) { return e.name == name; });
            const bool anywhere = std::any_of(entries.begin(), entries.end(),
                                              [&](const Entry& e) { return e.name == name; });
            CHECK_MESSAGE(anywhere, "option " << name << " has no entry under OPTIONS");
            CHECK_MESSAGE((it != entries.end() || !anywhere),
                          "option " << name << " is out of the option table's order");
            if (it == entries.end())
                continue;
            pos = static_cast<std::size_t>(it - entries.begin()) + 1;
            const std::string text = words(it->text);
            CHECK_MESSAGE(text.find("Default: " + default_text) != std::string::npos,
                          "the entry of " << name << " does not say \"Default: " << default_text
                                          << "\"");
        }
    }

    TEST_CASE("the sections a user looks for are there") {
        const std::string page = read_man_page();
        for (const char* section : {".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS",
                                    ".SH CONTROL FILE", ".SH FILES", ".SH MOUNTING", ".SH NOTES"})
            CHECK_MESSAGE(page.find(section) != std::string::npos, "missing " << section);
    }
}
