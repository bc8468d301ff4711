// DOC: the passthrough DataPath. Every read is a zero-copy splice from the
// backing fd; nothing is remembered, so the change hooks have nothing to do.
#include "overcache/cache/data_path.hpp"
#include "overcache/cache/factory.hpp"

namespace overcache::cache {
namespace {

class PassthroughFile final : public OpenFile {
public:
    explicit PassthroughFile(int fd) : fd_(fd) {}
    int fd() const { return fd_; }

private:
    int fd_; // borrowed from the adapter's file handle
};

class PassthroughPath final : public DataPath {
public:
    Result<OpenOut> open(int fd, const struct stat& /*st*/, int /*open_flags*/) override {
        // Nothing to compare against, so the page cache is kept only until
        // the next open, exactly as a plain passthrough with keep_cache off.
        return OpenOut{std::make_unique<PassthroughFile>(fd), false};
    }
    Result<ReadOut> read(OpenFile& f, char* /*buf*/, std::size_t size, off_t off) override {
        return ReadOut{static_cast<PassthroughFile&>(f).fd(), off, size};
    }
    bool wants_write_data(const OpenFile& /*f*/) const override { return false; }
    void wrote(OpenFile&, const char*, std::size_t, off_t) override {}
    void invalidate(FileRef, std::uint64_t, std::uint64_t) override {}
    void touched(FileRef) override {}
    void removed(FileRef) override {}
    std::vector<std::pair<std::string, std::string>> stats() const override {
        return {{"cache_mode", "none"}};
    }
    void stop() override {}
};

} // namespace

std::unique_ptr<DataPath> make_passthrough() {
    return std::make_unique<PassthroughPath>();
}

} // namespace overcache::cache
