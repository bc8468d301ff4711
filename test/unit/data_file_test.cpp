// store::DataFile: round trips under the alignment contract, zero tails,
// device-end and injected errors, and that the data file's pages stay out of
// the page cache (checked with mincore on a mapping of the file).
#include "overcache/store/data_file.hpp"
#include "tmp_dir.hpp"

#include <algorithm>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache;
using namespace overcache::store;

namespace {

bool is_tmpfs(const std::string& dir) {
    struct statfs sf {};
    return ::statfs(dir.c_str(), &sf) == 0 && sf.f_type == TMPFS_MAGIC;
}

// A directory on a disk filesystem (one with a page cache to bypass), or "".
std::string disk_base() {
    std::vector<std::string> bases;
    if (const char* t = std::getenv("TMPDIR"); t && *t)
        bases.emplace_back(t);
    bases.emplace_back("/var/tmp");
    bases.emplace_back("/tmp");
    for (const auto& b : bases)
        if (::access(b.c_str(), W_OK) == 0 && !is_tmpfs(b))
            return b;
    return {};
}

std::string shm_base() {
    return is_tmpfs("/dev/shm") ? "/dev/shm" : std::string{};
}

// A file of `size` bytes, allocated without writing (so none of it is in
// the page cache).
void make_file(const std::string& path, std::uint64_t size) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    REQUIRE(fd);
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    (void)::fallocate(fd.get(), 0, 0, static_cast<off_t>(size));
}

// Pages of `path` in the page cache.
std::size_t resident_pages(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd);
    struct stat st {};
    REQUIRE(::fstat(fd.get(), &st) == 0);
    const auto len = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd.get(), 0);
    REQUIRE(p != MAP_FAILED);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> vec((len + page - 1) / page);
    const int r = ::mincore(p, len, vec.data());
    ::munmap(p, len);
    REQUIRE(r == 0);
    return static_cast<std::size_t>(
        std::count_if(vec.begin(), vec.end(), [](unsigned char c) { return (c & 1) != 0; }));
}

std::string pattern(std::size_t len, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(len, '\0');
    for (auto& c : s)
        c = static_cast<char>(rng() % 251 + 1); // never 0, so a zero tail shows
    return s;
}

constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t a) {
    return (v + a - 1) / a * a;
}

// What the file should hold: the writes applied with their zero tails.
struct Model {
    std::string bytes;
    void write(std::uint64_t off, const std::string& d, std::size_t block) {
        const auto end = off + d.size();
        std::memcpy(bytes.data() + off, d.data(), d.size());
        std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(end),
                  bytes.begin() + static_cast<std::ptrdiff_t>(round_up(end, block)), '\0');
    }
};

DataFile open_ok(const std::string& path, IoMode mode) {
    auto df = DataFile::open(path, DataFileOptions{mode, false});
    REQUIRE_MESSAGE(df, (df ? "" : to_string(df.error())));
    return std::move(*df);
}

void round_trips(DataFile& df, std::uint64_t file_size) {
    const std::size_t b = df.block_size();
    Model m{std::string(file_size, '\0')};
    // Block-aligned offsets, odd lengths; aligned and misaligned sources
    // (from inside a std::string at +1); one write longer than the 1 MiB
    // bounce buffer.
    struct W {
        std::uint64_t off;
        std::size_t len;
        std::size_t skew;
    };
    const std::vector<W> writes = {
        {0, 1, 0},         {b, b - 1, 1},
        {2 * b, b + 1, 0}, {4 * b, 3 * b + 17, 1},
        {8 * b, 2 * b, 0}, {10 * b, 2 * b, 1},
        {12 * b, 100, 0},  {16 * b, (2u << 20) + 4321, 1}, // chunked through the bounce buffer
    };
    unsigned seed = 1;
    for (const auto& w : writes) {
        REQUIRE(w.off + round_up(w.len, b) <= file_size);
        const std::string d = pattern(w.len, seed++);
        std::vector<char> src(w.len + 2 * b);
        // An aligned address inside src, then skewed.
        auto base = reinterpret_cast<std::uintptr_t>(src.data());
        char* p = src.data() + (round_up(base, b) - base) + w.skew;
        std::memcpy(p, d.data(), w.len);
        auto r = df.write(w.off, p, w.len);
        REQUIRE_MESSAGE(r, (r ? "" : to_string(r.error())));
        m.write(w.off, d, b);
    }
    // Reads at odd offsets and lengths, inside one block and across many.
    std::mt19937_64 rng(7);
    const std::uint64_t span = 16 * b + (2u << 20) + 8192;
    for (int i = 0; i < 200; ++i) {
        const std::uint64_t off = rng() % (span - 1);
        const std::size_t len = static_cast<std::size_t>(
            1 + rng() % std::min<std::uint64_t>(i % 10 == 0 ? (3u << 20) : 3 * b, span - off));
        std::string got(len + 1, '\x55');
        auto r = df.read(off, len, got.data() + (i % 2)); // odd destination too
        REQUIRE_MESSAGE(r, (r ? "" : to_string(r.error())));
        CHECK(std::memcmp(got.data() + (i % 2), m.bytes.data() + off, len) == 0);
    }
    // Aligned everything: the in-place path.
    const std::size_t len = 4 * b;
    void* raw = std::aligned_alloc(b, len);
    REQUIRE(raw != nullptr);
    auto r = df.read(4 * b, len, static_cast<char*>(raw));
    CHECK(r);
    CHECK(std::memcmp(raw, m.bytes.data() + 4 * b, len) == 0);
    std::free(raw);
}

} // namespace

TEST_SUITE("store") {
    TEST_CASE("store::DataFile round trips at odd offsets and lengths") {
        constexpr std::uint64_t kSize = 4u << 20;
        struct Case {
            const char* name;
            std::string base;
            IoMode mode;
        };
        const std::vector<Case> cases = {
            {"disk, automatic", disk_base(), IoMode::automatic},
            {"disk, buffered", disk_base(), IoMode::buffered},
            {"tmpfs, automatic", shm_base(), IoMode::automatic},
            {"tmpfs, buffered", shm_base(), IoMode::buffered},
        };
        for (const auto& c : cases) {
            if (c.base.empty()) {
                MESSAGE("no filesystem for '", std::string(c.name), "': skipped");
                continue;
            }
            INFO(std::string(c.name));
            test::TmpDir tmp("overcache-datafile", c.base);
            make_file(tmp / "data", kSize);
            DataFile df = open_ok(tmp / "data", c.mode);
            MESSAGE(std::string(c.name), ": direct=", df.direct(), " block_size=", df.block_size());
            CHECK(df.block_size() >= 4096);
            CHECK((df.block_size() & (df.block_size() - 1)) == 0);
            if (c.mode == IoMode::buffered)
                CHECK_FALSE(df.direct());
            round_trips(df, kSize);
            const auto st = df.stats();
            CHECK(st.writes == 8);
            CHECK(st.reads == 201);
            CHECK(st.read_errors == 0);
            CHECK(st.write_errors == 0);
            CHECK(df.sync());
        }
    }

    TEST_CASE("store::DataFile zero-fills the tail of the last block") {
        test::TmpDir tmp("overcache-datafile");
        make_file(tmp / "data", 64 * 1024);
        DataFile df = open_ok(tmp / "data", IoMode::automatic);
        const std::size_t b = df.block_size();
        const std::string ones(3 * b, '\xff');
        REQUIRE(df.write(0, ones.data(), ones.size()));
        REQUIRE(df.write(b, "abc", 3));
        std::string got(3 * b, '?');
        REQUIRE(df.read(0, got.size(), got.data()));
        CHECK(got.substr(0, b) == std::string(b, '\xff'));
        CHECK(got.substr(b, 3) == "abc");
        CHECK(got.substr(b + 3, b - 3) == std::string(b - 3, '\0'));
        CHECK(got.substr(2 * b) == std::string(b, '\xff')); // the next block is not touched
    }

    TEST_CASE("store::DataFile refuses a write off the block grid") {
        test::TmpDir tmp("overcache-datafile");
        make_file(tmp / "data", 64 * 1024);
        DataFile df = open_ok(tmp / "data", IoMode::automatic);
        auto r = df.write(df.block_size() + 1, "x", 1);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == Errc::Sys);
        CHECK(r.error().sys_errno == EINVAL);
        char c = 'q';
        REQUIRE(df.read(df.block_size() + 1, 1, &c));
        CHECK(c == '\0'); // nothing was written
        CHECK(df.stats().write_errors == 1);
        CHECK(df.write(0, "", 0)); // nothing to write, nothing owned
    }

    TEST_CASE("store::DataFile reading past the end of the device is an error") {
        for (IoMode mode : {IoMode::automatic, IoMode::buffered}) {
            test::TmpDir tmp("overcache-datafile");
            make_file(tmp / "data", 10000); // not a whole number of blocks
            DataFile df = open_ok(tmp / "data", mode);
            INFO("direct=", df.direct());
            auto sz = df.size();
            REQUIRE(sz);
            CHECK(*sz == 10000);
            std::string buf(10001, '?');
            // Ends exactly at the end of the device: fine, though the
            // covering block runs past it.
            CHECK(df.read(8192, 10000 - 8192, buf.data()));
            CHECK(df.read(9999, 1, buf.data()));
            for (auto [off, len] : {std::pair<std::uint64_t, std::size_t>{9000, 1001},
                                    {10000, 1},
                                    {20000, 4096},
                                    {0, 10001}}) {
                auto r = df.read(off, len, buf.data());
                REQUIRE_FALSE(r);
                CHECK(r.error().code == Errc::Sys);
                CHECK(r.error().sys_errno == EIO);
            }
            CHECK(df.stats().read_errors == 4);
        }
    }

    TEST_CASE("store::DataFile fault hook turns into the errno") {
        test::TmpDir tmp("overcache-datafile");
        make_file(tmp / "data", 64 * 1024);
        DataFile df = open_ok(tmp / "data", IoMode::automatic);
        const std::size_t b = df.block_size();
        REQUIRE(df.write(0, "hello", 5));
        std::vector<std::tuple<DataOp, std::uint64_t, std::size_t>> seen;
        df.set_fault([&](DataOp op, std::uint64_t off, std::size_t len) {
            seen.emplace_back(op, off, len);
            if (op == DataOp::read && off >= b)
                return EIO;
            if (op == DataOp::write)
                return ENOSPC;
            if (op == DataOp::sync)
                return EROFS;
            return 0;
        });
        char buf[5];
        CHECK(df.read(0, 5, buf)); // the hook let it through
        CHECK(std::string(buf, 5) == "hello");
        auto r = df.read(b, 10, buf);
        REQUIRE_FALSE(r);
        CHECK(r.error().sys_errno == EIO);
        auto w = df.write(0, "HELLO", 5);
        REQUIRE_FALSE(w);
        CHECK(w.error().sys_errno == ENOSPC);
        auto s = df.sync();
        REQUIRE_FALSE(s);
        CHECK(s.error().sys_errno == EROFS);
        CHECK(seen.size() == 4);
        CHECK(std::get<1>(seen[1]) == b);
        CHECK(std::get<2>(seen[1]) == 10);

        df.set_fault({});
        REQUIRE(df.read(0, 5, buf));
        CHECK(std::string(buf, 5) == "hello"); // the failed write wrote nothing
        CHECK(seen.size() == 4);
        const auto st = df.stats();
        CHECK(st.read_errors == 1);
        CHECK(st.write_errors == 2); // the write and the sync
        CHECK(st.reads == 2);
        CHECK(st.bytes_read == 10);
        CHECK(st.writes == 1);
        CHECK(st.bytes_written == 5);
    }

    TEST_CASE("store::DataFile with O_DIRECT leaves nothing in the page cache") {
        const std::string base = disk_base();
        if (base.empty()) {
            MESSAGE("SKIP: no disk filesystem here for an O_DIRECT test");
            return;
        }
        test::TmpDir tmp("overcache-datafile", base);
        const std::string path = tmp / "data";
        make_file(path, 1u << 20);
        DataFile df = open_ok(path, IoMode::automatic);
        if (!df.direct()) {
            MESSAGE("SKIP: ", base, " does not accept O_DIRECT");
            return;
        }
        REQUIRE(resident_pages(path) == 0);
        const std::string d = pattern(300000, 3);
        REQUIRE(df.write(0, d.data(), d.size()));
        std::string got(d.size() - 10, '?');
        REQUIRE(df.read(5, got.size(), got.data()));
        CHECK(got == d.substr(5, got.size()));
        CHECK(resident_pages(path) == 0);

        // The measurement itself works: a buffered read does leave pages.
        UniqueFd plain(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        REQUIRE(plain);
        char c = 0;
        REQUIRE(::pread(plain.get(), &c, 1, 0) == 1);
        CHECK(resident_pages(path) > 0);
        (void)::posix_fadvise(plain.get(), 0, 0, POSIX_FADV_DONTNEED);
    }

    TEST_CASE("store::DataFile buffered drops its pages after reads and writes") {
        const std::string base = disk_base();
        if (base.empty()) {
            MESSAGE("SKIP: no disk filesystem here (tmpfs pages cannot be dropped)");
            return;
        }
        test::TmpDir tmp("overcache-datafile", base);
        const std::string path = tmp / "data";
        make_file(path, 1u << 20);
        DataFile df = open_ok(path, IoMode::buffered);
        REQUIRE_FALSE(df.direct());
        const std::size_t b = df.block_size();
        const std::string d = pattern(5 * b + 123, 4);
        REQUIRE(df.write(8 * b, d.data(), d.size()));
        CHECK(resident_pages(path) == 0);
        std::string got(d.size() - 7, '?');
        REQUIRE(df.read(8 * b + 7, got.size(), got.data()));
        CHECK(got == d.substr(7));
        // Scattered small reads: no readahead left behind either.
        for (std::uint64_t off = 100; off < (1u << 20) - 64; off += 37 * 1024 + 5)
            REQUIRE(df.read(off, 64, got.data()));
        CHECK(resident_pages(path) == 0);

        // The measurement itself works: a plain buffered write leaves pages.
        UniqueFd plain(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        REQUIRE(plain);
        REQUIRE(::pwrite(plain.get(), d.data(), b, 0) == static_cast<ssize_t>(b));
        REQUIRE(::fdatasync(plain.get()) == 0);
        CHECK(resident_pages(path) > 0);
        // ... which adopting the file drops (they are clean).
        auto adopted = DataFile::adopt(std::move(plain), IoMode::buffered);
        REQUIRE(adopted);
        CHECK(resident_pages(path) == 0);
    }

    TEST_CASE("store::DataFile falls back to buffered I/O where O_DIRECT is refused") {
        // A memfd is never opened through tmpfs' open(), so F_SETFL refuses
        // O_DIRECT with EINVAL: the refusal a filesystem without direct I/O
        // gives.
        auto make = [] {
            UniqueFd fd(::memfd_create("overcache-datafile", MFD_CLOEXEC));
            REQUIRE(fd);
            REQUIRE(::ftruncate(fd.get(), 64 * 1024) == 0);
            return fd;
        };
        auto strict = DataFile::adopt(make(), IoMode::direct);
        REQUIRE_FALSE(strict);
        CHECK(strict.error().sys_errno == EINVAL);

        auto df = DataFile::adopt(make(), IoMode::automatic);
        REQUIRE_MESSAGE(df, (df ? "" : to_string(df.error())));
        CHECK_FALSE(df->direct());
        CHECK(df->block_size() == 4096);
        const std::string d = pattern(5000, 5);
        REQUIRE(df->write(4096, d.data(), d.size()));
        std::string got(8192, '?');
        REQUIRE(df->read(4096, got.size(), got.data()));
        CHECK(got.substr(0, d.size()) == d);
        CHECK(got.substr(d.size()) == std::string(8192 - d.size(), '\0'));
    }

    TEST_CASE("store::DataFile adopts an open fd") {
        test::TmpDir tmp("overcache-datafile");
        const std::string path = tmp / "data";
        make_file(path, 64 * 1024);
        {
            UniqueFd ro(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
            auto df = DataFile::adopt(std::move(ro));
            REQUIRE_FALSE(df);
            CHECK(df.error().code == Errc::BadValue);
        }
        UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        REQUIRE(fd);
        const int raw = fd.get();
        auto df = DataFile::adopt(std::move(fd));
        REQUIRE(df);
        CHECK(((::fcntl(raw, F_GETFL) & O_DIRECT) != 0) == df->direct());
        REQUIRE(df->write(0, "xyz", 3));
        char buf[3];
        REQUIRE(df->read(0, 3, buf));
        CHECK(std::string(buf, 3) == "xyz");

        DataFile moved = std::move(*df);
        CHECK(moved.valid());
        CHECK_FALSE(df->valid());
        auto r = df->read(0, 1, buf);
        REQUIRE_FALSE(r);
        CHECK(r.error().sys_errno == EBADF);
        DataFile closed;
        CHECK_FALSE(closed.valid());
        CHECK_FALSE(closed.sync());
    }

    TEST_CASE("store::DataFile opens and creates by path" * doctest::timeout(10)) {
        test::TmpDir tmp("overcache-datafile");
        auto missing = DataFile::open(tmp / "none");
        REQUIRE_FALSE(missing);
        CHECK(missing.error().sys_errno == ENOENT);
        auto made = DataFile::open(tmp / "new", DataFileOptions{IoMode::automatic, true});
        REQUIRE(made);
        auto sz = made->size();
        REQUIRE(sz);
        CHECK(*sz == 0);
    }

    TEST_CASE("store::DataFile serves threads concurrently" * doctest::timeout(30)) {
        test::TmpDir tmp("overcache-datafile");
        const std::string path = tmp / "data";
        make_file(path, 1u << 20);
        DataFile df = open_ok(path, IoMode::automatic);
        const std::size_t b = df.block_size();
        const std::string d = pattern(1u << 20, 9);
        REQUIRE(df.write(0, d.data(), d.size()));
        std::atomic<int> bad{0};
        auto reader = [&](unsigned seed) {
            std::mt19937_64 rng(seed);
            std::string buf(3 * b, '\0');
            for (int i = 0; i < 300; ++i) {
                const std::uint64_t off = rng() % ((1u << 20) - buf.size());
                const std::size_t len = 1 + rng() % buf.size();
                if (!df.read(off, len, buf.data()) ||
                    std::memcmp(buf.data(), d.data() + off, len) != 0)
                    bad.fetch_add(1);
            }
        };
        std::thread t1(reader, 1), t2(reader, 2);
        t1.join();
        t2.join();
        CHECK(bad.load() == 0);
    }
}
