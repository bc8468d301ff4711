// The data device's header: the first 4 KiB of its first bucket slot, with
// the magic and the uuid of the index's superblock, so an index and a data
// file that do not belong together are told apart. bucket_count is a copy
// of the superblock's: the index is the authority (a resize rewrites the
// header after the index batch that changes the count).
#pragma once

#include "overcache/meta/key_codec.hpp"
#include "overcache/util/result.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <unistd.h>

namespace overcache::store {

inline constexpr char kDataMagic[16] = "OVERCACHE-DATA1"; // 15 chars + NUL
inline constexpr std::size_t kHeaderSize = 4096;

struct DataHeader {
    std::array<std::uint8_t, 16> uuid{};
    std::uint64_t bucket_size = 0;
    std::uint64_t bucket_count = 0;
};

inline std::string encode_header(const DataHeader& h) {
    std::string s(kDataMagic, sizeof kDataMagic);
    s.append(reinterpret_cast<const char*>(h.uuid.data()), h.uuid.size());
    meta::put_be64(s, h.bucket_size);
    meta::put_be64(s, h.bucket_count);
    s.resize(kHeaderSize, '\0');
    return s;
}

enum class HeaderState { ours, zero, other };

inline HeaderState decode_header(const std::string& s, DataHeader& h) {
    if (s.size() < sizeof kDataMagic + 32)
        return HeaderState::other;
    if (std::memcmp(s.data(), kDataMagic, sizeof kDataMagic) == 0) {
        std::memcpy(h.uuid.data(), s.data() + 16, 16);
        h.bucket_size = meta::get_be64(s.data() + 32);
        h.bucket_count = meta::get_be64(s.data() + 40);
        return HeaderState::ours;
    }
    for (char c : s)
        if (c != 0)
            return HeaderState::other;
    return HeaderState::zero;
}

inline Result<std::string> read_header(int fd) {
    std::string buf(kHeaderSize, '\0');
    ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
    if (n < 0)
        return fail_errno("cannot read the cache data device");
    buf.resize(static_cast<std::size_t>(n));
    return buf;
}

// Writes and syncs the header of `sb`'s cache.
inline Result<void> write_header(int fd, const DataHeader& h) {
    const std::string hdr = encode_header(h);
    if (::pwrite(fd, hdr.data(), hdr.size(), 0) != static_cast<ssize_t>(hdr.size()) ||
        ::fdatasync(fd) != 0)
        return fail_errno("cannot write the cache data header");
    return {};
}

} // namespace overcache::store
