// What the tools on an unmounted cache (resize, fsck) share: who holds the
// index LOCK, the superblock and data-header checks, and checking bytes read
// back from the data device against an extent's checksums.
#pragma once

#include "overcache/meta/schema.hpp"
#include "overcache/util/result.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace overcache::store {

// The pid holding the index's LOCK (RocksDB's fcntl lock), or 0.
pid_t lock_holder(const std::string& index_dir);

// "the cache at DIR is in use by a mount (process PID); unmount it first"
Unexpected in_use(const std::string& dir, pid_t pid);

// Why the encoded superblock `raw` (nullopt: none) of the cache at `dir`
// cannot be used, or empty with `sb` filled.
std::string superblock_damage(const std::string& dir, const std::optional<std::string>& raw,
                              meta::Superblock& sb);

// Why the data device `data_fd` (`data_path`) does not carry the header of
// `sb`'s cache, or empty. A read error is an Error, not a damage.
Result<std::string> data_header_damage(int data_fd, const std::string& data_path,
                                       const meta::Superblock& sb);

// Whether `data`, the bytes of a file from offset `start`, match `csums`
// (one per kCsumBlock grid block touched, as ExtentValue keeps them).
bool checksums_match(std::uint64_t start, const std::vector<char>& data,
                     const std::vector<std::uint64_t>& csums);

} // namespace overcache::store
