// Maps overcache's error codes to the errno a filesystem caller sees.
#include "overcache/util/result.hpp"

#include <cstring>

namespace overcache {

int to_errno(const Error& e) noexcept {
    switch (e.code) {
    case Errc::Sys:
        return e.sys_errno != 0 ? e.sys_errno : EIO;
    case Errc::CacheFull:
        return ENOSPC;
    case Errc::BackingStale:
        return ESTALE;
    case Errc::MetaCorrupt:
    case Errc::Checksum:
    case Errc::CacheIo:
        return EIO;
    case Errc::UnknownKey:
        return ENODATA;
    case Errc::ReadOnlyKey:
        return EROFS;
    case Errc::BadValue:
    case Errc::Foreign:
        return EINVAL;
    case Errc::NotSupported:
        return ENOTSUP;
    }
    return EIO;
}

const char* errc_name(Errc c) noexcept {
    switch (c) {
    case Errc::Sys:
        return "system error";
    case Errc::CacheFull:
        return "cache full";
    case Errc::BackingStale:
        return "backing changed";
    case Errc::MetaCorrupt:
        return "index corrupt";
    case Errc::Checksum:
        return "checksum mismatch";
    case Errc::UnknownKey:
        return "unknown key";
    case Errc::ReadOnlyKey:
        return "read-only key";
    case Errc::BadValue:
        return "bad value";
    case Errc::NotSupported:
        return "not supported";
    case Errc::Foreign:
        return "foreign cache";
    case Errc::CacheIo:
        return "cache device I/O error";
    }
    return "error";
}

std::string to_string(const Error& e) {
    std::string out = e.message;
    if (!out.empty())
        out += ": ";
    if (e.code == Errc::Sys)
        out += std::strerror(to_errno(e));
    else
        out += errc_name(e.code);
    return out;
}

} // namespace overcache
