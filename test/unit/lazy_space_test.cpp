// A file-backed cache takes disk space as it is used: the data file is
// sparse when formatted, grows a bucket at a time as the Allocator hands
// buckets out (FileSpace::back), keeps a cache made whole by an older
// overcache working, stops taking fresh buckets at cache_min_free and has
// GC give freed buckets back (punched) while below it. Sizes are measured
// as st_blocks of the real data file; the free-space floor is tested on a
// small real tmpfs (root only: skipped with a message otherwise).
#include "overcache/bg/executors.hpp"
#include "overcache/bg/gc.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "small_fs.hpp"
#include "tmp_dir.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <string>
#include <sys/ioctl.h>
#include <unistd.h>
#include <vector>

using namespace overcache;
using namespace overcache::store;

namespace {

constexpr std::uint64_t kMiB = 1u << 20;

DeviceConfig config_in(const std::string& dir, std::uint64_t cache_size,
                       std::uint64_t min_free = 0) {
    DeviceConfig c;
    c.dir = dir;
    c.cache_size = cache_size;
    c.bucket_size = kMiB;
    c.min_free_bytes = min_free;
    c.backing = BackingIdentity{"/srv/backing", 11, 2};
    return c;
}

std::unique_ptr<CacheDevice> open_dev(const DeviceConfig& c) {
    auto d = open_cache_device(c);
    REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
    return std::move(*d);
}

std::unique_ptr<Allocator> allocator_for(CacheDevice& dev, std::uint32_t reserve = 1) {
    auto a = std::make_unique<Allocator>(dev.meta(),
                                         static_cast<std::uint32_t>(dev.superblock().bucket_count),
                                         dev.superblock().bucket_size, reserve, dev.block_size());
    a->set_space(dev.space());
    REQUIRE(a->load_all());
    return a;
}

// Takes a whole bucket through `wp` and fills it with bytes, as a fill
// would; returns false when the allocator has none to give.
bool cache_one_bucket(CacheDevice& dev, Allocator& a, WritePoint& wp, char byte) {
    auto x = a.alloc(wp, static_cast<std::uint32_t>(dev.superblock().bucket_size));
    if (!x)
        return false;
    const std::string data(dev.superblock().bucket_size, byte);
    auto r = dev.write(dev.device_offset(x->bucket, x->offset), data.data(), data.size());
    REQUIRE_MESSAGE(r, (r ? "" : to_string(r.error())));
    return true;
}

// A loop device over a file, detached when the object dies (root only; ok()
// is false where loop devices cannot be had).
class LoopDev {
public:
    explicit LoopDev(const std::string& file) {
        const int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
            return;
        const int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
        ::close(ctl);
        if (n < 0)
            return;
        path_ = "/dev/loop" + std::to_string(n);
        const int f = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
        fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
        if (f >= 0 && fd_ >= 0 && ::ioctl(fd_, LOOP_SET_FD, f) == 0)
            ok_ = true;
        if (f >= 0)
            ::close(f);
    }
    LoopDev(const LoopDev&) = delete;
    LoopDev& operator=(const LoopDev&) = delete;
    ~LoopDev() {
        if (ok_)
            ::ioctl(fd_, LOOP_CLR_FD, 0);
        if (fd_ >= 0)
            ::close(fd_);
    }
    bool ok() const { return ok_; }
    const std::string& path() const { return path_; }

private:
    std::string path_;
    int fd_ = -1;
    bool ok_ = false;
};

} // namespace

TEST_SUITE("store") {
    TEST_CASE("a file cache is sparse when formatted and grows a bucket at a time") {
        test::TmpDir tmp;
        const auto c = config_in(tmp / "cache", 64 * kMiB);
        auto dev = open_dev(c);
        const std::string data = c.dir + "/data";
        const std::uint64_t at_format = test::allocated_bytes(data);
        MESSAGE("64 MiB cache, just formatted: st_blocks*512 = ", at_format);
        CHECK(at_format <= 64 * 1024); // the 4 KiB header, give or take the filesystem
        auto a = allocator_for(*dev);
        CHECK(a->backed_count() == 0);
        WritePoint fg("fg", false);
        constexpr int kN = 8;
        // Each full bucket closes when the next one opens: N + 1 opened.
        for (int i = 0; i < kN; ++i)
            REQUIRE(cache_one_bucket(*dev, *a, fg, static_cast<char>('a' + i)));
        const std::uint64_t after_n = test::allocated_bytes(data);
        MESSAGE("after caching ", kN, " buckets: st_blocks*512 = ", after_n);
        CHECK(after_n >= at_format + kN * kMiB);
        CHECK(after_n <= at_format + (kN + 1) * kMiB + 64 * 1024);
        CHECK(a->backed_count() == kN);
        // Until full: never more than cache_size, and every bucket backed.
        while (cache_one_bucket(*dev, *a, fg, 'z')) {
        }
        const std::uint64_t full = test::allocated_bytes(data);
        MESSAGE("full (", a->backed_count(), " of ", a->bucket_count(),
                " buckets backed): st_blocks*512 = ", full);
        CHECK(full <= c.cache_size);
        CHECK(a->backed_count() >= a->bucket_count() - a->reserve());
        REQUIRE(a->save_all());
        const auto backed = a->backed_count();
        a.reset();
        dev.reset();
        // Reopened: the bucket records say which buckets hold data, so they
        // count as backed without asking the filesystem.
        dev = open_dev(config_in(c.dir, 0));
        a = allocator_for(*dev);
        CHECK(a->backed_count() == backed);
    }

    TEST_CASE("a cache preallocated whole by an older overcache has every bucket backed") {
        test::TmpDir tmp;
        const auto c = config_in(tmp / "cache", 16 * kMiB);
        { auto dev = open_dev(c); }
        const std::string data = c.dir + "/data";
        {
            const int fd = ::open(data.c_str(), O_RDWR);
            REQUIRE(fd >= 0);
            REQUIRE(::fallocate(fd, 0, 0, static_cast<off_t>(c.cache_size)) == 0);
            ::close(fd);
        }
        auto dev = open_dev(c);
        CHECK_FALSE(dev->formatted_now());
        auto a = allocator_for(*dev);
        CHECK(a->backed_count() == a->bucket_count());
        WritePoint fg("fg", false);
        int taken = 0;
        while (cache_one_bucket(*dev, *a, fg, 'q'))
            ++taken;
        CHECK(taken == static_cast<int>(a->bucket_count() - a->reserve()));
        CHECK(test::allocated_bytes(data) >= c.cache_size); // nothing punched, nothing lost
    }

    TEST_CASE("a data file larger than its filesystem is refused; the default fits in it") {
        test::TmpDir tmp;
        auto c = config_in(tmp / "cache", 1ull << 50); // 1 PiB
        auto d = open_cache_device(c);
        REQUIRE_FALSE(d);
        CHECK(d.error().code == Errc::BadValue);
        CHECK(d.error().message.find("larger than the filesystem") != std::string::npos);
        auto def = default_cache_size(tmp.path(), kMiB);
        REQUIRE(def);
        CHECK(*def >= 64 * kMiB);
        CHECK(*def <= 64 * (kMiB << 10));
    }

    TEST_CASE("below cache_min_free no fresh bucket is taken, and GC gives freed ones back") {
        test::SmallFs fs(64 * kMiB);
        if (!fs.ok()) {
            MESSAGE(test::SmallFs::why_not());
            return;
        }
        const std::uint64_t min_free = 16 * kMiB;
        const auto c = config_in(fs / "cache", 40 * kMiB, min_free);
        auto dev = open_dev(c);
        const std::string data = c.dir + "/data";
        // Someone else takes 20 MiB of the filesystem.
        {
            const int fd = ::open((fs / "filler").c_str(), O_CREAT | O_WRONLY, 0600);
            REQUIRE(fd >= 0);
            REQUIRE(::fallocate(fd, 0, 0, static_cast<off_t>(20 * kMiB)) == 0);
            ::close(fd);
        }
        dev->file_space()->refresh();
        const std::uint64_t free_before = fs.free_bytes();
        auto a = allocator_for(*dev);
        WritePoint fg("fg", false);
        std::uint32_t taken = 0;
        while (cache_one_bucket(*dev, *a, fg, 'x'))
            ++taken;
        const std::uint64_t grown = test::allocated_bytes(data);
        MESSAGE("free before ", free_before, ", buckets taken ", taken, ", data file ", grown,
                " bytes, free after ", fs.free_bytes(), ", floor ", min_free);
        // Stopped by the floor, not by the cache's size.
        CHECK(a->backed_count() < a->bucket_count() - a->reserve());
        CHECK(fs.free_bytes() >= min_free);
        CHECK(grown <= free_before - min_free + 64 * 1024);
        CHECK(a->free_count() == 0); // the fresh buckets left are not to be had
        CHECK_FALSE(a->alloc(fg, 4096));
        // GC frees buckets while below the floor: their space goes back.
        const auto backed = a->backed_count();
        bg::Executors ex{bg::Executors::Mode::manual};
        bg::Gc gc(ex.gc().make_strand(), *a, dev->meta(), bg::GcParams{2, 6});
        gc.trigger();
        ex.gc().run_until_idle();
        const auto freed = gc.stats().buckets_reclaimed;
        MESSAGE("gc freed ", freed, " buckets; data file now ", test::allocated_bytes(data),
                " bytes, ", a->backed_count(), " buckets backed");
        CHECK(freed > 0);
        CHECK(a->backed_count() == backed - freed);
        CHECK(test::allocated_bytes(data) + freed * kMiB <= grown + 64 * 1024);
        // The space given back lets the cache take buckets again.
        dev->file_space()->refresh();
        CHECK(cache_one_bucket(*dev, *a, fg, 'y'));
        gc.stop();
    }

    TEST_CASE("a full filesystem is a full cache, not a failed write") {
        test::SmallFs fs(32 * kMiB);
        if (!fs.ok()) {
            MESSAGE(test::SmallFs::why_not());
            return;
        }
        const auto c = config_in(fs / "cache", 24 * kMiB, 0); // no floor: the disk's end
        auto dev = open_dev(c);
        auto a = allocator_for(*dev);
        // Someone else leaves 4 MiB free.
        const std::string filler = fs / "filler";
        {
            const int fd = ::open(filler.c_str(), O_CREAT | O_WRONLY, 0600);
            REQUIRE(fd >= 0);
            REQUIRE(::fallocate(fd, 0, 0, static_cast<off_t>(fs.free_bytes() - 4 * kMiB)) == 0);
            ::close(fd);
        }
        WritePoint fg("fg", false);
        std::uint32_t taken = 0;
        while (cache_one_bucket(*dev, *a, fg, 'e')) // every write succeeds
            ++taken;
        MESSAGE("4 MiB free: ", taken, " buckets taken, ", a->backed_count(), " backed");
        CHECK(taken <= 4);
        CHECK(a->backed_count() <= 4);
        // Space again: the cache grows again.
        REQUIRE(::unlink(filler.c_str()) == 0);
        CHECK(cache_one_bucket(*dev, *a, fg, 'f'));
        CHECK(a->backed_count() > taken);
    }

    TEST_CASE("a block device is used whole: no space is allocated or given back") {
        if (::geteuid() != 0) {
            MESSAGE("not root: no loop device, skipped");
            return;
        }
        test::TmpDir tmp;
        const std::string img = tmp / "dev.img";
        {
            const int fd = ::open(img.c_str(), O_CREAT | O_RDWR, 0600);
            REQUIRE(fd >= 0);
            REQUIRE(::ftruncate(fd, static_cast<off_t>(16 * kMiB)) == 0);
            ::close(fd);
        }
        LoopDev loop(img);
        if (!loop.ok()) {
            MESSAGE("no loop device to be had, skipped");
            return;
        }
        auto c = config_in(tmp / "cache", 0, 1ull << 50); // a floor no filesystem meets
        c.dev = loop.path();
        auto dev = open_dev(c);
        CHECK(dev->space() == nullptr);
        auto a = allocator_for(*dev);
        CHECK(a->backed_count() == a->bucket_count());
        WritePoint fg("fg", false);
        std::uint32_t taken = 0;
        while (cache_one_bucket(*dev, *a, fg, 'b'))
            ++taken;
        CHECK(taken == a->bucket_count() - a->reserve());
        CHECK(a->give_back(4) == 0);
    }
}
