// DOC: daemon start-up, in an order that keeps failures clean: parse and
// check everything (options, backing, mountpoint) before touching anything;
// fork before any thread exists (the cache's executors and libfuse's workers
// must be born in the daemon, not die with the parent); in the child open the
// cache, create the session and mount, then tell the waiting parent success
// or failure through a pipe, so `overcache ...` (and mount(8)) exits 0 only
// once the mount is usable and non-zero with the message already printed.
// Shut-down runs in reverse: the loop ends (unmount or SIGTERM/SIGINT/SIGHUP),
// the session unmounts and is destroyed, then DataPath::stop() makes the
// cache durable. Under a service manager ($NOTIFY_SOCKET, systemd's
// Type=notify) it hears READY=1 once the mount answers, STATUS= lines, and
// STOPPING=1 when the loop ends (service_status.hpp).
#include "daemon.hpp"

#include "backing/backing_fs.hpp"
#include "backing/creds.hpp"
#include "control/settings.hpp"
#include "fuse/session.hpp"
#include "mountpoint.hpp"
#include "overcache/bg/executors.hpp"
#include "overcache/cache/caching_path.hpp"
#include "overcache/cache/factory.hpp"
#include "overcache/config/config.hpp"
#include "overcache_config.h"
#include "service_config.hpp"
#include "service_status.hpp"
#include "stop_watchdog.hpp"
#include "util/log.hpp"
#include "util/unique_fd.hpp"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace overcache {
namespace {

static_assert(static_cast<int>(config::LogLevel::debug) == static_cast<int>(log::Level::debug) &&
              static_cast<int>(config::LogLevel::error) == static_cast<int>(log::Level::error));

const char* type_name(config::OptType t) {
    switch (t) {
    case config::OptType::flag:
        return "";
    case config::OptType::boolean:
        return "[=BOOL]";
    case config::OptType::size:
        return "=SIZE";
    case config::OptType::uint:
        return "=N";
    case config::OptType::seconds:
        return "=SECONDS";
    case config::OptType::string:
        return "=PATH";
    case config::OptType::mode:
        return "=MODE";
    case config::OptType::policy:
        return "=POLICY";
    case config::OptType::level:
        return "=LEVEL";
    }
    return "";
}

// Mount options the kernel's FUSE mount does not take although mount(8)
// does: dropped, since the FUSE file system has no use for them.
bool is_ignored_mount_flag(const std::string& o) {
    static const char* const kIgnored[] = {"relatime", "norelatime", "strictatime", "nostrictatime",
                                           "diratime", "nodiratime", "lazytime",    "nolazytime",
                                           "silent",   "loud"};
    for (const char* i : kIgnored)
        if (o == i)
            return true;
    return false;
}

bool starts_with(const std::string& s, const char* prefix) {
    return s.rfind(prefix, 0) == 0;
}

struct Plan {
    config::Config cfg;
    std::vector<std::string> given; // options -o named: they win over stored settings
    std::vector<std::string> fuse_options;
    fuse::LoopOptions loop;
    std::string backing;
    std::string mountpoint;
};

bool make_dirs(const std::string& path) {
    for (std::size_t i = 1; i <= path.size(); ++i) {
        if (i < path.size() && path[i] != '/')
            continue;
        const std::string part = path.substr(0, i);
        if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST)
            return false;
    }
    return true;
}

// The mountpoint must be a directory that nothing of ours is mounted on.
// Under --config (the service) a missing one is created and a dead mount
// left by a crashed daemon is removed; on the command line both are
// refused with what to do.
bool check_mountpoint(const CommandLine& cl, std::string& resolved) {
    const bool service = !cl.config_file.empty();
    MountpointInfo mp = inspect_mountpoint(cl.mountpoint);
    resolved = mp.path;
    const std::string name = "mountpoint '" + cl.mountpoint + "'";
    if (mp.kind == MountpointInfo::Kind::dead_fuse && service) {
        std::string err;
        if (!remove_dead_mount(mp.path, err)) {
            log::error(name, " is a dead FUSE mount and cannot be removed: ", err);
            return false;
        }
        log::warn("removed the dead mount at ", mp.path,
                  " (its daemon had exited without unmounting)");
        mp = inspect_mountpoint(mp.path);
    }
    if (mp.kind == MountpointInfo::Kind::missing && service) {
        if (!make_dirs(mp.path)) {
            log::error("cannot create the ", name, ": ", std::strerror(errno));
            return false;
        }
        mp = inspect_mountpoint(mp.path);
    }
    switch (mp.kind) {
    case MountpointInfo::Kind::directory:
        return true;
    case MountpointInfo::Kind::overcache:
        log::error(name, " is already an overcache mount (of ", mp.source,
                   "); unmount it first (umount ", mp.path, ") or choose another mountpoint");
        return false;
    case MountpointInfo::Kind::dead_fuse:
        log::error(name, " is a dead FUSE mount (", mp.fstype,
                   "): the daemon that served it exited without unmounting (\"Transport "
                   "endpoint is not connected\"). Remove it with 'overcache --cleanup ",
                   mp.path, "' (or 'umount -l ", mp.path, "' as root), then mount again");
        return false;
    case MountpointInfo::Kind::missing:
        log::error(name, " does not exist; create it first (mkdir ", mp.path, ")");
        return false;
    case MountpointInfo::Kind::other:
        break;
    }
    log::error(name, " ", mp.error);
    return false;
}

// The path with its longest existing prefix resolved (symlinks, ..): the
// cache directory may not exist yet.
std::string resolve_existing_prefix(const std::string& path) {
    std::string head = path, tail;
    char buf[PATH_MAX];
    while (!head.empty()) {
        if (::realpath(head.c_str(), buf) != nullptr)
            return std::string(buf) + tail;
        const auto slash = head.rfind('/');
        if (slash == std::string::npos || slash == 0)
            break;
        tail = head.substr(slash) + tail;
        head.resize(slash);
    }
    return path;
}

bool is_under(const std::string& path, const std::string& dir) {
    return path == dir ||
           (path.rfind(dir, 0) == 0 && (dir == "/" || path[dir.size()] == '/'));
}

// A cache inside the backing tree would show through the mount (and cache
// itself); one under the mountpoint is hidden by the mount.
bool check_cache_dir(const Plan& plan) {
    if (plan.cfg.cache_mode == config::CacheMode::none && plan.cfg.cache_dir.empty())
        return true;
    const bool given = !plan.cfg.cache_dir.empty();
    const std::string dir = resolve_existing_prefix(
        given ? plan.cfg.cache_dir : cache::default_cache_dir(plan.mountpoint));
    const char* what = given ? "cache=" : "the default cache directory ";
    if (is_under(dir, plan.backing)) {
        log::error(what, dir, " is inside the backing directory ", plan.backing,
                   ": the cache would show through the mount; give cache= a directory outside it");
        return false;
    }
    if (is_under(dir, plan.mountpoint)) {
        log::error(what, dir, " is inside the mountpoint ", plan.mountpoint,
                   ", which the mount hides; give cache= a directory outside it");
        return false;
    }
    return true;
}

// Whether /etc/fuse.conf lets users mount with allow_other.
bool fuse_conf_allows_other() {
    FILE* f = std::fopen("/etc/fuse.conf", "re");
    if (f == nullptr)
        return false;
    char line[256];
    bool yes = false;
    while (std::fgets(line, sizeof line, f) != nullptr) {
        std::string l = line;
        l.erase(0, l.find_first_not_of(" \t"));
        if (l.rfind("user_allow_other", 0) == 0)
            yes = true;
    }
    std::fclose(f);
    return yes;
}

// Every check that can fail before anything happens. Prints its message.
bool make_plan(const CommandLine& cl, Plan& plan) {
    auto parsed = config::parse_options(cl.option_lists);
    if (!parsed) {
        log::error(parsed.error().message);
        return false;
    }
    plan.cfg = parsed->config;
    plan.given = parsed->given;

    char resolved[PATH_MAX];
    if (::realpath(cl.backing.c_str(), resolved) == nullptr) {
        log::error("backing directory '", cl.backing, "': ", std::strerror(errno));
        return false;
    }
    plan.backing = resolved;
    struct stat st {};
    if (::stat(plan.backing.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        log::error("backing directory '", cl.backing, "' is not a directory");
        return false;
    }
    if (!check_mountpoint(cl, plan.mountpoint))
        return false;
    if (plan.mountpoint == plan.backing) {
        log::error("mountpoint '", cl.mountpoint,
                   "' is the backing directory itself; mount somewhere else");
        return false;
    }
    if (is_under(plan.mountpoint, plan.backing)) {
        // The daemon would look itself up through its own mount.
        log::error("mountpoint '", cl.mountpoint, "' is inside the backing directory ",
                   plan.backing, "; mount somewhere outside it");
        return false;
    }

    if (!check_cache_dir(plan))
        return false;
    // Before the cache is created or opened: a mount that cannot happen
    // leaves nothing behind.
    if (const int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC); fd >= 0) {
        ::close(fd);
    } else {
        log::error("cannot open /dev/fuse: ", std::strerror(errno),
                   errno == ENOENT ? " (load the fuse module: modprobe fuse)"
                                   : " (FUSE is not available to this user here)");
        return false;
    }

    plan.loop.single_thread = cl.single_thread;
    plan.loop.max_threads = plan.cfg.max_threads;
    bool have_fsname = false, have_subtype = false, allow_root = false;
    for (const auto& o : parsed->fuse_options) {
        if (o == "clone_fd") {
            plan.loop.clone_fd = true;
            continue;
        }
        if (starts_with(o, "max_idle_threads=")) {
            plan.loop.max_idle_threads = std::atoi(o.c_str() + std::strlen("max_idle_threads="));
            continue;
        }
        if (is_ignored_mount_flag(o))
            continue;
        // nosuid,nodev unless allow_suid/allow_dev (config.hpp): the generic
        // flags are set below, whatever mount.fuse3 added.
        if (o == "suid" || o == "nosuid" || o == "dev" || o == "nodev")
            continue;
        have_fsname = have_fsname || starts_with(o, "fsname=");
        have_subtype = have_subtype || starts_with(o, "subtype=");
        allow_root = allow_root || o == "allow_root";
        plan.fuse_options.push_back(o);
    }
    if (!have_fsname)
        plan.fuse_options.push_back("fsname=" + fuse::escape_option_value(plan.backing));
    if (!have_subtype)
        plan.fuse_options.emplace_back("subtype=overcache");
    if (plan.cfg.default_permissions)
        plan.fuse_options.emplace_back("default_permissions");
    plan.fuse_options.emplace_back(plan.cfg.allow_suid ? "suid" : "nosuid");
    plan.fuse_options.emplace_back(plan.cfg.allow_dev ? "dev" : "nodev");
    // As root the mount serves everyone (like a system mount) unless told
    // otherwise; a user's mount serves that user unless asked.
    const bool root = ::geteuid() == 0;
    const bool allow_other =
        plan.cfg.allow_other_given ? plan.cfg.allow_other : (root && !allow_root);
    if (allow_other)
        plan.fuse_options.emplace_back("allow_other");
    // What fusermount3 would refuse a user only after the cache was made.
    if (!root) {
        if (allow_other && !fuse_conf_allows_other()) {
            log::error("allow_other needs 'user_allow_other' in /etc/fuse.conf for a mount made "
                       "by a user other than root");
            return false;
        }
        if (::access(plan.mountpoint.c_str(), W_OK) != 0) {
            log::error("mountpoint '", cl.mountpoint, "': ", std::strerror(errno),
                       " (a user can mount only on a directory it may write to)");
            return false;
        }
    }
    return true;
}

// The read_ahead_kb file of the mount's backing device info, found through
// mountinfo (a stat(2) of the mountpoint would wait for the request loop).
// Raising it lets sequential buffered reads arrive as 1 MiB requests rather
// than the default 128 KiB; the session writes it after INIT.
std::string readahead_path(const std::string& mountpoint) {
    FILE* mi = std::fopen("/proc/self/mountinfo", "re");
    if (mi == nullptr)
        return {};
    unsigned maj = 0, min = 0;
    bool found = false;
    char line[4096];
    while (std::fgets(line, sizeof line, mi) != nullptr) {
        unsigned a = 0, b = 0;
        char point[PATH_MAX];
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT ..." (later lines win: the newest mount)
        if (std::sscanf(line, "%*u %*u %u:%u %*s %4095s", &a, &b, point) == 3 &&
            mountpoint == point) {
            maj = a;
            min = b;
            found = true;
        }
    }
    std::fclose(mi);
    if (!found)
        return {};
    char path[96];
    std::snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
    return path;
}

void detach_stdio() {
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0)
        return;
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    if (null > STDERR_FILENO)
        ::close(null);
}

// Tells the parent how the mount went (1 byte: 0 ok, else the exit status).
void report(int fd, unsigned char status) {
    if (fd < 0)
        return;
    while (::write(fd, &status, 1) < 0 && errno == EINTR) {
    }
    ::close(fd);
}

int serve(const Plan& plan, bool debug, int status_fd) {
    backing::init_credentials();
    const unsigned long fd_limit = backing::raise_fd_limit();
    log::debug("file descriptor limit ", fd_limit);
    // The kernel applies the caller's umask to modes it sends; ours must not
    // mask them again.
    ::umask(0);

    UniqueFd root_fd(::open(plan.backing.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) {
        log::error("backing directory '", plan.backing, "': ", std::strerror(errno));
        report(status_fd, 1);
        return 1;
    }
    cache::MountPaths paths{plan.backing, plan.mountpoint, root_fd.get()};
    // The execution contexts of the cache's background work (DESIGN.md):
    // started before the cache that posts to them, stopped after its stop().
    bg::Executors executors;
    executors.start();
    auto data = cache::open_data_path(plan.cfg, paths, executors);
    if (!data) {
        // The message says what is wrong and what to do; the code's name
        // (": foreign cache") adds nothing to it.
        log::error("cannot open the cache: ", data.error().message);
        report(status_fd, 1);
        return 1;
    }
    // Settings changed at runtime by earlier mounts, under the options
    // given now.
    config::Config cfg = plan.cfg;
    if (auto saved = (*data)->saved_settings(); !saved) {
        log::warn("cannot read the settings stored in the cache: ", to_string(saved.error()),
                  "; starting with the mount's options");
    } else if (!saved->empty()) {
        control::Settings adopted(cfg);
        for (const auto& w : adopted.adopt_saved(*saved, plan.given))
            log::warn(w);
        cfg = adopted.current();
        (*data)->apply_settings(cfg);
        log::set_level(static_cast<log::Level>(static_cast<int>(cfg.log_level)));
    }
    // The size the cache has (the default rule's, or a live resize's from
    // an earlier mount): what `get cache_size` shows and `set` changes.
    if (const std::uint64_t size = (*data)->cache_size(); size != 0)
        cfg.cache_size = size;
    int rc = 0;
    ServiceStatus status(plan.mountpoint, **data);
    {
        auto session =
            fuse::Session::create(cfg, **data, std::move(root_fd), plan.fuse_options, debug);
        if (!session) {
            log::error(session.error().message);
            report(status_fd, 1);
            (*data)->stop();
            return 1;
        }
        if (auto m = (*session)->mount(plan.mountpoint); !m) {
            log::error(m.error().message);
            report(status_fd, 1);
            session->reset();
            (*data)->stop();
            return 1;
        }
        if (::geteuid() == 0)
            (*session)->set_readahead_path(readahead_path(plan.mountpoint));
        if (status_fd >= 0) {
            report(status_fd, 0);
            detach_stdio();
            log::use_syslog(true);
        }
        log::info("mounted ", plan.backing, " on ", plan.mountpoint);
        status.start();
        if (auto r = (*session)->run(plan.loop); !r) {
            log::error(to_string(r.error()));
            rc = 1;
        }
        status.stopping(); // before the cache's stop, which may flush for long
        log::info("unmounted ", plan.mountpoint);
    }
    stop_or_exit(**data, executors, stop_stall_limit(cfg.backing_timeout_s), rc);
    status.stopped();
    return rc;
}

} // namespace

bool parse_command_line(int argc, char** argv, CommandLine& out, std::string& error) {
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            out.help = true;
        } else if (a == "-V" || a == "--version") {
            out.version = true;
        } else if (a == "-f") {
            out.foreground = true;
        } else if (a == "-d" || a == "--debug" || a == "-odebug") {
            out.debug = true;
            out.foreground = true;
        } else if (a == "-s") {
            out.single_thread = true;
        } else if (a == "--cleanup") {
            out.cleanup = true;
        } else if (a == "--config") {
            if (i + 1 >= argc) {
                error = "option --config needs a FILE";
                return false;
            }
            out.config_file = argv[++i];
        } else if (a.rfind("--config=", 0) == 0) {
            out.config_file = a.substr(std::strlen("--config="));
        } else if (a == "-o") {
            if (i + 1 >= argc) {
                error = "option -o needs a value";
                return false;
            }
            out.option_lists.emplace_back(argv[++i]);
        } else if (a.size() > 2 && a.rfind("-o", 0) == 0) {
            out.option_lists.push_back(a.substr(2));
        } else if (a == "--") {
            for (++i; i < argc; ++i)
                positional.emplace_back(argv[i]);
        } else if (!a.empty() && a[0] == '-') {
            error = "unknown argument '" + a + "'";
            return false;
        } else {
            positional.push_back(a);
        }
    }
    if (out.help || out.version)
        return true;
    if (!out.config_file.empty()) {
        if (!positional.empty()) {
            error = "unexpected argument '" + positional[0] +
                    "': with --config, BACKING and MOUNTPOINT come from the file";
            return false;
        }
        return true;
    }
    if (out.cleanup) {
        if (positional.size() != 1) {
            error = positional.empty() ? "--cleanup needs a MOUNTPOINT (or --config FILE)"
                                       : "unexpected argument '" + positional[1] + "'";
            return false;
        }
        out.mountpoint = positional[0];
        return true;
    }
    if (positional.size() < 2) {
        error = positional.empty() ? "missing BACKING and MOUNTPOINT" : "missing MOUNTPOINT";
        return false;
    }
    if (positional.size() > 2) {
        error = "unexpected argument '" + positional[2] + "'";
        return false;
    }
    out.backing = positional[0];
    out.mountpoint = positional[1];
    return true;
}

void print_help(const char* prog) {
    std::printf("usage: %s BACKING MOUNTPOINT [-o OPTION[,OPTION...]]... [-f] [-d] [-s]\n"
                "       %s --config FILE [-o OPTION...]... [-f] [-d] [-s]\n"
                "       %s --cleanup MOUNTPOINT | --config FILE --cleanup\n"
                "\n"
                "Mounts the directory BACKING on MOUNTPOINT, caching the parts of files that\n"
                "are used on a fast device.\n"
                "\n"
                "  -f             stay in the foreground\n"
                "  -d             debug output (implies -f)\n"
                "  -s             serve requests in one thread\n"
                "  --config FILE  take BACKING, MOUNTPOINT and options from FILE (the\n"
                "                 service's config, overcache.conf(5)); create a missing\n"
                "                 mountpoint and remove a dead mount left on it\n"
                "  --cleanup      only remove a dead mount (its daemon gone) at MOUNTPOINT\n"
                "  -h, --help     this help\n"
                "  -V, --version  version\n"
                "\n"
                "Options (-o):\n",
                prog, prog, prog);
    for (const auto& o : config::option_table()) {
        std::string head = std::string(o.name) + type_name(o.type);
        std::printf("  %-24s %s (default: %s)\n", head.c_str(), o.help, o.default_text);
    }
    std::printf("\nMount options of mount(8) and FUSE (ro, noexec, noatime, allow_root,\n"
                "auto_unmount, fsname=, subtype=, max_read=, clone_fd, max_idle_threads=,\n"
                "...) are accepted too. The mount is always nosuid,nodev unless allow_suid\n"
                "or allow_dev says otherwise.\n");
}

void print_version() {
    std::printf("overcache %s (libfuse %s, FUSE API %d)\n", OVERCACHE_VERSION, fuse_pkgversion(),
                FUSE_USE_VERSION);
}

namespace {

// A mistake in a --config file or its options (sysexits' EX_CONFIG): the
// unit does not restart on it (RestartPreventExitStatus=), since starting
// again cannot mend it, and fails instead.
constexpr int kExitConfig = 78;

// The exit status, or straight out with it when a thread is still waiting
// on a FUSE mount that does not answer (mountpoint.hpp).
int leave_if_probe_waiting(int status) {
    if (probe_left_waiting()) {
        std::fflush(nullptr);
        ::_exit(status);
    }
    return status;
}

// --cleanup: a dead mount is removed, anything else is left as it is.
int cleanup(const CommandLine& cl) {
    const MountpointInfo mp = inspect_mountpoint(cl.mountpoint);
    if (mp.kind != MountpointInfo::Kind::dead_fuse) {
        log::info("nothing to clean up at ", mp.path);
        return 0;
    }
    std::string err;
    if (!remove_dead_mount(mp.path, err)) {
        log::error("cannot remove the dead mount at ", mp.path, ": ", err);
        return 1;
    }
    log::info("removed the dead mount at ", mp.path);
    return 0;
}

} // namespace

int run_daemon(const CommandLine& cl_in) {
    if (cl_in.debug)
        log::set_level(log::Level::debug);
    CommandLine cl = cl_in;
    if (!cl.config_file.empty()) {
        ServiceConfig sc;
        std::string err;
        if (!read_service_config(cl.config_file, sc, err)) {
            log::error(err);
            return kExitConfig;
        }
        cl.backing = sc.backing;
        cl.mountpoint = sc.mountpoint;
        // The file's options first: -o on the command line wins.
        std::vector<std::string> lists;
        if (!sc.cache.empty())
            lists.push_back("cache=" + sc.cache);
        if (!sc.options.empty())
            lists.push_back(sc.options);
        lists.insert(lists.end(), cl.option_lists.begin(), cl.option_lists.end());
        cl.option_lists = std::move(lists);
        // A mistake in the options is the file's too: no restart mends it.
        if (auto parsed = config::parse_options(cl.option_lists); !parsed) {
            log::error(cl.config_file, ": OPTIONS: ", parsed.error().message);
            return kExitConfig;
        }
    }
    if (cl.cleanup)
        return leave_if_probe_waiting(cleanup(cl));
    Plan plan;
    if (!make_plan(cl, plan))
        return leave_if_probe_waiting(1);
    if (!cl.debug) // -d asks for everything, whatever log_level says
        log::set_level(static_cast<log::Level>(static_cast<int>(plan.cfg.log_level)));
    if (cl.foreground)
        return serve(plan, cl.debug, -1);

    // Fork before any thread exists; the parent waits for the child's word.
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) {
        log::error("pipe: ", std::strerror(errno));
        return 1;
    }
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = ::fork();
    if (pid < 0) {
        log::error("fork: ", std::strerror(errno));
        return 1;
    }
    if (pid > 0) {
        ::close(pipefd[1]);
        unsigned char status = 1;
        ssize_t n = 0;
        do {
            n = ::read(pipefd[0], &status, 1);
        } while (n < 0 && errno == EINTR);
        ::close(pipefd[0]);
        if (n != 1) {
            // The child died before reporting.
            int ws = 0;
            ::waitpid(pid, &ws, 0);
            log::error("the daemon exited before mounting");
            return 1;
        }
        if (status != 0)
            ::waitpid(pid, nullptr, 0);
        return status;
    }
    ::close(pipefd[0]);
    // A session of its own: the terminal's signals no longer reach it.
    ::setsid();
    if (::chdir("/") != 0) {
        // Paths are absolute already; "/" is only so as not to pin a mount.
    }
    return serve(plan, cl.debug, pipefd[1]);
}

} // namespace overcache
