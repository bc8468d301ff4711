// DOC: the passthrough DataPath (cache_mode=none). Every read is a zero-copy
// splice from the backing fd and every write a splice to it; nothing is
// remembered, so the change hooks have nothing to do.
#include "backing/file_ops.hpp"
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

int fd_of(OpenFile& f) {
    return static_cast<PassthroughFile&>(f).fd();
}

class PassthroughPath final : public DataPath {
public:
    using DataPath::open;
    Result<OpenOut> open(int fd, const struct stat& /*st*/, int /*open_flags*/,
                         const FilePolicy& /*policy*/) override {
        // Nothing to compare against, so the page cache is kept only until
        // the next open, exactly as a plain passthrough with keep_cache off.
        return OpenOut{std::make_unique<PassthroughFile>(fd), false};
    }
    using DataPath::read;
    // Spliced from the backing by the adapter (which reads it through the
    // gate instead when its calls are gated).
    Result<ReadOut> read(OpenFile& f, char* /*buf*/, std::size_t size, off_t off,
                         const BackingRead& /*backing*/) override {
        return ReadOut{fd_of(f), off, size};
    }
    void write(OpenFile& f, WriteSource& src, off_t off, Done<std::size_t> done) override {
        const ssize_t n = src.write_to(fd_of(f), off);
        if (n < 0)
            return done(fail_sys(static_cast<int>(-n)));
        done(static_cast<std::size_t>(n));
    }
    void fsync(OpenFile& f, bool datasync, Done<void> done) override {
        done(backing::sync_file(fd_of(f), datasync));
    }
    Result<ChangeOut> truncate(int fd, bool fd_is_open, std::uint64_t size) override {
        if (auto r = backing::truncate_file(fd, fd_is_open, size); !r)
            return fail(r.error());
        return ChangeOut{};
    }
    Result<void> fallocate(OpenFile& f, int mode, off_t off, off_t len) override {
        return backing::fallocate_file(fd_of(f), mode, off, len);
    }
    Result<std::size_t> copy_file_range(OpenFile& in, off_t off_in, OpenFile& out, off_t off_out,
                                        std::size_t len, unsigned flags) override {
        return backing::copy_range(fd_of(in), off_in, fd_of(out), off_out, len, flags);
    }
    Result<off_t> lseek(OpenFile& f, off_t off, int whence) override {
        return backing::seek(fd_of(f), off, whence);
    }
    ChangeOut getattr(FileRef /*file*/, struct stat& /*st*/) override { return {}; }
    Result<std::unique_ptr<AttrChange>> begin_attr_change(FileRef /*file*/) override {
        struct Nothing final : AttrChange {
            ChangeOut finish(bool) override { return {}; }
        };
        return std::unique_ptr<AttrChange>(std::make_unique<Nothing>());
    }
    void removed(FileRef /*file*/) override {}
    std::vector<std::pair<std::string, std::string>> stats() const override {
        return {}; // cache_mode is a setting: the registry shows it
    }
    void show_attrs(FileRef, struct stat&) override {}
    bool keep_mtime(FileRef, const struct timespec&) override { return false; }
    void flush(Done<void> done) override { done({}); } // nothing is ever dirty
    // A mount without a cache: a prefetch would fetch nothing, and saying
    // so beats a success that leaves the user waiting on the backing.
    using DataPath::prefetch;
    void prefetch(FileRef /*file*/, const FilePolicy& /*policy*/, Done<void> done) override {
        done(fail(Errc::NotSupported, "this mount has no cache (cache_mode=none)"));
    }
    void stop() override {}
};

} // namespace

std::unique_ptr<DataPath> make_passthrough() {
    return std::make_unique<PassthroughPath>();
}

} // namespace overcache::cache
