// index_fill: writes NAMES made-up names, with a listing record for each
// directory of PER_DIR of them and an attribute record for each, into the
// index of an existing (unmounted) cache, the way a walk of that many files
// through the mount would leave it. For measuring what an index of millions
// of names costs a mount (issue #10: "an index with 10 million names opens
// without a scan"): contrib/bench/index_scale.sh uses it.
//
//   index_fill CACHE_DIR NAMES [PER_DIR]
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/meta/names_codec.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <string>
#include <sys/stat.h>

using namespace overcache;

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s CACHE_DIR NAMES [PER_DIR]\n", argv[0]);
        return 2;
    }
    const std::string index = std::string(argv[1]) + "/index";
    const std::uint64_t names = std::strtoull(argv[2], nullptr, 10);
    const std::uint64_t per_dir = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1000;
    meta::StoreOptions o;
    o.write_buffer_bytes = 64u << 20;
    auto ms = meta::MetaStore::open(index, o);
    if (!ms) {
        std::fprintf(stderr, "index_fill: %s\n", to_string(ms.error()).c_str());
        return 1;
    }
    meta::MetaStore& store = **ms;
    // A filesystem id no backing has: these records are never looked up.
    constexpr std::uint64_t kFsid = 0x5ca1e0000000ull;
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t ino = 1000000;
    for (std::uint64_t made = 0; made < names;) {
        const meta::FileKey dir{kFsid, ino++};
        const std::uint64_t began = store.sequence();
        auto b = store.batch();
        std::uint64_t n = 0;
        for (; n < per_dir && made < names; ++n, ++made) {
            const meta::FileKey child{kFsid, ino++};
            const std::string name = "file-" + std::to_string(n) + ".dat";
            b.put(meta::Cf::dentries, meta::dentry_key(dir, name),
                  meta::encode(meta::DentryValue{child, DT_REG}));
            meta::AttrRecord a;
            a.mode = S_IFREG | 0644;
            a.nlink = 1;
            a.size = 4096 + n;
            a.blocks = 8;
            a.mtime_ns = a.ctime_ns = a.atime_ns = 1700000000000000000ll + static_cast<std::int64_t>(n);
            a.seen_seq = began;
            a.seen_ns = a.mtime_ns;
            a.xattrs = meta::kXattrsNone;
            b.put(meta::Cf::attrs, meta::file_key(child), meta::encode(a));
        }
        b.put(meta::Cf::dirs, meta::file_key(dir),
              meta::encode(meta::DirRecord{1700000000000000000ll, 1700000000000000000ll, n, began}));
        if (auto r = store.write(b); !r) {
            std::fprintf(stderr, "index_fill: %s\n", to_string(r.error()).c_str());
            return 1;
        }
        if (made % 1000000 < per_dir)
            std::fprintf(stderr, "\r%llu names", static_cast<unsigned long long>(made));
    }
    if (auto r = store.flush(); !r) {
        std::fprintf(stderr, "index_fill: %s\n", to_string(r.error()).c_str());
        return 1;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%llu names in %llu directories written in %.1f s\n",
                static_cast<unsigned long long>(names),
                static_cast<unsigned long long>((names + per_dir - 1) / per_dir), s);
    return 0;
}
