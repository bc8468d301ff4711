// DOC: coherency=timeout|none (see coherency.hpp): freshness of kept
// attributes, and lookups, getattr and listings answered from them.
#include "fuse/coherency.hpp"

#include "fuse/backing_calls.hpp"
#include "util/wall_clock.hpp"

#include <algorithm>
#include <cstring>
#include <ctime>

namespace overcache::fuse {
namespace {

// Whether `st`, seen at `seen_ns`, may still be used now.
bool fresh(Adapter& a, const struct stat& st, std::int64_t seen_ns) {
    // Nor anything seen before a change given up on at its deadline could
    // still land (the gate's settled_after_ns).
    if (seen_ns == Inode::kSeenStale || seen_ns <= a.inodes.distrusted_until() ||
        seen_ns <= a.gate.settled_after_ns())
        return false;
    if (a.cfg.coherency == config::Coherency::none)
        return true;
    // No change to it, made anywhere, since it was asked for: exactly what
    // asking the backing again would tell.
    if (a.watch.unchanged_since(st.st_dev, st.st_ino, seen_ns))
        return true;
    if (a.cfg.coherency != config::Coherency::timeout)
        return false;
    const bool dir = S_ISDIR(st.st_mode);
    const double lo = dir ? a.cfg.acdirmin_s : a.cfg.acregmin_s;
    const double hi = dir ? a.cfg.acdirmax_s : a.cfg.acregmax_s;
    // Unchanged for long when seen: likely unchanged for a while yet.
    const std::int64_t changed = std::max(ns_of(st.st_mtim), ns_of(st.st_ctim));
    const double unchanged_s = static_cast<double>(std::max<std::int64_t>(seen_ns - changed, 0)) / 1e9;
    const double interval_s = std::clamp(unchanged_s / 10, lo, hi);
    return static_cast<double>(wall_ns() - seen_ns) / 1e9 < interval_s;
}

// A regular file's kept attributes also need the cache's record of it to
// agree: its writeback of dirty data (after which the attributes seen
// while the file was dirty show the old size and times), or a change found
// at an open, moved the backing on.
bool current(Adapter& a, const struct stat& st) {
    return !S_ISREG(st.st_mode) || a.data.attrs_current(st);
}

bool usable(Adapter& a, const Inode::Seen& s) {
    return s.writers == 0 && fresh(a, s.attr, s.seen_ns) && current(a, s.attr);
}

struct Listing {
    meta::FileKey key;
    meta::DirRecord rec;
    dev_t dev = 0;
};

// `dir`'s whole listing, if the directory's fresh attributes show the
// times it was kept at.
std::optional<Listing> fresh_listing(Adapter& a, cache::MetaCache& m, Ino dir) {
    auto seen = a.inodes.seen_of(dir);
    auto link = a.inodes.link_of(dir);
    if (!seen || !link || !S_ISDIR(seen->attr.st_mode) || !usable(a, *seen))
        return std::nullopt;
    auto key = m.known_key(link->src.dev, link->src.ino);
    if (!key)
        return std::nullopt;
    auto rec = m.whole(*key);
    if (!rec || rec->mtime_ns != ns_of(seen->attr.st_mtim) ||
        rec->ctime_ns != ns_of(seen->attr.st_ctim))
        return std::nullopt;
    return Listing{*key, *rec, link->src.dev};
}

void fill_entry(Adapter& a, Ino ino, const struct stat& attr, fuse_entry_param& e) {
    std::memset(&e, 0, sizeof e);
    e.ino = ino;
    e.attr = attr;
    if (S_ISREG(attr.st_mode))
        a.data.show_attrs(cache::FileRef{-1, attr}, e.attr);
    e.attr_timeout = a.timeouts.attr;
    e.entry_timeout = a.timeouts.entry;
}

} // namespace

bool trusting(const Adapter& a) noexcept {
    return a.cfg.coherency != config::Coherency::cto || a.watch.watching();
}

std::optional<struct stat> trusted_file(Adapter& a, Ino ino) {
    if (!trusting(a) || a.data.listings() == nullptr)
        return std::nullopt;
    auto seen = a.inodes.seen_of(ino);
    if (!seen || !usable(a, *seen))
        return std::nullopt;
    return seen->attr;
}

std::optional<struct stat> trusted_attr(Adapter& a, Ino ino) {
    auto seen = trusted_file(a, ino);
    if (!seen)
        return std::nullopt;
    struct stat st = *seen;
    if (S_ISREG(st.st_mode))
        a.data.show_attrs(cache::FileRef{-1, *seen}, st);
    a.data.listings()->note_kept_answer();
    return st;
}

int trusted_lookup(Adapter& a, Ino parent, std::string_view name, fuse_entry_param& e) {
    cache::MetaCache* m = a.data.listings();
    if (!trusting(a) || m == nullptr)
        return kNoAnswer;
    auto dir = fresh_listing(a, *m, parent);
    if (!dir)
        return kNoAnswer;
    const cache::MetaCache::Found f = m->find(dir->key, name);
    if (f.state == cache::MetaCache::Found::State::absent) {
        m->note_kept_answer();
        return ENOENT;
    }
    if (f.state != cache::MetaCache::Found::State::present || f.value.child.fsid != dir->key.fsid)
        return kNoAnswer;
    const SrcId src{dir->dev, static_cast<ino_t>(f.value.child.ino)};
    if (auto known = a.inodes.find_src(src)) {
        // The mount's own view of the file, if it is still good.
        if (!usable(a, known->seen))
            return kNoAnswer;
        const InodeTable::Known k = a.inodes.adopt(src, known->seen.attr, parent, name);
        m->note_kept_answer();
        fill_entry(a, k.ino, k.attr, e);
        return 0;
    }
    auto seen = m->vouched_attr(dir->rec, f.value.child);
    if (!seen)
        return kNoAnswer;
    seen->st.st_dev = dir->dev; // the index keeps a filesystem's own id
    if (((seen->st.st_mode & S_IFMT) >> 12) != f.value.type || !fresh(a, seen->st, seen->seen_ns) ||
        !current(a, seen->st))
        return kNoAnswer;
    const InodeTable::Known k = a.inodes.adopt(src, seen->st, parent, name, seen->seen_ns);
    m->note_kept_answer();
    fill_entry(a, k.ino, k.attr, e);
    return 0;
}

std::optional<meta::FileKey> trusted_listing(Adapter& a, Ino ino) {
    cache::MetaCache* m = a.data.listings();
    if (!trusting(a) || m == nullptr)
        return std::nullopt;
    auto dir = fresh_listing(a, *m, ino);
    if (!dir)
        return std::nullopt;
    return dir->key;
}

} // namespace overcache::fuse
