// The daemon as the system starts it, outside the test fixture's way:
// through mount(8) and mount.fuse3 (`mount -t fuse.overcache`, an fstab
// line), through the service's config file (`--config`), and daemonized
// with its log going to syslog. Also every refusal of a mountpoint or cache
// location, each with its message, and nothing mounted or created.
//
// mount(8) finds `overcache` on root's standard PATH and glibc's syslog(3)
// writes to /dev/log, neither of which a test may change for the machine:
// those cases run in a mount namespace of their own (unshare), where a
// tmpfs over /usr/local/sbin holds a link to the binary under test and a
// tmpfs over /dev holds the test's syslog socket beside the real devices.
#include "datagrams.hpp"
#include "file_bytes.hpp"
#include "fuse_mount.hpp"
#include "run_command.hpp"
#include "tmp_dir.hpp"

#include <cerrno>
#include <climits>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <string>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overcache::test;
using namespace std::chrono_literals;

namespace {

// Absolute: mount.fuse3 runs it through a link, from another directory.
const std::string& bin() {
    static const std::string b = [] {
        char buf[PATH_MAX];
        const char* env = std::getenv("OVERCACHE_BIN");
        return std::string(::realpath(env, buf) != nullptr ? buf : env);
    }();
    return b;
}

CommandResult run(std::vector<std::string> args) {
    return run_command(args, 30s);
}

CommandResult run_oc(std::vector<std::string> args) {
    args.insert(args.begin(), bin());
    return run(std::move(args));
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

// How many mounts sit exactly at `path`.
int mounts_at(const std::string& path) {
    const auto r = run({"findmnt", "-n", "-o", "TARGET", "--mountpoint", path});
    int n = 0;
    for (std::size_t p = 0; (p = r.out.find('\n', p)) != std::string::npos; ++p)
        ++n;
    return n;
}

bool wait_mounted(const std::string& mnt, bool want) {
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < until) {
        if (is_mountpoint(mnt) == want)
            return true;
        std::this_thread::sleep_for(20ms);
    }
    return false;
}

// A backing, a mountpoint and a cache directory in one temporary tree.
struct Tree {
    TmpDir t;
    std::string back = t / "back", mnt = t / "mnt", cache = t / "cache";
    Tree() {
        REQUIRE(::mkdir(back.c_str(), 0755) == 0);
        REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
        write_file(back + "/hello", "hello\n");
    }
    std::string opts(const std::string& extra = "") const {
        return "cache=" + cache + ",cache_size=64M" + extra;
    }
    ~Tree() {
        // Whatever a failed check left: no mount survives the test.
        while (is_mountpoint(mnt))
            if (::umount2(mnt.c_str(), MNT_DETACH) != 0)
                break;
    }
};

// Starts a daemon in the foreground on `tree`, waits for its mount and
// kills it: the mount stays behind, dead ("Transport endpoint is not
// connected"). Its cache is its own: a daemon of the test that was
// unmounted may still be closing the tree's.
void make_dead_mount(const Tree& tree) {
    const std::vector<std::string> args{bin(), tree.back, tree.mnt, "-f", "-o",
                                        "cache=" + (tree.t / "dead-cache") + ",cache_size=64M"};
    std::vector<char*> argv;
    for (const auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        reset_signals_in_child();
        const int null = ::open("/dev/null", O_WRONLY);
        ::dup2(null, STDERR_FILENO);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    const bool up = wait_mounted(tree.mnt, true);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    REQUIRE(up);
    struct stat st {};
    REQUIRE(::stat((tree.mnt + "/hello").c_str(), &st) != 0);
    REQUIRE(errno == ENOTCONN);
}

// The test process moves into a mount namespace of its own: what it mounts
// from here on is seen by it and its children only, and goes away with them.
void private_mount_namespace() {
    REQUIRE_MESSAGE(::unshare(CLONE_NEWNS) == 0, "unshare: " << std::strerror(errno));
    // Private, recursively, so nothing mounted here reaches the machine's
    // namespace. "/" must be a mount point for that: in a chroot, bind the
    // root onto itself first (contrib/ci/debian-root.sh does).
    REQUIRE_MESSAGE(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0,
                    "making / private: " << std::strerror(errno)
                                         << (errno == EINVAL ? " (is / a mount point? in a "
                                                               "chroot, bind its root onto itself)"
                                                             : ""));
}

// In a private namespace: `overcache` on root's standard PATH is the binary
// under test.
void put_overcache_on_root_path() {
    REQUIRE(::mount("tmpfs", "/usr/local/sbin", "tmpfs", 0, "mode=0755") == 0);
    REQUIRE(::symlink(bin().c_str(), "/usr/local/sbin/overcache") == 0);
}

// The mount's options as the kernel shows them (/proc/self/mounts).
std::string kernel_options(const std::string& mnt) {
    const auto r = run({"findmnt", "-n", "-o", "VFS-OPTIONS", "--mountpoint", mnt});
    return "," + r.out.substr(0, r.out.find('\n')) + ",";
}

// In a private namespace: /dev becomes a tmpfs holding the devices a daemon
// uses, bound from the real /dev, and `/dev/log`, a datagram socket the
// test reads. Returns its fd.
int fake_dev_log(const TmpDir& t) {
    const std::string real = t / "realdev";
    REQUIRE(::mkdir(real.c_str(), 0755) == 0);
    REQUIRE(::mount("/dev", real.c_str(), nullptr, MS_BIND | MS_REC, nullptr) == 0);
    REQUIRE(::mount("tmpfs", "/dev", "tmpfs", 0, "mode=0755") == 0);
    for (const char* d : {"null", "zero", "full", "random", "urandom", "fuse"}) {
        const std::string to = std::string("/dev/") + d;
        const int fd = ::open(to.c_str(), O_CREAT | O_WRONLY, 0666);
        REQUIRE(fd >= 0);
        ::close(fd);
        REQUIRE_MESSAGE(
            ::mount((real + "/" + d).c_str(), to.c_str(), nullptr, MS_BIND, nullptr) == 0, d);
    }
    return bind_datagrams("/dev/log");
}

// Syslog datagrams until one contains `text` or 20 s pass; all of them
// are appended to `seen`.
bool wait_syslog(int fd, const std::string& text, std::string& seen) {
    return wait_datagram(
        fd, [&](const std::string& msg) { return msg.find(text) != std::string::npos; }, seen,
        20s);
}

} // namespace

TEST_SUITE("mount") {

    TEST_CASE("the command line's mount is nosuid,nodev too") {
        require_daemon();
        // The fixture runs `overcache BACKING MOUNTPOINT -f -o ...`.
        Mount m("suid,dev");
        const std::string o = kernel_options(m.mountpoint());
        CHECK_MESSAGE(o.find(",nosuid,") != std::string::npos, o);
        CHECK_MESSAGE(o.find(",nodev,") != std::string::npos, o);
    }

    TEST_CASE("a mountpoint or cache that cannot work is refused with what to do" *
              doctest::timeout(120)) {
        require_daemon();
        Tree tree;

        SUBCASE("a cache in use by another mount") {
            Mount m;
            REQUIRE_FALSE(m.cache_dir().empty());
            const auto r = run_oc({tree.back, tree.mnt, "-o", "cache=" + m.cache_dir()});
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.out.find("the cache at " + m.cache_dir() + " is in use by process " +
                                     std::to_string(m.daemon_pid())) != std::string::npos,
                          r.out);
            CHECK_FALSE(is_mountpoint(tree.mnt));
        }
        SUBCASE("already an overcache mount") {
            Mount m;
            // Another cache= would have stacked a second mount on the first.
            const auto r = run_oc({m.root() + "/backing", m.mountpoint(), "-o",
                                      "cache=" + (tree.t / "other") + ",cache_size=64M"});
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.out.find("is already an overcache mount (of " + m.root() +
                                     "/backing); unmount it first") != std::string::npos,
                          r.out);
            CHECK(mounts_at(m.mountpoint()) == 1);
            CHECK_FALSE(exists(tree.t / "other"));
        }
        SUBCASE("a dead FUSE mount, then --cleanup") {
            make_dead_mount(tree);
            auto r = run_oc({tree.back, tree.mnt, "-o", tree.opts()});
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.out.find("is a dead FUSE mount (fuse.overcache): the daemon that "
                                     "served it exited without unmounting") != std::string::npos,
                          r.out);
            CHECK_MESSAGE(r.out.find("overcache --cleanup " + tree.mnt) != std::string::npos,
                          r.out);
            r = run_oc({"--cleanup", tree.mnt});
            CHECK_MESSAGE(r.status == 0, r.out);
            CHECK_FALSE(is_mountpoint(tree.mnt));
            // Nothing left to do is not an error.
            r = run_oc({"--cleanup", tree.mnt});
            CHECK_MESSAGE(r.status == 0, r.out);
            CHECK_MESSAGE(r.out.find("nothing to clean up") != std::string::npos, r.out);
        }
        SUBCASE("a FUSE mount whose daemon is stopped") {
            Mount m;
            ::kill(m.daemon_pid(), SIGSTOP);
            const auto r = run_oc({m.root() + "/backing", m.mountpoint(), "-o",
                                      "cache=" + (tree.t / "other") + ",cache_size=64M"});
            ::kill(m.daemon_pid(), SIGCONT);
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.out.find("that does not answer: its daemon is stopped or stuck") !=
                              std::string::npos,
                          r.out);
            CHECK(mounts_at(m.mountpoint()) == 1);
        }
        SUBCASE("a missing mountpoint") {
            const auto r = run_oc({tree.back, tree.t / "absent", "-o", tree.opts()});
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.out.find("mountpoint '" + (tree.t / "absent") +
                                     "' does not exist; create it first") != std::string::npos,
                          r.out);
            CHECK_FALSE(exists(tree.t / "absent"));
        }
        SUBCASE("a mountpoint inside the backing") {
            REQUIRE(::mkdir((tree.back + "/sub").c_str(), 0755) == 0);
            const auto r = run_oc({tree.back, tree.back + "/sub", "-o", tree.opts()});
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.out.find("is inside the backing directory " + tree.back) !=
                              std::string::npos,
                          r.out);
            CHECK_FALSE(is_mountpoint(tree.back + "/sub"));
        }
        SUBCASE("a cache of another size is resized; a size it cannot take is refused") {
            {
                auto r = run_oc({tree.back, tree.mnt, "-o", tree.opts()});
                REQUIRE_MESSAGE(r.status == 0, r.out);
                CHECK_MESSAGE(r.out.find("cache_size=64M, 63 buckets of 1M") != std::string::npos,
                              r.out);
                REQUIRE(::umount2(tree.mnt.c_str(), 0) == 0);
            }
            // Right after the unmount: the daemon above may still be closing
            // the cache, and the new one waits for it.
            // Another size resizes the cache (logged with sizes as the
            // options take them) ...
            {
                const auto r = run_oc(
                    {tree.back, tree.mnt, "-o", "cache=" + tree.cache + ",cache_size=0.125G"});
                REQUIRE_MESSAGE(r.status == 0, r.out);
                CHECK_MESSAGE(r.out.find("cache_size 64M -> 128M") != std::string::npos, r.out);
                REQUIRE(::umount2(tree.mnt.c_str(), 0) == 0);
            }
            // ... and a size it cannot take is refused, naming it and the limit.
            const auto r =
                run_oc({tree.back, tree.mnt, "-o", "cache=" + tree.cache + ",cache_size=512T"});
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.out.find("cannot resize the cache at " + tree.cache + " from 128M") !=
                              std::string::npos,
                          r.out);
            CHECK_MESSAGE(r.out.find("cache_size 512T is larger than the filesystem holding") !=
                              std::string::npos,
                          r.out);
            CHECK_MESSAGE(r.out.find(": foreign cache") == std::string::npos, r.out);
            CHECK_FALSE(is_mountpoint(tree.mnt));
        }
        SUBCASE("a cache inside the backing, or under the mountpoint") {
            auto r = run_oc({tree.back, tree.mnt, "-o", "cache=" + tree.back + "/.cache"});
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.out.find("cache=" + tree.back +
                                     "/.cache is inside the backing directory") !=
                              std::string::npos,
                          r.out);
            CHECK_FALSE(exists(tree.back + "/.cache"));
            r = run_oc({tree.back, tree.mnt, "-o", "cache=" + tree.mnt + "/c"});
            CHECK(r.status == 1);
            CHECK_MESSAGE(r.out.find("is inside the mountpoint " + tree.mnt) != std::string::npos,
                          r.out);
            CHECK_FALSE(is_mountpoint(tree.mnt));
        }
    }

    TEST_CASE("--config: the service's way of starting" * doctest::timeout(120)) {
        require_daemon();
        Tree tree;
        const std::string conf = tree.t / "m.conf";

        SUBCASE("a bad config is refused with its line, nothing mounted") {
            write_file(conf, "BACKING=" + tree.back + "\nMOUNTPOINT=" + tree.mnt +
                                 "\nCACHE_DIR=/x\n");
            auto r = run_oc({"--config", conf, "-f"});
            CHECK(r.status == 78); // the unit's RestartPreventExitStatus
            CHECK_MESSAGE(r.out.find(conf + ":3: unknown key 'CACHE_DIR'") != std::string::npos,
                          r.out);
            CHECK_FALSE(is_mountpoint(tree.mnt));
            // A bad option in OPTIONS= is the file's mistake too.
            write_file(conf, "BACKING=" + tree.back + "\nMOUNTPOINT=" + tree.mnt +
                                 "\nOPTIONS=cache_size=12Q\n");
            r = run_oc({"--config", conf, "-f"});
            CHECK(r.status == 78);
            CHECK_MESSAGE(r.out.find(conf + ": OPTIONS: option cache_size: '12Q' has an unknown "
                                     "suffix") != std::string::npos,
                          r.out);
            CHECK_FALSE(is_mountpoint(tree.mnt));
        }
        SUBCASE("a missing config") {
            const auto r = run_oc({"--config", conf, "-f"});
            CHECK(r.status == 78);
            CHECK_MESSAGE(r.out.find("cannot read " + conf + ": No such file or directory") !=
                              std::string::npos,
                          r.out);
        }
        SUBCASE("a missing mountpoint is made; a dead mount is removed first") {
            const std::string deep = tree.t / "new/deeper";
            write_file(conf, "# a comment\nBACKING=" + tree.back + "\nMOUNTPOINT=" + deep +
                                 "\nCACHE=" + tree.cache + "\nOPTIONS=cache_size=64M\n");
            auto r = run_oc({"--config", conf});
            REQUIRE_MESSAGE(r.status == 0, r.out);
            CHECK(read_file(deep + "/hello") == "hello\n");
            REQUIRE(::umount2(deep.c_str(), 0) == 0);

            make_dead_mount(tree);
            // Another cache: the first daemon may still be closing its own.
            write_file(conf, "BACKING=" + tree.back + "\nMOUNTPOINT=" + tree.mnt + "\nCACHE=" +
                                 (tree.t / "cache2") + "\nOPTIONS=cache_size=64M\n");
            r = run_oc({"--config", conf});
            REQUIRE_MESSAGE(r.status == 0, r.out);
            CHECK_MESSAGE(r.out.find("removed the dead mount at " + tree.mnt) !=
                              std::string::npos,
                          r.out);
            CHECK(mounts_at(tree.mnt) == 1);
            CHECK(read_file(tree.mnt + "/hello") == "hello\n");
            REQUIRE(::umount2(tree.mnt.c_str(), 0) == 0);

            // What the unit's ExecStopPost runs after a crash.
            make_dead_mount(tree);
            r = run_oc({"--config", conf, "--cleanup"});
            CHECK_MESSAGE(r.status == 0, r.out);
            CHECK_FALSE(is_mountpoint(tree.mnt));
        }
    }

    // These two leave the test process in a mount namespace of its own
    // (with /dev replaced): they come last.
    TEST_CASE("mount -t fuse.overcache and an fstab line, through mount.fuse3: nosuid,nodev, "
              "then umount" *
              doctest::timeout(120)) {
        require_daemon();
        Tree tree;
        private_mount_namespace();
        put_overcache_on_root_path();

        // As an fstab line would have it, mount-only options included.
        auto r = run({"mount", "-t", "fuse.overcache", "-o", tree.opts(",_netdev,nofail,x-systemd.requires=/"),
                      tree.back, tree.mnt});
        REQUIRE_MESSAGE(r.status == 0, r.out);
        REQUIRE(is_mountpoint(tree.mnt));
        const std::string o = kernel_options(tree.mnt);
        CHECK_MESSAGE(o.find(",nosuid,") != std::string::npos, o);
        CHECK_MESSAGE(o.find(",nodev,") != std::string::npos, o);
        CHECK(read_file(tree.mnt + "/hello") == "hello\n");
        write_file(tree.mnt + "/new", "through mount -t\n");
        r = run({"umount", tree.mnt});
        CHECK_MESSAGE(r.status == 0, r.out);
        CHECK(wait_mounted(tree.mnt, false));
        CHECK(read_file(tree.back + "/new") == "through mount -t\n");

        // The same as a line of an fstab (mount -T names the file in place
        // of /etc/fstab), mounted and unmounted by its mountpoint alone.
        const std::string fstab = tree.t / "fstab";
        write_file(fstab, "# a comment\n" + tree.back + " " + tree.mnt + " fuse.overcache " +
                              tree.opts(",_netdev,nofail,x-systemd.requires=/") + " 0 0\n");
        r = run({"mount", "-T", fstab, tree.mnt});
        REQUIRE_MESSAGE(r.status == 0, r.out);
        CHECK(kernel_options(tree.mnt).find(",nosuid,nodev,") != std::string::npos);
        CHECK(read_file(tree.mnt + "/new") == "through mount -t\n");
        r = run({"umount", tree.mnt});
        CHECK_MESSAGE(r.status == 0, r.out);
        CHECK(wait_mounted(tree.mnt, false));

        // Asked for by name, set-user-ID and devices are allowed.
        r = run({"mount", "-t", "fuse.overcache", "-o", tree.opts(",allow_suid,allow_dev"),
                 tree.back, tree.mnt});
        REQUIRE_MESSAGE(r.status == 0, r.out);
        const std::string o2 = kernel_options(tree.mnt);
        CHECK_MESSAGE(o2.find(",nosuid,") == std::string::npos, o2);
        CHECK_MESSAGE(o2.find(",nodev,") == std::string::npos, o2);
        CHECK(run({"umount", tree.mnt}).status == 0);
        CHECK(wait_mounted(tree.mnt, false));
    }

    TEST_CASE("daemonized, the log goes to syslog and not to the terminal" *
              doctest::timeout(120)) {
        require_daemon();
        Tree tree;
        private_mount_namespace();
        const int log = fake_dev_log(tree.t);
        // Without -f: the command returns once the mount is up, the daemon
        // stays.
        const auto r = run_oc({tree.back, tree.mnt, "-o", tree.opts()});
        REQUIRE_MESSAGE(r.status == 0, r.out);
        REQUIRE(is_mountpoint(tree.mnt));
        std::string seen;
        // daemon.info, the daemon's name and pid, the message.
        CHECK_MESSAGE(wait_syslog(log, "mounted " + tree.back + " on " + tree.mnt, seen), seen);
        CHECK_MESSAGE(seen.find("<30>") != std::string::npos, seen);
        CHECK_MESSAGE(seen.find("overcache[") != std::string::npos, seen);
        // The terminal saw what came before the daemon went its own way
        // (the cache opening), not the lines after.
        CHECK_MESSAGE(r.out.find("mounted ") == std::string::npos, r.out);
        REQUIRE(::umount2(tree.mnt.c_str(), 0) == 0);
        seen.clear();
        CHECK_MESSAGE(wait_syslog(log, "unmounted " + tree.mnt, seen), seen);
        ::close(log);
    }
}
