// Test support for driving a DataPath without FUSE: file_bytes.hpp (seeded
// random bytes, files written straight to the backing), and a write
// request's bytes in memory (what the adapter's fuse_bufvec source is in production).
#pragma once

#include "file_bytes.hpp"
#include "overcache/cache/data_path.hpp"

#include <cerrno>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <random>
#include <string>
#include <unistd.h>

namespace overcache::test {

class MemSource final : public cache::WriteSource {
public:
    explicit MemSource(const std::string& d) : d_(d) {}
    std::size_t size() const override { return d_.size(); }
    ssize_t copy_to(char* out) override {
        std::memcpy(out, d_.data(), d_.size());
        return static_cast<ssize_t>(d_.size());
    }
    ssize_t write_to(int fd, off_t off) override {
        const ssize_t n = ::pwrite(fd, d_.data(), d_.size(), off);
        return n < 0 ? -errno : n;
    }

private:
    const std::string& d_;
};

// A change of a file's inode made as the adapter makes it: bracketed by
// begin_attr_change, `change` run on the backing in between.
template <class F>
cache::ChangeOut attr_change(cache::DataPath& dp, int fd, F&& change, bool renamed = false) {
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        return {};
    auto guard = dp.begin_attr_change(cache::FileRef{fd, st});
    if (!guard)
        return {}; // no thread here calls the backing with a deadline: never
    change();
    return (*guard)->finish(renamed);
}

} // namespace overcache::test
