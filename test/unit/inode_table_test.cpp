// fuse::InodeTable: numbering, exact lookup counts, forget, shrinking.
#include "fuse/inode_table.hpp"
#include "tmp_dir.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using overcache::UniqueFd;
using namespace overcache::fuse;

namespace {

struct Fixture {
    overcache::test::TmpDir dir{"oc-inode-table"};

    UniqueFd open_path(const std::string& name) const {
        return UniqueFd(::open((dir / name).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    }
    struct stat lstat_of(const std::string& name) const {
        struct stat st {};
        REQUIRE(::lstat((dir / name).c_str(), &st) == 0);
        return st;
    }
    void touch(const std::string& name) const {
        const int fd = ::open((dir / name).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        ::close(fd);
    }
    InodeTable make_table() const {
        UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        REQUIRE(root.valid());
        struct stat st {};
        REQUIRE(::fstat(root.get(), &st) == 0);
        return InodeTable(std::move(root), st);
    }
    InodePtr lookup(InodeTable& t, const std::string& name) const {
        UniqueFd fd = open_path(name);
        REQUIRE(fd.valid());
        return t.lookup(std::move(fd), lstat_of(name));
    }
};

} // namespace

TEST_SUITE("fuse") {
    TEST_CASE_FIXTURE(Fixture, "InodeTable: root is 1, numbers start after the control file") {
        InodeTable t = make_table();
        CHECK(t.size() == 1);
        REQUIRE(t.get(kRootIno) != nullptr);
        CHECK(t.get(kRootIno)->is_dir());
        CHECK(t.get(kControlIno) == nullptr);
        touch("a");
        InodePtr a = lookup(t, "a");
        CHECK(a->ino() == kFirstIno);
        CHECK(a->ino() != kControlIno);
        CHECK(t.size() == 2);
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: one entry per backing file, counted exactly") {
        InodeTable t = make_table();
        touch("a");
        REQUIRE(::link((dir / "a").c_str(), (dir / "hard").c_str()) == 0);
        InodePtr a1 = lookup(t, "a");
        InodePtr a2 = lookup(t, "a");
        InodePtr h = lookup(t, "hard"); // same (st_dev, st_ino): same entry
        CHECK(a1 == a2);
        CHECK(a1 == h);
        CHECK(t.size() == 2);
        const Ino ino = a1->ino();

        t.forget(ino, 2);
        CHECK(t.get(ino) != nullptr); // one lookup left
        t.forget(ino, 1);
        CHECK(t.get(ino) == nullptr);
        CHECK(t.size() == 1);

        // The file is looked up again: a new number, never the old one.
        InodePtr again = lookup(t, "a");
        CHECK(again->ino() != ino);
    }

    TEST_CASE_FIXTURE(Fixture,
                      "InodeTable: forget of unknown, root and control numbers is ignored") {
        InodeTable t = make_table();
        t.forget(kRootIno, 1000);
        t.forget(kControlIno, 1);
        t.forget(987654, 1);
        CHECK(t.size() == 1);
        CHECK(t.get(kRootIno) != nullptr);
        // A lookup of the root through another name counts nothing that matters.
        UniqueFd fd(::open(dir.path().c_str(), O_PATH | O_CLOEXEC));
        struct stat st {};
        REQUIRE(::fstat(fd.get(), &st) == 0);
        CHECK(t.lookup(std::move(fd), st)->ino() == kRootIno);
        CHECK(t.size() == 1);
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: an entry keeps its fd valid while used after forget") {
        InodeTable t = make_table();
        touch("a");
        InodePtr a = lookup(t, "a");
        const int fd = a->fd();
        t.forget(a->ino(), 1);
        CHECK(t.get(a->ino()) == nullptr);
        struct stat st {};
        CHECK(::fstatat(fd, "", &st, AT_EMPTY_PATH) == 0); // still ours until `a` goes
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: follows a file across renames") {
        InodeTable t = make_table();
        touch("a");
        InodePtr a = lookup(t, "a");
        REQUIRE(::rename((dir / "a").c_str(), (dir / "b").c_str()) == 0);
        CHECK(lookup(t, "b") == a);
        struct stat st {};
        REQUIRE(::fstatat(a->fd(), "", &st, AT_EMPTY_PATH) == 0);
        CHECK(st.st_ino == lstat_of("b").st_ino);
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: shrinks back after many lookups are forgotten") {
        InodeTable t = make_table();
        constexpr int kFiles = 2000;
        std::vector<Ino> inos;
        for (int i = 0; i < kFiles; ++i) {
            const std::string name = "f" + std::to_string(i);
            touch(name);
            inos.push_back(lookup(t, name)->ino());
            lookup(t, name); // twice
        }
        CHECK(t.size() == kFiles + 1);
        for (Ino ino : inos)
            t.forget(ino, 1);
        CHECK(t.size() == kFiles + 1);
        for (Ino ino : inos)
            t.forget(ino, 1);
        CHECK(t.size() == 1);
    }
}
