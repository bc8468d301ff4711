// DOC: DataPath's non-virtual helpers (overcache/cache/data_path.hpp).
#include "overcache/cache/data_path.hpp"

#include "util/file_io.hpp"

namespace overcache::cache {

Result<ReadOut> DataPath::read(OpenFile& f, char* buf, std::size_t size, off_t off) {
    return read(f, buf, size, off,
                [](int fd, char* out, std::size_t len, std::uint64_t at) {
                    return pread_upto(fd, out, len, at);
                });
}

} // namespace overcache::cache
