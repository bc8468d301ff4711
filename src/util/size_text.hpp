// Sizes as people read and type them, for messages.
#pragma once

#include <cstdint>
#include <string>

namespace overcache {

// The exact size in the largest binary unit that divides it, as the size
// options take it ("64M", "1536K", "4097"); a size that no unit divides and
// that is 10 KiB or more also gets an approximation ("1073741825 (1.0 GiB)").
std::string size_text(std::uint64_t bytes);

} // namespace overcache
