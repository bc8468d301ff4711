// The text a read of the control file (.overcache) returns: one `key value`
// line a statistic or setting, in the order given. Pure formatting, no
// libfuse, so it is unit-tested on its own.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace overcache::control {

using StatLines = std::vector<std::pair<std::string, std::string>>;

// "key value\n" per pair. A key is one word: whitespace in it becomes '_'
// and an empty key becomes "-". A value is one line: newlines and tabs in
// it become spaces, and an empty value is written as "-", so every line
// splits into exactly two fields at the first space.
std::string render_stats(const StatLines& lines);

} // namespace overcache::control
