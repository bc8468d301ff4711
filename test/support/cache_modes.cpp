// DOC: cache-mode selection and flush for the writeback suites; see
// cache_modes.hpp.
#include "cache_modes.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>

namespace overcache::test {

std::vector<std::string> chosen_cache_modes() {
    const char* env = std::getenv("OVERCACHE_TEST_CACHE_MODE");
    std::string list = env && *env ? env : kDefaultCacheModes;
    if (!(env && *env))
        if (const char* extra = std::getenv("OVERCACHE_TEST_EXTRA_OPTIONS")) {
            const std::string opts = std::string(",") + extra + ",";
            const std::string key = ",cache_mode=";
            if (const auto at = opts.rfind(key); at != std::string::npos) {
                const auto from = at + key.size();
                list = opts.substr(from, opts.find(',', from) - from);
            }
        }
    std::vector<std::string> out;
    std::string cur;
    for (const char c : list + ",") {
        if (c == ',' || c == ' ') {
            if (!cur.empty())
                out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    return out;
}

bool cache_mode_chosen(const std::string& mode) {
    const auto modes = chosen_cache_modes();
    return std::find(modes.begin(), modes.end(), mode) != modes.end();
}

std::string small_cache_options(const std::string& mode) {
    return "cache_mode=" + mode +
           ",cache_size=16M,bucket_size=64K,fill_size=64K,sequential_cutoff=0";
}

bool flush_to_backing(Mount& m, const std::string& mode) {
    const int err = m.control("flush\n");
    if (err == 0)
        return true;
    // strerror's char* would print as a pointer.
    FAIL_CHECK("flush through " << m.mnt(".overcache")
                                << " failed: " << std::string(std::strerror(err))
                                << " (cache_mode=" << mode << ")");
    return m.mounted();
}

} // namespace overcache::test
