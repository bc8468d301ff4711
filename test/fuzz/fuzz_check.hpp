// What every fuzz target shares: FUZZ_CHECK, a property that must hold for
// every input. A broken one prints the property, where it is, the input (hex
// and printable) and aborts: libFuzzer then saves the input as a crash file,
// and the doctest driver (fuzz_parsers_test.cpp) dies naming the target, the
// seed and the run, so the failure is reproducible either way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace overcache::fuzz {

// The input of the run in progress, for the report of a broken property.
inline thread_local std::string_view current_input;

[[noreturn]] inline void broken(const char* what, const char* file, int line,
                                const std::string& detail) {
    std::fprintf(stderr, "%s:%d: fuzz property broken: %s\n", file, line, what);
    if (!detail.empty())
        std::fprintf(stderr, "  detail: %s\n", detail.c_str());
    std::fprintf(stderr, "  input (%zu bytes):", current_input.size());
    for (unsigned char c : current_input)
        std::fprintf(stderr, " %02x", c);
    std::fprintf(stderr, "\n");
    std::abort();
}

// True when `s` is a message fit for one log line: not empty, no line break.
inline bool one_line(std::string_view s) {
    return !s.empty() && s.find('\n') == std::string_view::npos &&
           s.find('\r') == std::string_view::npos;
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

} // namespace overcache::fuzz

#define FUZZ_CHECK(cond, detail)                                                                   \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ::overcache::fuzz::broken(#cond, __FILE__, __LINE__, (detail));                        \
    } while (false)
