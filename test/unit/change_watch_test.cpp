// backing::ChangeWatch on a real local filesystem (the test directory's):
// attributes asked for before a change are never vouched for after it,
// whatever the change (bytes, mode, names, a rename), and whichever way the
// reports are decoded (ext4's handle layout, or asking the filesystem).
#include "backing/change_watch.hpp"
#include "tmp_dir.hpp"
#include "util/wall_clock.hpp"

#include <cstdio>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

using overcache::wall_ns;
using overcache::backing::ChangeWatch;
using overcache::test::TmpDir;

namespace {

std::uint64_t ino_of(const std::string& path) {
    struct stat st {};
    REQUIRE_MESSAGE(::lstat(path.c_str(), &st) == 0, "lstat " << path);
    return st.st_ino;
}

dev_t dev_of(const std::string& path) {
    struct stat st {};
    REQUIRE_MESSAGE(::lstat(path.c_str(), &st) == 0, "lstat " << path);
    return st.st_dev;
}

void write_text(const std::string& path, const std::string& text) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE_MESSAGE(fd >= 0, "open " << path);
    REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    ::close(fd);
}

// The test directory's filesystem as the mount would name it: its handles
// are decoded in place on ext4; `generic` asks the filesystem instead.
const char* fs_name(int fd, bool generic) {
    struct statfs sfs {};
    REQUIRE(::fstatfs(fd, &sfs) == 0);
    return !generic && sfs.f_type == 0xEF53 ? "ext2/3/4" : "a local filesystem";
}

struct Watched {
    explicit Watched(bool generic)
        : root_fd(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)),
          watch(root_fd, true, fs_name(root_fd, generic)) {
        REQUIRE_MESSAGE(watch.watching(), "not watching (the test runs as root on a local "
                                          "filesystem): "
                                              << watch.why());
    }
    ~Watched() { ::close(root_fd); }
    std::string at(const std::string& rel) const { return dir.path() + "/" + rel; }

    TmpDir dir{"change_watch"};
    int root_fd;
    ChangeWatch watch;
};

} // namespace

TEST_CASE("change_watch: what changed since it was asked for is not vouched for") {
    for (const bool generic : {false, true}) {
        CAPTURE(generic);
        Watched w(generic);
        REQUIRE(::mkdir(w.at("d").c_str(), 0755) == 0);
        write_text(w.at("d/a"), "aaaa");
        write_text(w.at("d/b"), "bb");
        const dev_t dev = dev_of(w.at("d"));
        const std::uint64_t d = ino_of(w.at("d"));
        const std::uint64_t a = ino_of(w.at("d/a"));
        const std::uint64_t b = ino_of(w.at("d/b"));

        // Asked for now: nothing changed since. (The changes just made are
        // read first: a change read after an ask counts against it, even
        // if it was made before.)
        w.watch.read_reports();
        std::int64_t asked = wall_ns();
        CHECK(w.watch.unchanged_since(dev, a, asked));
        CHECK(w.watch.unchanged_since(dev, b, asked));
        CHECK(w.watch.unchanged_since(dev, d, asked));
        // Another filesystem's inode of that number (one mounted below the
        // backing's root, whose changes are not reported): never.
        CHECK_FALSE(w.watch.unchanged_since(dev + 1, a, asked));

        SUBCASE("bytes") {
            write_text(w.at("d/a"), "AAAA");
            CHECK_FALSE(w.watch.unchanged_since(dev, a, asked));
            CHECK(w.watch.unchanged_since(dev, b, asked));
            CHECK(w.watch.unchanged_since(dev, d, asked)); // its names did not change
        }
        SUBCASE("mode") {
            REQUIRE(::chmod(w.at("d/b").c_str(), 0600) == 0);
            CHECK_FALSE(w.watch.unchanged_since(dev, b, asked));
            CHECK(w.watch.unchanged_since(dev, a, asked));
        }
        SUBCASE("a truncate") {
            REQUIRE(::truncate(w.at("d/b").c_str(), 1) == 0);
            CHECK_FALSE(w.watch.unchanged_since(dev, b, asked));
        }
        SUBCASE("a new name") {
            write_text(w.at("d/c"), "c");
            CHECK_FALSE(w.watch.unchanged_since(dev, d, asked));
            CHECK(w.watch.unchanged_since(dev, a, asked));
        }
        SUBCASE("a name removed") {
            REQUIRE(::unlink(w.at("d/b").c_str()) == 0);
            CHECK_FALSE(w.watch.unchanged_since(dev, d, asked));
        }
        SUBCASE("a rename: both directories and the moved file (its ctime)") {
            REQUIRE(::mkdir(w.at("e").c_str(), 0755) == 0);
            const std::uint64_t e = ino_of(w.at("e"));
            w.watch.read_reports();
            asked = wall_ns();
            REQUIRE(::rename(w.at("d/a").c_str(), w.at("e/a").c_str()) == 0);
            CHECK_FALSE(w.watch.unchanged_since(dev, d, asked));
            CHECK_FALSE(w.watch.unchanged_since(dev, e, asked));
            CHECK_FALSE(w.watch.unchanged_since(dev, a, asked));
            CHECK(w.watch.unchanged_since(dev, b, asked));
        }
        SUBCASE("a directory's own mode") {
            REQUIRE(::chmod(w.at("d").c_str(), 0700) == 0);
            CHECK_FALSE(w.watch.unchanged_since(dev, d, asked));
        }
        SUBCASE("asked for again after the change: vouched for from then on") {
            write_text(w.at("d/a"), "AAAA");
            CHECK_FALSE(w.watch.unchanged_since(dev, a, asked));
            const std::int64_t again = wall_ns();
            CHECK(w.watch.unchanged_since(dev, a, again));
            CHECK(w.watch.changed_at(a) != 0);
            CHECK(w.watch.changed_at(a) < again);
        }
        CHECK(w.watch.counts().reports > 0);
    }
}

TEST_CASE("change_watch: a change between the backing's answer and its record is counted "
          "against it") {
    // The seam: a lookup stamps its time, the backing answers, another
    // process changes the file, and only then is the answer recorded and
    // later questioned. The stamp was taken before the answer, so the
    // change counts against it, however soon the reports are read.
    Watched w(false);
    write_text(w.at("f"), "one");
    const dev_t dev = dev_of(w.at("f"));
    const std::int64_t asked = wall_ns();
    struct stat answered {};
    REQUIRE(::stat(w.at("f").c_str(), &answered) == 0);
    write_text(w.at("f"), "two"); // behind: after the answer, before the record
    // Reading the reports before the question (the reader thread may have
    // done so already) changes nothing.
    (void)w.watch.changed_at(answered.st_ino);
    CHECK_FALSE(w.watch.unchanged_since(dev, answered.st_ino, asked));
}

TEST_CASE("change_watch: nothing asked for before the watch began is vouched for") {
    TmpDir dir("change_watch");
    const std::string f = dir.path() + "/f";
    write_text(f, "x");
    const dev_t dev = dev_of(f);
    const std::int64_t before = wall_ns();
    const int root = ::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(root >= 0);
    {
        ChangeWatch w(root, true, fs_name(root, false));
        REQUIRE(w.watching());
        CHECK_FALSE(w.unchanged_since(dev, ino_of(f), before));
        const std::int64_t after = wall_ns();
        CHECK(w.unchanged_since(dev, ino_of(f), after));
    }
    {
        ChangeWatch off(root, false, "ext2/3/4");
        CHECK(off.state() == ChangeWatch::State::off);
        CHECK_FALSE(off.unchanged_since(dev, ino_of(f), wall_ns()));
    }
    {
        // A network or FUSE filesystem: changes made elsewhere are not
        // reported, so it is never watched.
        ChangeWatch remote(root, true, nullptr);
        CHECK(remote.state() == ChangeWatch::State::unavailable);
        CHECK(remote.why().find("not a local filesystem") != std::string::npos);
        CHECK_FALSE(remote.unchanged_since(dev, ino_of(f), wall_ns()));
    }
    ::close(root);
}
