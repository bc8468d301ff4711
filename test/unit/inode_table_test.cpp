// fuse::InodeTable: numbering, exact lookup counts, forget, shrinking, and
// the names and attributes it keeps for lookups while the backing is offline.
#include "fuse/inode_table.hpp"
#include "tmp_dir.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <atomic>
#include <string>
#include <sys/stat.h>
#include <thread>
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
    InodeTable make_table(std::size_t max_pinned = 1000000) const {
        UniqueFd root(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        REQUIRE(root.valid());
        struct stat st {};
        REQUIRE(::fstat(root.get(), &st) == 0);
        return InodeTable(std::move(root), st, max_pinned);
    }
    InodeRef lookup(InodeTable& t, const std::string& name) const {
        UniqueFd fd = open_path(name);
        REQUIRE(fd.valid());
        return t.lookup(std::move(fd), lstat_of(name));
    }
};

} // namespace

TEST_SUITE("fuse") {
    TEST_CASE_FIXTURE(Fixture, "InodeTable: pick_unused gives files and symlinks by name, each "
                               "after a second chance, never directories or the nameless") {
        InodeTable t = make_table();
        REQUIRE(::mkdir((dir / "d").c_str(), 0755) == 0);
        InodeRef d = lookup(t, "d");
        std::vector<Ino> files;
        for (int i = 0; i < 6; ++i) {
            const std::string name = "f" + std::to_string(i);
            touch("d/" + name);
            UniqueFd fd = open_path("d/" + name);
            REQUIRE(fd.valid());
            files.push_back(t.lookup(std::move(fd), lstat_of("d/" + name), d->ino(), name)->ino());
        }
        REQUIRE(::symlink("f0", (dir / "d/l").c_str()) == 0);
        UniqueFd lfd = open_path("d/l");
        REQUIRE(lfd.valid());
        (void)t.lookup(std::move(lfd), lstat_of("d/l"), d->ino(), "l");
        touch("nameless");
        (void)lookup(t, "nameless"); // no parent, no name: cannot be named to the kernel
        std::size_t seen = 0;
        std::vector<InodeTable::Unused> all;
        // Everything was just used: the first pass only takes the marks off.
        CHECK(t.pick_unused(100, 1000).empty());
        // Used again since: skipped once more.
        (void)t.get(files[0]);
        all = t.pick_unused(100, 1000);
        CHECK(all.size() == 6);
        for (const auto& u : all) {
            CHECK(u.parent == d->ino());
            CHECK(u.name != "f0");
            seen += u.name == "l";
        }
        CHECK(seen == 1);
        all = t.pick_unused(100, 1000);
        REQUIRE(all.size() == 7);
        // At most `n`, and at most `visit` entries looked at.
        CHECK(t.pick_unused(2, 1000).size() == 2);
        CHECK(t.pick_unused(100, 1).size() <= 1);
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: parents for per-path policy: set at lookup, moved by "
                               "reparent, none for the root") {
        InodeTable t = make_table();
        REQUIRE(::mkdir((dir / "d").c_str(), 0755) == 0);
        touch("d/f");
        InodeRef d = lookup(t, "d");
        UniqueFd fd = open_path("d/f");
        REQUIRE(fd.valid());
        InodeRef f = t.lookup(std::move(fd), lstat_of("d/f"), d->ino());
        CHECK(d->parent() == 0); // looked up with no parent given
        CHECK(f->parent() == d->ino());
        auto link = t.link_of(f->ino());
        REQUIRE(link);
        CHECK(link->parent == d->ino());
        CHECK(link->src == f->src());
        // Looked up again without a parent: the last known one stays.
        (void)lookup(t, "d/f");
        CHECK(t.link_of(f->ino())->parent == d->ino());
        t.reparent(f->src(), kRootIno);
        CHECK(t.link_of(f->ino())->parent == kRootIno);
        t.reparent(t.root()->src(), f->ino()); // the root never gets one
        CHECK(t.link_of(kRootIno)->parent == 0);
        CHECK_FALSE(t.link_of(999));
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: offline lookups find the last name and attributes, "
                               "count a lookup, and forget names that went") {
        InodeTable t = make_table();
        REQUIRE(::mkdir((dir / "d").c_str(), 0755) == 0);
        touch("d/f");
        touch("d/g");
        InodeRef d = lookup(t, "d");
        const Ino root = kRootIno;
        CHECK_FALSE(t.lookup_known(root, "d")); // looked up with no parent given
        UniqueFd dfd = open_path("d");
        InodeRef d2 = t.lookup(std::move(dfd), lstat_of("d"), root, "d");
        CHECK(d2->ino() == d->ino());
        UniqueFd ffd = open_path("d/f");
        const struct stat fst = lstat_of("d/f");
        InodeRef f = t.lookup(std::move(ffd), fst, d->ino(), "f");

        auto known = t.lookup_known(d->ino(), "f");
        REQUIRE(known);
        CHECK(known->ino == f->ino());
        CHECK(known->attr.st_ino == fst.st_ino);
        CHECK(known->attr.st_size == fst.st_size);
        CHECK_FALSE(t.lookup_known(d->ino(), "g")); // never looked up
        CHECK_FALSE(t.lookup_known(root, "f"));

        // Attributes follow the last the backing gave.
        struct stat grown = fst;
        grown.st_size = 12345;
        f->note_attr(grown);
        REQUIRE(t.attr_of(f->ino()));
        CHECK(t.attr_of(f->ino())->st_size == 12345);
        CHECK(t.attr_of(kRootIno)); // the root's, from the start

        // A rename through the mount moves the name; the old one is gone.
        t.reparent(SrcId{fst.st_dev, fst.st_ino}, root, "moved");
        CHECK_FALSE(t.lookup_known(d->ino(), "f"));
        REQUIRE(t.lookup_known(root, "moved"));
        CHECK(t.lookup_known(root, "moved")->ino == f->ino());
        // An unlink forgets it.
        t.unname(root, "moved");
        CHECK_FALSE(t.lookup_known(root, "moved"));

        // Counted lookups: one by t.lookup, three by lookup_known that
        // found it; the entry (and its name) goes once all are forgotten.
        t.reparent(SrcId{fst.st_dev, fst.st_ino}, d->ino(), "f");
        const std::size_t before = t.size();
        t.forget(f->ino(), 2);
        CHECK(t.size() == before);
        CHECK(t.lookup_known(d->ino(), "f")); // counts one more: 3 left
        t.forget(f->ino(), 3);
        CHECK(t.size() == before - 1);
        CHECK_FALSE(t.lookup_known(d->ino(), "f"));
        CHECK_FALSE(t.attr_of(f->ino()));
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: entries adopted offline are found again by name "
                               "online, and only if the name still stands for their file") {
        for (const std::size_t budget : {std::size_t{1000000}, std::size_t{1}}) {
            CAPTURE(budget);
            InodeTable t = make_table(budget);
            REQUIRE(::mkdir((dir / "d").c_str(), 0755) == 0);
            touch("d/f");
            touch("d/g");
            touch("d/h");
            const struct stat d_st = lstat_of("d");
            const struct stat f_st = lstat_of("d/f");
            // Offline, from the index: d (under the root), then d/f, d/g.
            auto d = t.adopt(SrcId{d_st.st_dev, d_st.st_ino}, d_st, kRootIno, "d");
            auto f = t.adopt(SrcId{f_st.st_dev, f_st.st_ino}, f_st, d.ino, "f");
            const struct stat g_st = lstat_of("d/g");
            auto g = t.adopt(SrcId{g_st.st_dev, g_st.st_ino}, g_st, d.ino, "g");
            CHECK(t.adopt(SrcId{f_st.st_dev, f_st.st_ino}, f_st, d.ino, "f").ino == f.ino);
            CHECK(t.attr_of(f.ino)->st_ino == f_st.st_ino);
            CHECK(t.pinned() == 1); // the root: adopted entries hold nothing

            // Online: d/f through its detached parent, both found again.
            InodeRef fr = t.get(f.ino);
            REQUIRE(fr);
            struct stat seen {};
            REQUIRE(::fstat(fr->fd(), &seen) == 0);
            CHECK(seen.st_ino == f_st.st_ino);
            InodeRef dr = t.get(d.ino);
            REQUIRE(dr);
            CHECK(t.get(f.ino)); // and again, attached

            // d/g was replaced meanwhile: the name stands for another file.
            REQUIRE(::rename((dir / "d/h").c_str(), (dir / "d/g").c_str()) == 0);
            CHECK_FALSE(t.get(g.ino));
            // A lookup of the real file attaches an adopted entry as well.
            const struct stat h_st = lstat_of("d/g");
            auto h = t.adopt(SrcId{h_st.st_dev, h_st.st_ino}, h_st, d.ino, "elsewhere");
            InodeRef hr = t.lookup(open_path("d/g"), h_st, d.ino, "g");
            CHECK(hr->ino() == h.ino);
            CHECK(t.get(h.ino));
            t.forget(f.ino, 2);
            t.forget(g.ino, 1);
            t.forget(h.ino, 2);
            t.forget(d.ino, 1);
            CHECK(t.size() == 1);
            CHECK(t.pinned() == 1);
            REQUIRE(::unlink((dir / "d/f").c_str()) == 0);
            REQUIRE(::unlink((dir / "d/g").c_str()) == 0);
            REQUIRE(::rmdir((dir / "d").c_str()) == 0);
        }
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: threads finding an adopted entry again at once "
                               "attach it once") {
        InodeTable t = make_table();
        touch("f");
        const struct stat f_st = lstat_of("f");
        auto f = t.adopt(SrcId{f_st.st_dev, f_st.st_ino}, f_st, kRootIno, "f");
        std::vector<std::thread> threads;
        std::atomic<int> found{0};
        for (int i = 0; i < 4; ++i)
            threads.emplace_back([&] {
                for (int n = 0; n < 200; ++n) {
                    InodeRef r = t.get(f.ino);
                    struct stat st {};
                    if (r && ::fstat(r->fd(), &st) == 0 && st.st_ino == f_st.st_ino)
                        found.fetch_add(1);
                }
            });
        for (auto& th : threads)
            th.join();
        CHECK(found.load() == 800);
        CHECK(t.pinned() == 2); // the root and f, once
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: root is 1, numbers start after the control file") {
        InodeTable t = make_table();
        CHECK(t.size() == 1);
        REQUIRE(t.get(kRootIno));
        CHECK(t.get(kRootIno)->is_dir());
        CHECK_FALSE(t.get(kControlIno));
        touch("a");
        InodeRef a = lookup(t, "a");
        CHECK(a->ino() == kFirstIno);
        CHECK(a->ino() != kControlIno);
        CHECK(t.size() == 2);
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: one entry per backing file, counted exactly") {
        InodeTable t = make_table();
        touch("a");
        REQUIRE(::link((dir / "a").c_str(), (dir / "hard").c_str()) == 0);
        InodeRef a1 = lookup(t, "a");
        InodeRef a2 = lookup(t, "a");
        InodeRef h = lookup(t, "hard"); // same (st_dev, st_ino): same entry
        CHECK(a1.ino() == a2.ino());
        CHECK(a1.ino() == h.ino());
        CHECK(t.size() == 2);
        const Ino ino = a1->ino();

        t.forget(ino, 2);
        CHECK(t.get(ino)); // one lookup left
        t.forget(ino, 1);
        CHECK_FALSE(t.get(ino));
        CHECK(t.size() == 1);

        // The file is looked up again: a new number, never the old one.
        InodeRef again = lookup(t, "a");
        CHECK(again->ino() != ino);
    }

    TEST_CASE_FIXTURE(Fixture,
                      "InodeTable: forget of unknown, root and control numbers is ignored") {
        InodeTable t = make_table();
        t.forget(kRootIno, 1000);
        t.forget(kControlIno, 1);
        t.forget(987654, 1);
        CHECK(t.size() == 1);
        CHECK(t.get(kRootIno));
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
        InodeRef a = lookup(t, "a");
        const int fd = a->fd();
        t.forget(a->ino(), 1);
        CHECK_FALSE(t.get(a->ino()));
        struct stat st {};
        CHECK(::fstatat(fd, "", &st, AT_EMPTY_PATH) == 0); // still ours until `a` goes
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: follows a file across renames") {
        InodeTable t = make_table();
        touch("a");
        InodeRef a = lookup(t, "a");
        REQUIRE(::rename((dir / "a").c_str(), (dir / "b").c_str()) == 0);
        CHECK(lookup(t, "b").ino() == a.ino());
        struct stat st {};
        REQUIRE(::fstatat(a->fd(), "", &st, AT_EMPTY_PATH) == 0);
        CHECK(st.st_ino == lstat_of("b").st_ino);
    }

    TEST_CASE_FIXTURE(Fixture, "InodeTable: past the pin budget, entries reopen by file handle") {
        InodeTable t = make_table(3); // the root and two more keep an fd
        std::vector<Ino> inos;
        for (int i = 0; i < 10; ++i) {
            const std::string name = "f" + std::to_string(i);
            touch(name);
            inos.push_back(lookup(t, name).ino());
        }
        CHECK(t.size() == 11);
        CHECK(t.pinned() == 3);
        // Every entry still gives a usable fd on its own file, after renames too.
        REQUIRE(::rename((dir / "f9").c_str(), (dir / "moved").c_str()) == 0);
        for (int i = 0; i < 10; ++i) {
            InodeRef r = t.get(inos[static_cast<std::size_t>(i)]);
            REQUIRE(r);
            struct stat st {};
            REQUIRE(::fstatat(r.fd(), "", &st, AT_EMPTY_PATH) == 0);
            CHECK(st.st_ino == lstat_of(i == 9 ? "moved" : "f" + std::to_string(i)).st_ino);
        }
        // A second lookup of an unpinned file finds the same entry.
        CHECK(lookup(t, "f5").ino() == inos[5]);
        // Forgetting pinned entries frees pin slots for new files.
        t.forget(inos[0], 1);
        t.forget(inos[1], 1);
        CHECK(t.pinned() == 1);
        touch("new");
        InodeRef n = lookup(t, "new");
        CHECK(t.pinned() == 2);
        // A removed file's handle no longer opens: ESTALE, not another file.
        InodeRef gone = lookup(t, "f7");
        const Ino gone_ino = gone.ino();
        gone = InodeRef();
        REQUIRE(::unlink((dir / "f7").c_str()) == 0);
        CHECK_FALSE(t.get(gone_ino));
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
