// Test support: an ExtentIndex over a fresh cache device (data file and
// index) in its own temporary directory, with an empty allocator, as the
// caching path would build it but without the path itself.
#pragma once

#include "overcache/cache/extent_index.hpp"
#include "overcache/store/allocator.hpp"
#include "overcache/store/cache_device.hpp"
#include "tmp_dir.hpp"

#include <cstdint>
#include <doctest/doctest.h>
#include <memory>
#include <optional>

namespace overcache::test {

struct IndexFixture {
    TmpDir tmp;
    store::DeviceConfig dc;
    std::unique_ptr<store::CacheDevice> dev;
    std::optional<store::Allocator> alloc;
    std::optional<cache::ExtentIndex> index;
    store::WritePoint wp{"test", false};

    explicit IndexFixture(std::uint64_t cache_size, std::uint64_t bucket_size = 256u << 10) {
        dc.dir = tmp / "cache";
        dc.cache_size = cache_size;
        dc.bucket_size = bucket_size;
        dc.backing = {"/b", 1, 1};
        auto d = store::open_cache_device(dc);
        REQUIRE_MESSAGE(d, (d ? "" : d.error().message));
        dev = std::move(*d);
        alloc.emplace(dev->meta(), static_cast<std::uint32_t>(dev->superblock().bucket_count),
                      bucket_size, 1, dev->block_size());
        alloc->finish_load();
        index.emplace(*dev, *alloc);
    }

    cache::ExtentIndex& ix() { return *index; }
};

} // namespace overcache::test
