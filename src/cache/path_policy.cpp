// DOC: per-path settings (user.overcache.mode, sequential_cutoff,
// promote_after_hits, pin), stored in the index's `policy` family under the
// backing identity (FileKey), never on the backing: they follow renames
// (the identity does not change) and outlive the mount. Loaded whole at
// mount, since policies are set by hand and few; set() writes one synced
// batch and then updates the map, so the map never holds what the index
// does not. A policy outlives the file it names until it is removed; an
// inode number reused for another file inherits it (policies are advice,
// not data: a wrong one never serves wrong bytes).
#include "cache/path_policy.hpp"

#include "util/log.hpp"

#include <mutex>

namespace overcache::cache {

meta::PolicyRecord to_record(const PathSettings& s) noexcept {
    meta::PolicyRecord r;
    if (s.mode) {
        switch (*s.mode) {
        case config::CacheMode::writethrough:
            r.mode = meta::kPolicyModeWritethrough;
            break;
        case config::CacheMode::writearound:
            r.mode = meta::kPolicyModeWritearound;
            break;
        case config::CacheMode::none:
            r.mode = meta::kPolicyModeNone;
            break;
        case config::CacheMode::writeback:
            r.mode = meta::kPolicyModeWriteback;
            break;
        }
    }
    r.sequential_cutoff = s.sequential_cutoff;
    if (s.promote_after_hits)
        r.promote_after_hits = static_cast<std::uint32_t>(*s.promote_after_hits);
    r.pin = s.pin;
    return r;
}

std::optional<PathSettings> from_record(const meta::PolicyRecord& r) noexcept {
    PathSettings s;
    switch (r.mode) {
    case 0:
        break;
    case meta::kPolicyModeWritethrough:
        s.mode = config::CacheMode::writethrough;
        break;
    case meta::kPolicyModeWritearound:
        s.mode = config::CacheMode::writearound;
        break;
    case meta::kPolicyModeNone:
        s.mode = config::CacheMode::none;
        break;
    case meta::kPolicyModeWriteback:
        s.mode = config::CacheMode::writeback;
        break;
    default:
        return std::nullopt;
    }
    s.sequential_cutoff = r.sequential_cutoff;
    if (r.promote_after_hits)
        s.promote_after_hits = *r.promote_after_hits;
    s.pin = r.pin;
    return s;
}

Result<void> PathPolicy::load() {
    std::map<Id, PathSettings> loaded;
    auto cur = meta_.cursor(meta::Cf::policy);
    for (cur.seek_to_first(); cur.valid(); cur.next()) {
        meta::FileKey k;
        auto rec = meta::decode_policy(cur.value());
        std::optional<PathSettings> s = rec ? from_record(*rec) : std::nullopt;
        if (!meta::decode_file_key(cur.key(), k) || !s) {
            log::warn("cache: a damaged per-path setting in the index is ignored");
            continue;
        }
        if (!s->empty())
            loaded.emplace(Id{k.fsid, k.ino}, *s);
    }
    if (auto r = cur.status(); !r)
        return r;
    std::unique_lock lk(mu_);
    by_key_ = std::move(loaded);
    count_.store(by_key_.size());
    return {};
}

std::vector<meta::FileKey> PathPolicy::pinned() const {
    std::vector<meta::FileKey> out;
    if (!any())
        return out;
    std::shared_lock lk(mu_);
    for (const auto& [id, s] : by_key_)
        if (s.pin.value_or(false))
            out.push_back(meta::FileKey{id.first, id.second});
    return out;
}

std::optional<PathSettings> PathPolicy::get(const meta::FileKey& k) const {
    if (!any())
        return std::nullopt;
    std::shared_lock lk(mu_);
    if (auto it = by_key_.find(Id{k.fsid, k.ino}); it != by_key_.end())
        return it->second;
    return std::nullopt;
}

Result<void> PathPolicy::set(const meta::FileKey& k, const PathSettings& s) {
    std::lock_guard slk(set_mu_);
    auto b = meta_.batch();
    if (s.empty())
        b.del(meta::Cf::policy, meta::file_key(k));
    else
        b.put(meta::Cf::policy, meta::file_key(k), meta::encode(to_record(s)));
    if (auto r = meta_.write(b, true); !r)
        return r;
    std::unique_lock lk(mu_);
    if (s.empty())
        by_key_.erase(Id{k.fsid, k.ino});
    else
        by_key_[Id{k.fsid, k.ino}] = s;
    count_.store(by_key_.size());
    return {};
}

} // namespace overcache::cache
