// DOC: per-path policy in the adapter. A file or directory carries its own
// settings as user.overcache.{mode,sequential_cutoff,promote_after_hits}
// (values as the mount options take them, parsed by the option table, or
// `inherit`); everything below a directory inherits them, and the mount's
// values apply where nothing on the path sets one. Inheritance follows the
// inode table's parent links (the directory each inode was last looked up,
// created, linked or renamed through; for a hard link, the name used
// last), so resolving needs no backing I/O. The settings are stored by the
// DataPath in the cache's index under the backing identity, never on the
// backing. Setting or removing one needs the file's owner or root, as the
// kernel asks of a user xattr on a file the caller does not own (root
// stands in for CAP_FOWNER; a capability without root is not looked at).
// `pin` (0 | 1) is ours, not the option table's (no mount-wide pin: 0).
// Setting or removing it on a regular file re-marks the file's cached
// extents at once and, when it is now pinned, queues the file for the
// prefetcher (the reply does not wait for the fetch). On a directory only
// the setting is stored: each file below follows at its next open or
// prefetch (`overcache pin|unpin DIR` walks the tree to do that now), as a
// file renamed into or out of a pinned tree does; the extents a pinned
// file already had stay kept until then.
#include "fuse/path_policy.hpp"

#include "backing/backing_fs.hpp"
#include "fuse/reply.hpp"
#include "util/log.hpp"

#include <array>
#include <climits>
#include <fcntl.h>
#include <memory>
#include <optional>
#include <sys/xattr.h>
#include <unistd.h>

namespace overcache::fuse {
namespace {

// A chain longer than any real tree is a cycle left by renames: cut there.
constexpr std::size_t kMaxDepth = 4096;

enum class Field { mode, sequential_cutoff, promote_after_hits, pin };
constexpr std::array<Field, 4> kFields{Field::mode, Field::sequential_cutoff,
                                       Field::promote_after_hits, Field::pin};

// Each field's xattr name (under user.overcache.) and the option table's
// name for it, whose parser and checks apply (none: pin, parsed here);
// in kFields' order.
struct FieldNames {
    const char* xattr;
    const char* option;
};
constexpr std::array<FieldNames, 4> kNames{{
    {"mode", "cache_mode"},
    {"sequential_cutoff", "sequential_cutoff"},
    {"promote_after_hits", "promote_after_hits"},
    {"pin", nullptr},
}};

std::string_view xattr_name(Field f) noexcept {
    return kNames[static_cast<std::size_t>(f)].xattr;
}

const char* option_name(Field f) noexcept {
    return kNames[static_cast<std::size_t>(f)].option;
}

std::optional<Field> field_of(std::string_view key) noexcept {
    for (Field f : kFields)
        if (key == xattr_name(f))
            return f;
    return std::nullopt;
}

bool is_set(const cache::PathSettings& s, Field f) noexcept {
    switch (f) {
    case Field::mode:
        return s.mode.has_value();
    case Field::sequential_cutoff:
        return s.sequential_cutoff.has_value();
    case Field::promote_after_hits:
        return s.promote_after_hits.has_value();
    case Field::pin:
        return s.pin.has_value();
    }
    return false;
}

void clear(cache::PathSettings& s, Field f) noexcept {
    switch (f) {
    case Field::mode:
        s.mode.reset();
        break;
    case Field::sequential_cutoff:
        s.sequential_cutoff.reset();
        break;
    case Field::promote_after_hits:
        s.promote_after_hits.reset();
        break;
    case Field::pin:
        s.pin.reset();
        break;
    }
}

// Takes field `f` of `from` (a Config the option table parsed into).
void take(cache::PathSettings& s, Field f, const config::Config& from) {
    switch (f) {
    case Field::mode:
        s.mode = from.cache_mode;
        break;
    case Field::sequential_cutoff:
        s.sequential_cutoff = from.sequential_cutoff;
        break;
    case Field::promote_after_hits:
        s.promote_after_hits = from.promote_after_hits;
        break;
    case Field::pin:
        break; // not an option: parsed by parse_pin
    }
}

// user.overcache.pin's values: 0 or 1.
std::optional<bool> parse_pin(std::string_view v) noexcept {
    if (v == "1")
        return true;
    if (v == "0")
        return false;
    return std::nullopt;
}

// The field's value as -o would say it, or nullopt when unset.
std::optional<std::string> show(const cache::PathSettings& s, Field f) {
    switch (f) {
    case Field::mode:
        if (s.mode)
            return std::string(config::to_string(*s.mode));
        break;
    case Field::sequential_cutoff:
        if (s.sequential_cutoff)
            return config::format_size(*s.sequential_cutoff);
        break;
    case Field::promote_after_hits:
        if (s.promote_after_hits)
            return std::to_string(*s.promote_after_hits);
        break;
    case Field::pin:
        if (s.pin)
            return std::string(*s.pin ? "1" : "0");
        break;
    }
    return std::nullopt;
}

// Where the file is, for a log line: its backing path as the kernel names
// the descriptor (no backing I/O).
std::string where(const InodeRef& inode) {
    std::array<char, PATH_MAX> buf{};
    const backing::ProcPath p(inode.fd());
    const ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size() - 1);
    std::string out = "ino " + std::to_string(inode.ino());
    if (n > 0)
        out += " (" + std::string(buf.data(), static_cast<std::size_t>(n)) + ")";
    return out;
}

// The caller owns the file, or is root.
int may_set(fuse_req_t req, const struct stat& st) noexcept {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    if (ctx == nullptr || (ctx->uid != 0 && ctx->uid != st.st_uid))
        return EPERM;
    return 0;
}

// Strips what `echo` or an editor leaves at the end of a value.
std::string trimmed(std::string_view v) {
    while (!v.empty() && (v.back() == '\n' || v.back() == ' ' || v.back() == '\0'))
        v.remove_suffix(1);
    return std::string(v);
}

// A regular file's pin changed: its extents follow now, and a file now
// pinned is queued for the prefetcher (opened for reading as the daemon,
// as `prefetch PATH` does). Failures are logged: the setting is stored,
// and the file's next open marks its extents.
void pin_changed(Adapter& a, const InodeRef& inode, cache::FileRef ref) {
    if (!S_ISREG(inode.type()))
        return;
    const cache::FilePolicy p = resolve_policy(a, ref, inode.parent());
    const bool pin = p.pin.value_or(false);
    if (auto r = a.data.repin(ref, pin); !r)
        log::warn("xattr: cannot mark the extents of ", where(inode), ": ", to_string(r.error()));
    if (!pin)
        return;
    auto readable = backing::reopen(inode.fd(), O_RDONLY | O_CLOEXEC);
    if (!readable) {
        log::warn("xattr: cannot open ", where(inode),
                  " to fetch it: ", to_string(readable.error()));
        return;
    }
    auto held = std::make_shared<UniqueFd>(std::move(*readable));
    a.data.prefetch(cache::FileRef{held->get(), ref.st}, p,
                    [held, name = where(inode)](Result<void> r) {
                        if (!r)
                            log::warn("pin: fetching ", name, ": ", to_string(r.error()));
                    });
}

// Stores `next` as the inode's settings and replies. 0 or the errno.
int store(fuse_req_t req, Adapter& a, const InodeRef& inode, cache::FileRef ref,
          const cache::PathSettings& next) {
    const bool pin_moved =
        a.data.path_settings(ref).value_or(cache::PathSettings{}).pin != next.pin;
    if (auto r = a.data.set_path_settings(ref, next); !r) {
        log::warn("xattr: cannot store the settings of ", where(inode), ": ", to_string(r.error()));
        return errno_of(r.error());
    }
    if (pin_moved)
        pin_changed(a, inode, ref);
    fuse_reply_err(req, 0);
    return 0;
}

} // namespace

cache::FilePolicy resolve_policy(Adapter& a, cache::FileRef self, Ino first_parent) {
    if (!a.data.has_path_settings())
        return {};
    std::vector<cache::PathSettings> chain;
    if (auto s = a.data.path_settings(self))
        chain.push_back(*s);
    Ino at = first_parent;
    for (std::size_t depth = 0; at != 0 && depth < kMaxDepth; ++depth) {
        // The kernel holds each directory above an inode it knows, so the
        // chain is there; a gap (a parent forgotten after a rename behind
        // the mount) ends the walk: the mount's values fill in.
        auto link = a.inodes.link_of(at);
        if (!link)
            break;
        struct stat st {};
        st.st_dev = link->src.dev;
        st.st_ino = link->src.ino;
        if (auto s = a.data.path_settings(cache::FileRef{-1, st}))
            chain.push_back(*s);
        if (at == kRootIno)
            break;
        at = link->parent;
    }
    return cache::resolve(chain);
}

int policy_getxattr(fuse_req_t req, Adapter& a, const InodeRef& inode, std::string_view key,
                    std::size_t size) {
    constexpr std::string_view kEffective = "effective_";
    const bool effective = key.substr(0, kEffective.size()) == kEffective;
    const auto f = field_of(effective ? key.substr(kEffective.size()) : key);
    if (!f)
        return -1;
    struct stat st {};
    if (const int err = backing::stat_fd(inode.fd(), st); err != 0)
        return err;
    const cache::FileRef ref{inode.fd(), st};
    if (!effective) {
        const auto v = show(a.data.path_settings(ref).value_or(cache::PathSettings{}), *f);
        return v ? reply_xattr_value(req, *v, size) : ENODATA;
    }
    const cache::FilePolicy p = resolve_policy(a, ref, inode.parent());
    if (auto v = show(p, *f))
        return reply_xattr_value(req, *v, size);
    if (*f == Field::pin)
        return reply_xattr_value(req, "0", size); // nothing on the path pins it
    const auto mount = config::option_value(a.settings.current(), option_name(*f));
    return reply_xattr_value(req, mount.value_or(""), size);
}

int policy_setxattr(fuse_req_t req, Adapter& a, const InodeRef& inode, std::string_view key,
                    std::string_view value, int flags) {
    const auto f = field_of(key);
    if (!f)
        return -1;
    struct stat st {};
    if (const int err = backing::stat_fd(inode.fd(), st); err != 0)
        return err;
    if (const int err = may_set(req, st); err != 0)
        return err;
    const cache::FileRef ref{inode.fd(), st};
    const cache::PathSettings cur = a.data.path_settings(ref).value_or(cache::PathSettings{});
    if ((flags & XATTR_CREATE) != 0 && is_set(cur, *f))
        return EEXIST;
    if ((flags & XATTR_REPLACE) != 0 && !is_set(cur, *f))
        return ENODATA;
    cache::PathSettings next = cur;
    const std::string v = trimmed(value);
    if (v == "inherit") {
        clear(next, *f);
    } else if (*f == Field::pin) {
        const auto pin = parse_pin(v);
        if (!pin) {
            log::warn("xattr: user.overcache.pin of ", where(inode), ": '", v,
                      "' is not 0, 1 or inherit");
            return EINVAL;
        }
        next.pin = *pin;
    } else {
        // The option table parses and checks it, as for -o and `set`.
        config::Config parsed = a.settings.current();
        if (auto r = config::set_option(parsed, option_name(*f), v); !r) {
            log::warn("xattr: user.overcache.", key, " of ", where(inode), ": ",
                      to_string(r.error()));
            return EINVAL;
        }
        take(next, *f, parsed);
    }
    if (next == cur) {
        fuse_reply_err(req, 0);
        return 0;
    }
    return store(req, a, inode, ref, next);
}

int policy_removexattr(fuse_req_t req, Adapter& a, const InodeRef& inode, std::string_view key) {
    const auto f = field_of(key);
    if (!f)
        return -1;
    struct stat st {};
    if (const int err = backing::stat_fd(inode.fd(), st); err != 0)
        return err;
    if (const int err = may_set(req, st); err != 0)
        return err;
    const cache::FileRef ref{inode.fd(), st};
    cache::PathSettings next = a.data.path_settings(ref).value_or(cache::PathSettings{});
    if (!is_set(next, *f))
        return ENODATA;
    clear(next, *f);
    return store(req, a, inode, ref, next);
}

void policy_listxattr(Adapter& a, const InodeRef& inode, std::string_view prefix,
                      std::vector<char>& out) {
    if (!a.data.has_path_settings())
        return;
    struct stat st {};
    if (backing::stat_fd(inode.fd(), st) != 0)
        return;
    const auto own = a.data.path_settings(cache::FileRef{inode.fd(), st});
    if (!own)
        return;
    for (Field f : kFields) {
        if (!is_set(*own, f))
            continue;
        out.insert(out.end(), prefix.begin(), prefix.end());
        const std::string_view n = xattr_name(f);
        out.insert(out.end(), n.begin(), n.end());
        out.push_back('\0');
    }
}

} // namespace overcache::fuse
