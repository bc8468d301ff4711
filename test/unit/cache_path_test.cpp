// The caching DataPath on real files and a real cache: hits after misses,
// bypass, checksums, overwrite splitting, write/fill races, coherency,
// reclaim and persistence. The FUSE adapter is not involved: the tests call
// open/read/wrote as it would.
#include "cache_fixture.hpp"
#include "overcache/cache/caching_path.hpp"
#include "overcache/cache/extent_index.hpp"
#include "overcache/cache/factory.hpp"
#include "data_path_support.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace overcache;
using namespace overcache::cache;
using test::attr_change;
using test::MemSource;
using test::random_bytes;
using test::write_file;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = 1024 * KiB;

struct Fx {
    bg::Executors ex;
    test::TmpDir tmp;
    std::string backing = tmp / "backing";
    store::DeviceConfig dc;
    CachingParams cp;
    std::unique_ptr<DataPath> dp;

    Fx() {
        ::mkdir(backing.c_str(), 0755);
        dc.dir = tmp / "cache";
        dc.cache_size = 16 * MiB;
        dc.bucket_size = 256 * KiB;
        dc.backing = store::BackingIdentity{backing, 1, 2};
        cp.fill_size = 64 * KiB;
        cp.sequential_cutoff = 0;
        ex.start();
    }
    ~Fx() {
        if (dp)
            dp->stop();
    }
    void start() {
        auto d = store::open_cache_device(dc);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        dp = make_caching_path(std::move(*d), cp, ex);
    }
    void restart() {
        dp->stop();
        dp.reset();
        start();
    }
    CacheControl& ctl() { return dynamic_cast<CacheControl&>(*dp); }
    std::uint64_t stat(const std::string& key) {
        for (auto& [k, v] : dp->stats())
            if (k == key)
                return std::stoull(v);
        FAIL("no stat " << key);
        return 0;
    }
    std::string path(const std::string& name) const { return backing + "/" + name; }
};

// One open file as the adapter holds it.
struct Handle {
    int fd = -1;
    OpenOut out;
    Handle(DataPath& dp, const std::string& path, int flags = O_RDWR) {
        fd = ::open(path.c_str(), flags);
        REQUIRE(fd >= 0);
        struct stat st {};
        REQUIRE(::fstat(fd, &st) == 0);
        auto r = dp.open(fd, st, flags);
        REQUIRE(r);
        out = std::move(*r);
    }
    ~Handle() {
        out.file.reset();
        ::close(fd);
    }
    std::string read(DataPath& dp, std::uint64_t off, std::size_t len) {
        std::string buf(len, '\0');
        auto r = dp.read(*out.file, buf.data(), len, static_cast<off_t>(off));
        REQUIRE(r);
        if (r->fd >= 0) {
            ssize_t n = ::pread(r->fd, buf.data(), r->len, r->fd_offset);
            REQUIRE(n >= 0);
            buf.resize(static_cast<std::size_t>(n));
        } else {
            buf.resize(r->len);
        }
        return buf;
    }
    // A write through the mount, as the adapter hands it over.
    void write(DataPath& dp, std::uint64_t off, const std::string& data) {
        MemSource src(data);
        std::optional<Result<std::size_t>> got;
        dp.write(*out.file, src, static_cast<off_t>(off),
                 [&](Result<std::size_t> r) { got.emplace(std::move(r)); });
        REQUIRE(got.has_value());
        REQUIRE(*got);
        REQUIRE(**got == data.size());
    }
};

} // namespace

TEST_SUITE("cache") {
    TEST_CASE("ExtentIndex: lookup, overlap, splitting and punching" * doctest::timeout(30)) {
        test::IndexFixture fx(4 * MiB);
        ExtentIndex& ix = fx.ix();
        store::WritePoint& wp = fx.wp;
        const auto a = random_bytes(100, 1), b = random_bytes(30, 2);
        REQUIRE(*ix.insert(wp, 7, 0, a.data(), 100));
        REQUIRE(*ix.insert(wp, 8, 0, b.data(), 30)); // another file is not touched
        REQUIRE(*ix.insert(wp, 7, 30, b.data(), 30));

        auto content = [&](std::uint64_t s, std::uint64_t e) {
            auto ps = ix.lookup(7, s, e);
            REQUIRE(ps);
            std::vector<std::pair<std::uint64_t, std::string>> out;
            for (auto& p : *ps) {
                std::string buf(p.v.len, '\0');
                REQUIRE(ix.read_piece(p, buf.data()) == PieceRead::ok);
                out.emplace_back(p.start, buf);
            }
            return out;
        };
        auto v = content(0, 100);
        REQUIRE(v.size() == 3);
        CHECK(v[0] == std::make_pair(std::uint64_t{0}, a.substr(0, 30)));
        CHECK(v[1] == std::make_pair(std::uint64_t{30}, b));
        CHECK(v[2] == std::make_pair(std::uint64_t{60}, a.substr(60)));
        CHECK(content(35, 36).size() == 1);
        CHECK(content(60, 61).front().first == 60);
        CHECK(content(100, 200).empty());

        REQUIRE(ix.punch(7, 10, 20));
        v = content(0, 100);
        REQUIRE(v.size() == 4);
        CHECK(v[0].second == a.substr(0, 10));
        CHECK(v[1].first == 20);
        CHECK(v[1].second == a.substr(20, 10));

        REQUIRE(ix.punch(7, 50, UINT64_MAX)); // truncate to 50
        v = content(0, UINT64_MAX);
        REQUIRE(v.size() == 3);
        CHECK(v[2].first == 30);
        CHECK(v[2].second == b.substr(0, 20));

        // A stale gen reads as stale.
        auto ps = ix.lookup(8, 0, 30);
        REQUIRE(ps->size() == 1);
        auto p = ps->front();
        p.v.gen += 1;
        std::string buf(p.v.len, '\0');
        CHECK(ix.read_piece(p, buf.data()) == PieceRead::stale);
        p.v.gen -= 1;
        p.v.csums[0] ^= 1;
        CHECK(ix.read_piece(p, buf.data()) == PieceRead::bad_checksum);
    }

    TEST_CASE("ExtentIndex: splits keep every block's checksum valid" * doctest::timeout(60)) {
        test::IndexFixture fx(64 * MiB);
        ExtentIndex& ix = fx.ix();
        store::WritePoint& wp = fx.wp;
        constexpr std::uint64_t kSize = 512 * KiB;
        std::string model = random_bytes(kSize, 30);
        std::vector<bool> cached(kSize, true);
        REQUIRE(*ix.insert(wp, 1, 0, model.data(), 256 * KiB));
        REQUIRE(*ix.insert(wp, 1, 256 * KiB, model.data() + 256 * KiB, 256 * KiB));

        std::mt19937 rng(31);
        auto check_all = [&] {
            auto ps = ix.lookup(1, 0, kSize);
            REQUIRE(ps);
            std::uint64_t covered = 0;
            for (auto& p : *ps) {
                std::string buf(p.v.len, '\0');
                REQUIRE(ix.read_piece(p, buf.data()) == PieceRead::ok);
                REQUIRE(buf == model.substr(p.start, p.v.len));
                REQUIRE(std::all_of(cached.begin() + static_cast<std::ptrdiff_t>(p.start),
                                    cached.begin() + static_cast<std::ptrdiff_t>(p.end()),
                                    [](bool c) { return c; }));
                covered += p.v.len;
                // Any part of it reads and verifies on its own.
                const std::uint64_t from = p.start + rng() % p.v.len;
                const std::uint64_t to = from + 1 + rng() % (p.end() - from);
                std::string part(to - from, '\0');
                REQUIRE(ix.read_range(p, from, to, part.data()) == PieceRead::ok);
                REQUIRE(part == model.substr(from, to - from));
            }
            CHECK(covered ==
                  static_cast<std::uint64_t>(std::count(cached.begin(), cached.end(), true)));
        };
        for (int i = 0; i < 300; ++i) {
            const std::uint64_t s = rng() % (kSize - 1);
            const std::uint64_t len = 1 + rng() % std::min<std::uint64_t>(40000, kSize - s);
            if (rng() % 3 != 0) {
                const auto bytes = random_bytes(len, 100 + static_cast<unsigned>(i));
                REQUIRE(*ix.insert(wp, 1, s, bytes.data(), static_cast<std::uint32_t>(len)));
                model.replace(s, len, bytes);
                std::fill(cached.begin() + static_cast<std::ptrdiff_t>(s),
                          cached.begin() + static_cast<std::ptrdiff_t>(s + len), true);
            } else {
                REQUIRE(ix.punch(1, s, s + len));
                std::fill(cached.begin() + static_cast<std::ptrdiff_t>(s),
                          cached.begin() + static_cast<std::ptrdiff_t>(s + len), false);
            }
            if (i % 10 == 0)
                check_all();
        }
        check_all();
    }

    TEST_CASE("ExtentIndex: a split whose edge block is corrupt drops that side" *
              doctest::timeout(30)) {
        test::IndexFixture fx(4 * MiB);
        ExtentIndex& ix = fx.ix();
        store::WritePoint& wp = fx.wp;
        const auto data = random_bytes(64 * KiB, 40);
        REQUIRE(*ix.insert(wp, 2, 0, data.data(), 64 * KiB));
        auto ps = ix.lookup(2, 0, 64 * KiB);
        REQUIRE(ps->size() == 1);
        const auto p = ps->front();
        const std::string junk(4 * KiB, 'X');
        const int raw = ::open(fx.dev->data_path().c_str(), O_WRONLY);
        REQUIRE(raw >= 0);
        REQUIRE(::pwrite(raw, junk.data(), junk.size(),
                         static_cast<off_t>(fx.dev->device_offset(p.v.bucket, p.v.bucket_off) +
                                            3 * 4 * KiB)) == 4 * 1024);
        ::close(raw);
        // Blocks other than the corrupt one still read.
        std::string buf(4 * KiB, '\0');
        CHECK(ix.read_range(p, 8 * KiB, 12 * KiB, buf.data()) == PieceRead::ok);
        CHECK(ix.read_range(p, 12 * KiB + 5, 12 * KiB + 6, buf.data()) == PieceRead::bad_checksum);
        // Overwrite [12K + 100, 20K + 100): the left side's cut block is the
        // corrupt one (dropped), the right side's is good (kept).
        const auto patch = random_bytes(8 * KiB, 41);
        REQUIRE(*ix.insert(wp, 2, 12 * KiB + 100, patch.data(), 8 * KiB));
        ps = ix.lookup(2, 0, 64 * KiB);
        REQUIRE(ps->size() == 2);
        CHECK((*ps)[0].start == 12 * KiB + 100);
        CHECK((*ps)[1].start == 20 * KiB + 100);
        for (auto& q : *ps) {
            std::string all(q.v.len, '\0');
            REQUIRE(ix.read_piece(q, all.data()) == PieceRead::ok);
            CHECK(all == (q.start == 12 * KiB + 100 ? patch : data.substr(20 * KiB + 100)));
        }
    }

    TEST_CASE("miss, then hit; stats move" * doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const auto data = random_bytes(1 * MiB, 3);
        write_file(fx.path("f"), data);
        Handle h(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK_FALSE(h.out.keep_page_cache); // never seen before
        CHECK(h.read(*fx.dp, 1000, 100 * KiB) == data.substr(1000, 100 * KiB));
        CHECK(fx.stat("cache_misses") == 1);
        fx.ctl().drain_fills();
        CHECK(h.read(*fx.dp, 1000, 100 * KiB) == data.substr(1000, 100 * KiB));
        CHECK(fx.stat("cache_hits") == 1);
        CHECK(fx.stat("cache_hit_bytes") == 100 * KiB);
        // Reads past the end and across it.
        CHECK(h.read(*fx.dp, MiB - 10, 100) == data.substr(MiB - 10));
        CHECK(h.read(*fx.dp, MiB + 10, 100).empty());
        CHECK(fx.stat("cache_read_errors") == 0);
        CHECK(fx.stat("cache_used_bytes") >= 128 * KiB);
        // Reopen unchanged: the page cache may be kept and data is a hit.
        Handle h2(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK(h2.out.keep_page_cache);
        CHECK(h2.read(*fx.dp, 0, 64 * KiB) == data.substr(0, 64 * KiB));
        CHECK(fx.stat("cache_hits") == 2);
    }

    TEST_CASE("a sequential stream past the cutoff bypasses the cache" * doctest::timeout(30)) {
        Fx fx;
        fx.cp.sequential_cutoff = 256 * KiB;
        fx.start();
        const auto data = random_bytes(1 * MiB, 4);
        write_file(fx.path("f"), data);
        Handle h(*fx.dp, fx.path("f"), O_RDONLY);
        for (std::uint64_t off = 0; off < MiB; off += 64 * KiB)
            CHECK(h.read(*fx.dp, off, 64 * KiB) == data.substr(off, 64 * KiB));
        CHECK(fx.stat("cache_misses") == 4);
        CHECK(fx.stat("cache_bypass_misses") == 12);
        fx.ctl().drain_fills();
        // A new stream: the first 256K were cached, the rest was not.
        Handle h2(*fx.dp, fx.path("f"), O_RDONLY);
        for (std::uint64_t off = 0; off < MiB; off += 64 * KiB)
            CHECK(h2.read(*fx.dp, off, 64 * KiB) == data.substr(off, 64 * KiB));
        CHECK(fx.stat("cache_hits") == 4);
        CHECK(fx.stat("cache_bypass_misses") == 24);
        // Bypassed reads never fill: only the 4 chunks read before the
        // cutoff were filled, by either stream.
        fx.ctl().drain_fills();
        CHECK(fx.stat("fills") == 4);
        CHECK(fx.stat("cache_used_bytes") == 256 * KiB);
    }

    TEST_CASE("a bypassed read of cached data is a bypass hit, served from the cache" *
              doctest::timeout(30)) {
        Fx fx;
        fx.cp.sequential_cutoff = 256 * KiB;
        fx.start();
        const auto data = random_bytes(1 * MiB, 16);
        write_file(fx.path("f"), data);
        {
            // One read an open, so no open makes a stream: everything filled.
            for (std::uint64_t off = 0; off < MiB; off += 64 * KiB) {
                Handle h(*fx.dp, fx.path("f"), O_RDONLY);
                CHECK(h.read(*fx.dp, off, 64 * KiB) == data.substr(off, 64 * KiB));
            }
            CHECK(fx.stat("cache_misses") == 16);
            CHECK(fx.stat("cache_bypass_misses") == 0);
            fx.ctl().drain_fills();
            REQUIRE(fx.stat("fills") == 16);
        }
        // One stream over all of it: 4 reads up to the cutoff are hits, the 12
        // past it bypass, and find their data in the cache.
        const auto used = fx.stat("cache_used_bytes");
        Handle h(*fx.dp, fx.path("f"), O_RDONLY);
        for (std::uint64_t off = 0; off < MiB; off += 64 * KiB)
            CHECK(h.read(*fx.dp, off, 64 * KiB) == data.substr(off, 64 * KiB));
        CHECK(fx.stat("cache_hits") == 4);
        CHECK(fx.stat("cache_bypass_hits") == 12);
        CHECK(fx.stat("cache_bypass_misses") == 0);
        CHECK(fx.stat("cache_misses") == 16); // none added
        CHECK(fx.stat("cache_hit_bytes") == 1 * MiB);
        CHECK(fx.stat("cache_read_errors") == 0);
        // Nothing was filled or queued, and the cache did not grow.
        CHECK(fx.stat("fills_pending") == 0);
        fx.ctl().drain_fills();
        CHECK(fx.stat("fills") == 16);
        CHECK(fx.stat("cache_used_bytes") == used);
    }

    TEST_CASE("corrupt cache bytes read as a miss, counted, and the data is right" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const auto data = random_bytes(512 * KiB, 5);
        write_file(fx.path("f"), data);
        Handle h(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK(h.read(*fx.dp, 0, 512 * KiB) == data);
        fx.ctl().drain_fills();
        // Scribble over every bucket.
        int fd = ::open((fx.dc.dir + "/data").c_str(), O_WRONLY);
        REQUIRE(fd >= 0);
        const std::string junk(16 * MiB - 256 * KiB, 'X');
        REQUIRE(::pwrite(fd, junk.data(), junk.size(), 256 * KiB) ==
                static_cast<ssize_t>(junk.size()));
        ::close(fd);
        CHECK(h.read(*fx.dp, 1000, 100 * KiB) == data.substr(1000, 100 * KiB));
        CHECK(fx.stat("cache_read_errors") >= 1);
        CHECK(fx.stat("cache_hits") == 0);
        // The miss refilled the chunk: the next read is a good hit again.
        fx.ctl().drain_fills();
        const auto errors = fx.stat("cache_read_errors");
        CHECK(h.read(*fx.dp, 1000, 100 * KiB) == data.substr(1000, 100 * KiB));
        CHECK(fx.stat("cache_hits") == 1);
        CHECK(fx.stat("cache_read_errors") == errors);
    }

    TEST_CASE("a 4 KiB hit in a 256 KiB extent reads and verifies only its block" *
              doctest::timeout(30)) {
        Fx fx;
        fx.cp.fill_size = 256 * KiB;
        fx.start();
        const auto data = random_bytes(256 * KiB, 20);
        write_file(fx.path("f"), data);
        Handle h(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK(h.read(*fx.dp, 0, 256 * KiB) == data);
        fx.ctl().drain_fills();
        REQUIRE(fx.stat("cache_misses") == 1);
        // Find the extent's bytes on the data device and corrupt blocks 9 and
        // 11 of it, on either side of the block read below.
        const std::string dpath = fx.dc.dir + "/data";
        int fd = ::open(dpath.c_str(), O_RDWR);
        REQUIRE(fd >= 0);
        std::string dev(16 * MiB, '\0');
        REQUIRE(::pread(fd, dev.data(), dev.size(), 0) == static_cast<ssize_t>(dev.size()));
        const auto pos = dev.find(data.substr(0, 4 * KiB));
        REQUIRE(pos != std::string::npos);
        REQUIRE(dev.compare(pos, data.size(), data) == 0);
        const std::string junk(4 * KiB, 'X');
        for (std::uint64_t blk : {9, 11})
            REQUIRE(::pwrite(fd, junk.data(), junk.size(),
                             static_cast<off_t>(pos + blk * 4 * KiB)) == 4 * 1024);
        ::close(fd);

        auto read_bytes = fx.stat("cache_read_bytes");
        CHECK(h.read(*fx.dp, 10 * 4 * KiB, 4 * KiB) == data.substr(10 * 4 * KiB, 4 * KiB));
        CHECK(fx.stat("cache_hits") == 1);
        CHECK(fx.stat("cache_read_errors") == 0);
        CHECK(fx.stat("cache_read_bytes") - read_bytes == 4 * KiB); // not 256 KiB
        // Inside one block, unaligned: still that one block.
        read_bytes = fx.stat("cache_read_bytes");
        CHECK(h.read(*fx.dp, 10 * 4 * KiB + 100, 1000) == data.substr(10 * 4 * KiB + 100, 1000));
        CHECK(fx.stat("cache_hits") == 2);
        CHECK(fx.stat("cache_read_bytes") - read_bytes == 4 * KiB);
        // 64 KiB past the corruption: 16 blocks, all good.
        CHECK(h.read(*fx.dp, 12 * 4 * KiB, 64 * KiB) == data.substr(12 * 4 * KiB, 64 * KiB));
        CHECK(fx.stat("cache_hits") == 3);
        CHECK(fx.stat("cache_read_errors") == 0);
        // A corrupt block reads as a miss, is counted, and the data is right.
        CHECK(h.read(*fx.dp, 9 * 4 * KiB, 4 * KiB) == data.substr(9 * 4 * KiB, 4 * KiB));
        CHECK(fx.stat("cache_read_errors") == 1);
        CHECK(fx.stat("cache_hits") == 3);
        CHECK(fx.stat("cache_misses") == 2);
        // That miss refilled the chunk: everything hits again.
        fx.ctl().drain_fills();
        CHECK(h.read(*fx.dp, 0, 256 * KiB) == data);
        CHECK(fx.stat("cache_hits") == 4);
        CHECK(fx.stat("cache_read_errors") == 1);
    }

    TEST_CASE("writethrough: readers see their writes from the cache" * doctest::timeout(30)) {
        Fx fx;
        fx.start();
        auto data = random_bytes(256 * KiB, 6);
        write_file(fx.path("f"), data);
        Handle h(*fx.dp, fx.path("f"));
        CHECK(h.read(*fx.dp, 0, 256 * KiB) == data);
        fx.ctl().drain_fills();
        const auto patch = random_bytes(10000, 7);
        h.write(*fx.dp, 70000, patch);
        data.replace(70000, patch.size(), patch);
        CHECK(h.read(*fx.dp, 0, 256 * KiB) == data);
        CHECK(fx.stat("cache_hits") == 1);
        // Appends are cached too, and the file record follows our own writes.
        const auto tail = random_bytes(5000, 8);
        h.write(*fx.dp, data.size(), tail);
        data += tail;
        CHECK(h.read(*fx.dp, 256 * KiB, 5000) == tail);
        CHECK(fx.stat("cache_hits") == 2);
        Handle h2(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK(h2.out.keep_page_cache); // our own writes did not invalidate the file
        CHECK(h2.read(*fx.dp, 0, data.size()) == data);
        CHECK(fx.stat("cache_hits") == 3);
    }

    TEST_CASE("writearound drops the written range" * doctest::timeout(30)) {
        Fx fx;
        fx.cp.mode = config::CacheMode::writearound;
        fx.start();
        auto data = random_bytes(128 * KiB, 9);
        write_file(fx.path("f"), data);
        Handle h(*fx.dp, fx.path("f"));
        CHECK(h.read(*fx.dp, 0, 128 * KiB) == data);
        fx.ctl().drain_fills();
        const auto patch = random_bytes(100, 10);
        h.write(*fx.dp, 5, patch);
        data.replace(5, 100, patch);
        CHECK(h.read(*fx.dp, 0, 64 * KiB) == data.substr(0, 64 * KiB));
        CHECK(fx.stat("cache_misses") == 2);
        CHECK(h.read(*fx.dp, 64 * KiB, 64 * KiB) == data.substr(64 * KiB)); // other chunk kept
        CHECK(fx.stat("cache_hits") == 1);
    }

    TEST_CASE("fills racing writes never leave stale data" * doctest::timeout(60)) {
        for (auto mode : {config::CacheMode::writethrough, config::CacheMode::writearound}) {
            Fx fx;
            fx.cp.mode = mode;
            fx.cp.fill_size = 16 * KiB;
            fx.start();
            write_file(fx.path("f"), std::string(256 * KiB, 'a'));
            Handle h(*fx.dp, fx.path("f"));
            std::atomic<bool> done{false};
            std::thread reader([&] {
                std::mt19937 rng(1);
                while (!done)
                    h.read(*fx.dp, (rng() % 16) * 16 * KiB, 16 * KiB);
            });
            std::mt19937 rng(2);
            for (int i = 0; i < 300; ++i) {
                const char c = static_cast<char>('b' + i % 20);
                h.write(*fx.dp, (rng() % 64) * 4 * KiB, std::string(4 * KiB, c));
            }
            done = true;
            reader.join();
            fx.ctl().drain_fills();
            std::string truth(256 * KiB, '\0');
            REQUIRE(::pread(h.fd, truth.data(), truth.size(), 0) == 256 * KiB);
            for (std::uint64_t off = 0; off < 256 * KiB; off += 16 * KiB)
                CHECK(h.read(*fx.dp, off, 16 * KiB) == truth.substr(off, 16 * KiB));
            CHECK(fx.stat("cache_read_errors") == 0);
        }
    }

    TEST_CASE("a backing change seen at open drops the cached data" * doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const auto one = random_bytes(128 * KiB, 11), two = random_bytes(128 * KiB, 12);
        write_file(fx.path("f"), one);
        struct stat before {};
        {
            Handle h(*fx.dp, fx.path("f"), O_RDONLY);
            CHECK(h.read(*fx.dp, 0, 128 * KiB) == one);
            fx.ctl().drain_fills();
            REQUIRE(::fstat(h.fd, &before) == 0);
        }
        SUBCASE("same size and mtime (touch -d): ctime tells") {
            int fd = ::open(fx.path("f").c_str(), O_WRONLY);
            REQUIRE(::pwrite(fd, two.data(), two.size(), 0) == static_cast<ssize_t>(two.size()));
            const struct timespec ts[2] = {before.st_atim, before.st_mtim};
            REQUIRE(::futimens(fd, ts) == 0);
            ::close(fd);
        }
        SUBCASE("a new file reusing the name (and perhaps the inode)") {
            ::unlink(fx.path("f").c_str());
            write_file(fx.path("f"), two);
        }
        Handle h(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK_FALSE(h.out.keep_page_cache);
        CHECK(h.read(*fx.dp, 0, 128 * KiB) == two);
        CHECK(fx.stat("cache_hits") == 0);
    }

    TEST_CASE("open_kept: served from the cache without the backing; a miss asks for it, and "
              "once attached the open reads the backing's version" *
              doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const auto one = random_bytes(256 * KiB, 21), two = random_bytes(256 * KiB, 22);
        write_file(fx.path("f"), one);
        struct stat seen {};
        {
            Handle h(*fx.dp, fx.path("f"), O_RDONLY);
            CHECK(h.read(*fx.dp, 0, 64 * KiB) == one.substr(0, 64 * KiB)); // one chunk cached
            fx.ctl().drain_fills();
            REQUIRE(::fstat(h.fd, &seen) == 0);
        }
        // Never cached: no record, the adapter opens the backing instead.
        write_file(fx.path("g"), "g");
        struct stat g_st {};
        REQUIRE(::stat(fx.path("g").c_str(), &g_st) == 0);
        CHECK_FALSE(fx.dp->open_kept(g_st, O_RDONLY, {}));

        SUBCASE("unchanged") {}
        SUBCASE("changed behind the mount, same size and mtime") {
            const int fd = ::open(fx.path("f").c_str(), O_WRONLY);
            REQUIRE(::pwrite(fd, two.data(), two.size(), 0) == static_cast<ssize_t>(two.size()));
            const struct timespec ts[2] = {seen.st_atim, seen.st_mtim};
            REQUIRE(::futimens(fd, ts) == 0);
            ::close(fd);
        }
        struct stat now {};
        REQUIRE(::stat(fx.path("f").c_str(), &now) == 0);
        const bool changed = now.st_ctim.tv_sec != seen.st_ctim.tv_sec ||
                             now.st_ctim.tv_nsec != seen.st_ctim.tv_nsec;
        const std::string& current = changed ? two : one;

        auto kept = fx.dp->open_kept(seen, O_RDONLY, {});
        REQUIRE(kept);
        CHECK(kept->keep_page_cache);
        OpenFile& f = *kept->file;
        std::string buf(64 * KiB, '\0');
        // What the cache holds of the kept version: no backing needed.
        auto r = fx.dp->read(f, buf.data(), buf.size(), 0);
        REQUIRE(r);
        CHECK_FALSE(r->needs_backing);
        CHECK(r->len == buf.size());
        CHECK(buf == one.substr(0, 64 * KiB));
        // Past the kept size: the end, as the mount showed it.
        r = fx.dp->read(f, buf.data(), buf.size(), static_cast<off_t>(256 * KiB));
        REQUIRE(r);
        CHECK_FALSE(r->needs_backing);
        CHECK(r->len == 0);
        // Not cached: the backing is asked for, nothing is read.
        r = fx.dp->read(f, buf.data(), buf.size(), static_cast<off_t>(128 * KiB));
        REQUIRE(r);
        CHECK(r->needs_backing);
        CHECK(r->len == 0);

        const int fd = ::open(fx.path("f").c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        REQUIRE(::fstat(fd, &now) == 0);
        REQUIRE(fx.dp->attach_backing(f, fd, now));
        for (std::uint64_t off : {128 * KiB, std::uint64_t{0}}) {
            r = fx.dp->read(f, buf.data(), buf.size(), static_cast<off_t>(off));
            REQUIRE(r);
            CHECK_FALSE(r->needs_backing);
            if (r->fd >= 0)
                REQUIRE(::pread(r->fd, buf.data(), r->len, r->fd_offset) ==
                        static_cast<ssize_t>(r->len));
            CHECK(r->len == buf.size());
            CHECK(buf == current.substr(off, 64 * KiB));
        }
        kept->file.reset();
        ::close(fd);
    }

    TEST_CASE("invalidate, touched and removed" * doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const auto data = random_bytes(256 * KiB, 13);
        write_file(fx.path("f"), data);
        Handle h(*fx.dp, fx.path("f"));
        CHECK(h.read(*fx.dp, 0, 256 * KiB) == data);
        fx.ctl().drain_fills();
        // truncate through the mount
        auto tr = fx.dp->truncate(h.fd, true, 100 * KiB);
        REQUIRE(tr);
        CHECK_FALSE(tr->backing_changed);
        struct stat st {};
        REQUIRE(::fstat(h.fd, &st) == 0);
        CHECK(h.read(*fx.dp, 0, 256 * KiB) == data.substr(0, 100 * KiB));
        CHECK(fx.stat("cache_hits") == 1); // what is left is still cached
        CHECK_FALSE(attr_change(*fx.dp, h.fd, [&] { REQUIRE(::fchmod(h.fd, 0600) == 0); })
                        .backing_changed);
        {
            Handle h2(*fx.dp, fx.path("f"), O_RDONLY);
            CHECK(h2.out.keep_page_cache);
            CHECK(h2.read(*fx.dp, 0, 64 * KiB) == data.substr(0, 64 * KiB));
            CHECK(fx.stat("cache_hits") == 2);
        }
        fx.dp->removed(FileRef{h.fd, st});
        ::unlink(fx.path("f").c_str());
        // The open file is still readable; from the backing.
        CHECK(h.read(*fx.dp, 0, 64 * KiB) == data.substr(0, 64 * KiB));
        CHECK(fx.stat("cache_hits") == 2);
    }

    TEST_CASE("reclaim keeps the cache within its size and serves right data" *
              doctest::timeout(60)) {
        Fx fx;
        fx.dc.cache_size = 4 * MiB; // 15 buckets of 256K
        fx.start();
        const auto data = random_bytes(12 * MiB, 14);
        write_file(fx.path("big"), data);
        Handle h(*fx.dp, fx.path("big"), O_RDONLY);
        std::mt19937 rng(3);
        for (int round = 0; round < 2; ++round)
            for (std::uint64_t i = 0; i < 192; ++i) {
                const std::uint64_t off = (rng() % 192) * 64 * KiB;
                CHECK(h.read(*fx.dp, off, 64 * KiB) == data.substr(off, 64 * KiB));
                if (i % 16 == 0)
                    fx.ctl().drain_fills();
            }
        fx.ctl().drain_fills();
        fx.ctl().gc_now();
        CHECK(fx.stat("gc_buckets_reclaimed") > 0);
        CHECK(fx.stat("cache_used_bytes") <= 4 * MiB);
        CHECK(fx.stat("buckets_free") >= 1);
        struct stat st {};
        REQUIRE(::stat((fx.dc.dir + "/data").c_str(), &st) == 0);
        CHECK(static_cast<std::uint64_t>(st.st_size) == 4 * MiB);
        CHECK(static_cast<std::uint64_t>(st.st_blocks) * 512 <= 4 * MiB);
        for (std::uint64_t off = 0; off < 12 * MiB; off += 64 * KiB)
            REQUIRE(h.read(*fx.dp, off, 64 * KiB) == data.substr(off, 64 * KiB));
        CHECK(fx.stat("cache_read_errors") == 0);
    }

    TEST_CASE("cached data survives a restart" * doctest::timeout(30)) {
        Fx fx;
        fx.start();
        const auto data = random_bytes(512 * KiB, 15);
        write_file(fx.path("f"), data);
        {
            Handle h(*fx.dp, fx.path("f"), O_RDONLY);
            CHECK(h.read(*fx.dp, 0, 512 * KiB) == data);
            fx.ctl().drain_fills();
        }
        fx.restart();
        Handle h(*fx.dp, fx.path("f"), O_RDONLY);
        CHECK(h.out.keep_page_cache);
        CHECK(h.read(*fx.dp, 0, 512 * KiB) == data);
        CHECK(fx.stat("cache_hits") == 1);
        CHECK(fx.stat("buckets_free") < fx.stat("buckets_total"));
    }

    TEST_CASE("default cache location") {
        CHECK(escape_path("/srv/overcache-demo/fast") == "srv-overcache--demo-fast");
        CHECK(escape_path("/mnt/a-b/c d") == "mnt-a--b-c%20d");
        CHECK(escape_path("/mnt/a/b") != escape_path("/mnt/a-b"));
        CHECK(escape_path("/.hidden/x.y") == "%2Ehidden-x.y");
        CHECK(escape_path("/100%") == "100%25");
        CHECK(escape_path("/") == "-");
        CHECK(escape_path("//srv//x/") == "srv-x");
        CHECK(default_cache_dir("/mnt/x").ends_with("/overcache/mnt-x"));

        // A cache made under the old (systemd-escape) name is still used.
        overcache::test::TmpDir t;
        const char* old_xdg = std::getenv("XDG_CACHE_HOME");
        const std::string saved = old_xdg != nullptr ? old_xdg : "";
        const bool root = ::geteuid() == 0;
        const std::string base = root ? "/var/cache/overcache" : t / "overcache";
        if (!root) {
            ::setenv("XDG_CACHE_HOME", t.path().c_str(), 1);
            REQUIRE(::mkdir(base.c_str(), 0700) == 0);
        }
        const std::string mnt = "/overcache-test-" + std::to_string(::getpid()) + "/a-b";
        CHECK(default_cache_dir(mnt) == base + "/" + escape_path(mnt));
        const std::string legacy = base + "/overcache\\x2dtest\\x2d" +
                                   std::to_string(::getpid()) + "-a\\x2db";
        if (root)
            ::mkdir(base.c_str(), 0700);
        REQUIRE(::mkdir(legacy.c_str(), 0700) == 0);
        CHECK(default_cache_dir(mnt) == legacy);
        ::rmdir(legacy.c_str());
        if (!root) {
            if (old_xdg != nullptr)
                ::setenv("XDG_CACHE_HOME", saved.c_str(), 1);
            else
                ::unsetenv("XDG_CACHE_HOME");
        }
    }
}
