// DOC: keeping the names and attributes within their share of the cache
// (MetaCache::trim, see meta_cache.hpp). Every record carries the index
// sequence number it was read at (a listing: when its reading began; an
// attribute record: when it was written), so "read longest ago" needs no
// clock and no access log. A trim makes two passes over the small
// families (dirs, attrs) and skips through dentries one directory at a
// time:
//   1. a histogram of bytes by sequence number (1024 bins), from which the
//      cut is chosen that drops the oldest share over the target;
//   2. the drops, each re-checked under its key's lock: a listing read
//      again, or attributes written again, since the cut are newer than it
//      and stay. A listing being recorded is never dropped, and none starts
//      while one is.
// The pinned trees are found first (their roots' keys, then down through
// the kept listings) and left alone: `ls -lR` of a pinned tree works with
// the backing gone (issue #10's pin rule). Their set is held in memory for
// the trim; pinned trees are bounded by the data that fits the cache.
#include "overcache/cache/meta_cache.hpp"

#include "util/log.hpp"

#include <deque>
#include <dirent.h>
#include <unordered_set>
#include <utility>

namespace overcache::cache {
namespace {

constexpr std::size_t kBins = 1024;
// What a key costs in the table files besides its bytes (an estimate).
constexpr std::uint64_t kKeyOverhead = 24;

struct KeyHash {
    std::size_t operator()(const meta::FileKey& k) const noexcept {
        return static_cast<std::size_t>(k.fsid * 0x9E3779B97F4A7C15ull ^ k.ino);
    }
};
using KeySet = std::unordered_set<meta::FileKey, KeyHash>;

// A listing of the layout before sequence numbers reads as the oldest.
std::uint64_t listing_seq(const meta::DirRecord& r) noexcept {
    return r.began_seq == ~std::uint64_t{0} ? 0 : r.began_seq;
}

} // namespace

std::uint64_t MetaCache::bytes() const {
    return meta_.approximate_bytes(meta::Cf::dentries) + meta_.approximate_bytes(meta::Cf::dirs) +
           meta_.approximate_bytes(meta::Cf::attrs);
}

bool MetaCache::drop_listing(const meta::FileKey& dir, std::uint64_t cut) {
    if (before_trim_drop_for_test)
        before_trim_drop_for_test(dir);
    std::lock_guard kl(key_mu(dir));
    const std::pair<std::uint64_t, std::uint64_t> id{dir.fsid, dir.ino};
    {
        std::lock_guard lk(mu_);
        // Served by an open handle: it lists on. Being read from the
        // backing: its entries are coming in. While we hold the marks, no
        // recording of it begins and no handle takes it.
        if (serving_.contains(id) || !recording_.emplace(id).second)
            return false;
        dropping_.insert(id);
    }
    if (while_dropping_for_test)
        while_dropping_for_test(dir);
    bool dropped = false;
    auto rec = whole(dir);
    if (!rec || listing_seq(*rec) < cut) {
        auto b = meta_.batch();
        b.del(meta::Cf::dirs, meta::file_key(dir));
        b.del_range(meta::Cf::dentries, meta::dentry_seek_key(dir, 0), meta::dentry_key_end(dir));
        if (auto r = meta_.write(b); !r)
            log::warn("index: cannot drop a listing: ", to_string(r.error()));
        else
            dropped = true;
    }
    {
        std::lock_guard lk(mu_);
        dropping_.erase(id);
    }
    done_recording(dir);
    return dropped;
}

std::unique_ptr<MetaCache::ListingHold> MetaCache::hold_listing(const meta::FileKey& dir) {
    {
        std::lock_guard lk(mu_);
        if (dropping_.contains({dir.fsid, dir.ino}))
            return nullptr;
        ++serving_[{dir.fsid, dir.ino}];
    }
    std::unique_ptr<ListingHold> hold(new ListingHold(*this, dir));
    // A trim that dropped it before the hold: gone now, and none can drop
    // it from here on.
    if (!whole(dir))
        return nullptr;
    return hold;
}

MetaCache::ListingHold::~ListingHold() {
    std::lock_guard lk(owner_.mu_);
    auto it = owner_.serving_.find({dir_.fsid, dir_.ino});
    if (it != owner_.serving_.end() && --it->second == 0)
        owner_.serving_.erase(it);
}

std::uint64_t MetaCache::drop_attrs(const std::vector<std::string>& keys, std::uint64_t cut) {
    if (keys.empty())
        return 0;
    if (before_trim_drop_for_test)
        for (const auto& k : keys) {
            meta::FileKey key;
            if (meta::decode_file_key(k, key))
                before_trim_drop_for_test(key);
        }
    // Every key lock, in order: the batch is a few milliseconds.
    std::vector<std::unique_lock<std::mutex>> locks;
    locks.reserve(key_mu_.size());
    for (auto& m : key_mu_)
        locks.emplace_back(m);
    auto b = meta_.batch();
    // Keys are fixed-length: nothing sorts between the last and this.
    auto cur = meta_.cursor(meta::Cf::attrs, keys.back() + std::string(1, '\0'));
    std::size_t i = 0;
    for (cur.seek(keys.front()); cur.valid() && i < keys.size(); cur.next()) {
        while (i < keys.size() && std::string_view(keys[i]) < cur.key())
            ++i; // dropped by someone else meanwhile
        if (i == keys.size() || std::string_view(keys[i]) != cur.key())
            continue;
        auto rec = meta::decode_attr_record(cur.value());
        if (!rec || rec->seen_seq < cut) // else written again since the cut
            b.del(meta::Cf::attrs, keys[i]);
        ++i;
    }
    if (auto r = cur.status(); !r) {
        log::warn("index: cannot drop attributes: ", to_string(r.error()));
        return 0;
    }
    const std::uint64_t n = b.count();
    if (auto r = meta_.write(b); !r) {
        log::warn("index: cannot drop attributes: ", to_string(r.error()));
        return 0;
    }
    return n;
}

Result<MetaCache::Trimmed> MetaCache::trim(std::uint64_t target,
                                           const std::vector<meta::FileKey>& pinned) {
    Trimmed out;
    if (bytes() <= target)
        return out;
    // Overwritten and deleted records count until a compaction drops them
    // (a walk rewrites attributes): measure what is live.
    for (meta::Cf cf : {meta::Cf::dentries, meta::Cf::dirs, meta::Cf::attrs})
        if (auto r = meta_.compact(cf); !r)
            return fail(r.error());
    const std::uint64_t used = bytes();
    if (used <= target)
        return out;

    // The pinned trees, as far as the kept listings reach.
    KeySet keep;
    std::deque<meta::FileKey> todo(pinned.begin(), pinned.end());
    while (!todo.empty()) {
        const meta::FileKey dir = todo.front();
        todo.pop_front();
        if (!keep.insert(dir).second)
            continue;
        auto cur = meta_.cursor(meta::Cf::dentries, meta::dentry_key_end(dir));
        for (cur.seek(meta::dentry_seek_key(dir, 0)); cur.valid(); cur.next()) {
            auto v = meta::decode_dentry(cur.value());
            if (!v)
                continue;
            if (v->type == DT_DIR)
                todo.push_back(v->child);
            else
                keep.insert(v->child);
        }
        if (auto r = cur.status(); !r)
            return fail(r.error());
    }

    // 1. Bytes by sequence number. A listing's entries are counted at the
    // dentries family's average per entry.
    const std::uint64_t now = meta_.sequence() + 1;
    const std::uint64_t width = now / kBins + 1; // sequence numbers a bin
    auto bin = [width](std::uint64_t seq) {
        return static_cast<std::size_t>(std::min<std::uint64_t>(kBins - 1, seq / width));
    };
    std::vector<std::uint64_t> bytes_in(kBins, 0), entries_in(kBins, 0);
    std::uint64_t entries = 0;
    // Each record of `cf` whose key decodes and is not kept, in key order.
    // false: the trim was cancelled (unmount).
    auto scan = [&](meta::Cf cf, const auto& each) -> Result<bool> {
        auto cur = meta_.cursor(cf);
        for (cur.seek_to_first(); cur.valid(); cur.next()) {
            if (trim_cancelled_.load(std::memory_order_relaxed))
                return false;
            meta::FileKey key;
            if (!meta::decode_file_key(cur.key(), key) || keep.contains(key))
                continue;
            each(key, cur.key(), cur.value());
        }
        if (auto r = cur.status(); !r)
            return fail(r.error());
        return true;
    };
    auto dirs1 = scan(meta::Cf::dirs, [&](const meta::FileKey&, std::string_view k,
                                          std::string_view v) {
        auto rec = meta::decode_dir_record(v);
        if (!rec)
            return;
        const std::size_t b = bin(listing_seq(*rec));
        bytes_in[b] += k.size() + v.size() + kKeyOverhead;
        entries_in[b] += rec->entries;
        entries += rec->entries;
    });
    if (!dirs1 || !*dirs1)
        return dirs1 ? Result<Trimmed>(out) : fail(dirs1.error());
    const std::uint64_t per_entry =
        entries == 0 ? 0 : meta_.approximate_bytes(meta::Cf::dentries) / entries;
    auto attrs1 = scan(meta::Cf::attrs, [&](const meta::FileKey&, std::string_view k,
                                            std::string_view v) {
        auto rec = meta::decode_attr_record(v);
        bytes_in[bin(rec ? rec->seen_seq : 0)] += k.size() + v.size() + kKeyOverhead;
    });
    if (!attrs1 || !*attrs1)
        return attrs1 ? Result<Trimmed>(out) : fail(attrs1.error());
    std::uint64_t total = 0;
    for (std::size_t b = 0; b < kBins; ++b) {
        bytes_in[b] += entries_in[b] * per_entry;
        total += bytes_in[b];
    }
    // The share over the target, of what may go.
    const auto drop = static_cast<std::uint64_t>(static_cast<long double>(total) *
                                                 static_cast<long double>(used - target) /
                                                 static_cast<long double>(used));
    std::size_t cut_bin = 0;
    for (std::uint64_t acc = 0; cut_bin < kBins && acc < drop; ++cut_bin)
        acc += bytes_in[cut_bin];
    // seq < cut  <=>  bin(seq) < cut_bin; never past `now`, so what is
    // written from here on is newer than the cut.
    out.cut_seq = std::min<std::uint64_t>(cut_bin * width, now);

    // What was dropped is counted however the trim ends (an error or a
    // cancel part way still dropped records).
    struct Counted {
        MetaCache& mc;
        const Trimmed& out;
        bool done = false;
        void publish() {
            if (std::exchange(done, true))
                return;
            std::lock_guard lk(mc.mu_);
            if (out.listings + out.attrs > 0)
                ++mc.stats_.trims;
            mc.stats_.listings_dropped += out.listings;
            mc.stats_.attrs_dropped += out.attrs;
        }
        ~Counted() { publish(); }
    } counted{*this, out};

    // 2. The drops: listings read before the cut, then those left
    // unfinished (no record), then attributes.
    auto dirs2 = scan(meta::Cf::dirs, [&](const meta::FileKey& dir, std::string_view,
                                          std::string_view v) {
        auto rec = meta::decode_dir_record(v);
        if ((!rec || listing_seq(*rec) < out.cut_seq) && drop_listing(dir, out.cut_seq))
            ++out.listings;
    });
    if (!dirs2 || !*dirs2)
        return dirs2 ? Result<Trimmed>(out) : fail(dirs2.error());
    {
        auto cur = meta_.cursor(meta::Cf::dentries);
        cur.seek_to_first();
        while (cur.valid()) {
            meta::DentryKey k;
            if (!meta::decode_dentry_key(cur.key(), k)) {
                cur.next(); // damaged: the listing's next reading drops it
                continue;
            }
            if (trim_cancelled_.load(std::memory_order_relaxed))
                return out;
            const meta::FileKey dir = k.dir;
            // An unfinished listing (no record) serves nothing: it goes,
            // unless it is being recorded right now.
            if (!keep.contains(dir) && !whole(dir) && drop_listing(dir, 0))
                ++out.listings;
            cur.seek(meta::dentry_key_end(dir));
        }
        if (auto r = cur.status(); !r)
            return fail(r.error());
    }
    {
        constexpr std::size_t kChunk = 1024;
        std::vector<std::string> chunk;
        auto attrs2 = scan(meta::Cf::attrs, [&](const meta::FileKey&, std::string_view k,
                                                std::string_view v) {
            auto rec = meta::decode_attr_record(v);
            if (!rec || rec->seen_seq < out.cut_seq)
                chunk.emplace_back(k);
            if (chunk.size() == kChunk) {
                out.attrs += drop_attrs(chunk, out.cut_seq);
                chunk.clear();
            }
        });
        if (!attrs2 || !*attrs2)
            return attrs2 ? Result<Trimmed>(out) : fail(attrs2.error());
        out.attrs += drop_attrs(chunk, out.cut_seq);
    }
    // Counted before the compaction that brings metadata_bytes down, so
    // that whoever sees the bytes under the limit also sees what went.
    counted.publish();
    for (meta::Cf cf : {meta::Cf::dentries, meta::Cf::dirs, meta::Cf::attrs})
        if (auto r = meta_.compact(cf); !r)
            return fail(r.error());
    return out;
}

} // namespace overcache::cache
