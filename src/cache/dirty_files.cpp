// DOC: the in-memory set of dirty files and its start-up load. The index is
// the truth (a dirty entry per file, written in the same batch as the
// record that says the file is ahead); this is its cache in memory.
#include "cache/dirty_files.hpp"

#include "overcache/meta/schema.hpp"
#include "util/log.hpp"

#include <algorithm>

namespace overcache::cache {

void DirtyFiles::set(const meta::FileKey& key, const DirtyView& v) {
    std::lock_guard lk(mu_);
    map_[key] = v;
}

void DirtyFiles::erase(const meta::FileKey& key) {
    std::lock_guard lk(mu_);
    map_.erase(key);
}

std::optional<DirtyView> DirtyFiles::find(const meta::FileKey& key) const {
    std::lock_guard lk(mu_);
    auto it = map_.find(key);
    if (it == map_.end())
        return std::nullopt;
    return it->second;
}

std::vector<std::pair<meta::FileKey, DirtyView>> DirtyFiles::oldest_first() const {
    std::vector<std::pair<meta::FileKey, DirtyView>> out;
    {
        std::lock_guard lk(mu_);
        out.assign(map_.begin(), map_.end());
    }
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.second.since_ns < b.second.since_ns; });
    return out;
}

std::size_t DirtyFiles::size() const {
    std::lock_guard lk(mu_);
    return map_.size();
}

Result<void> DirtyFiles::load(meta::MetaStore& meta) {
    auto cur = meta.cursor(meta::Cf::dirty);
    for (cur.seek_to_first(); cur.valid(); cur.next()) {
        meta::DirtyKey dk;
        if (!meta::decode_dirty_key(cur.key(), dk) || cur.value().size() != 8) {
            log::warn("cache: a damaged entry in the dirty list; skipped");
            continue;
        }
        auto k = meta.get(meta::Cf::file_ids, meta::file_id_key(dk.file));
        if (!k)
            return fail(k.error());
        meta::FileKey key;
        if (!k->has_value() || !meta::decode_file_key(**k, key)) {
            log::error("cache: dirty file ", dk.file, " has no file id entry; its data cannot be "
                       "written back");
            continue;
        }
        auto r = meta.get(meta::Cf::files, meta::file_key(key));
        if (!r)
            return fail(r.error());
        std::optional<meta::FileRecord> rec;
        if (r->has_value())
            rec = meta::decode_file_record(**r);
        if (!rec || rec->file_id != dk.file || (rec->flags & meta::kFileAhead) == 0) {
            log::error("cache: dirty file ", dk.file, " has no matching record; its data cannot "
                       "be written back");
            continue;
        }
        DirtyView v;
        v.fid = dk.file;
        v.size = rec->cache_size;
        v.mtime_ns = rec->cache_mtime_ns;
        v.since_ns = static_cast<std::int64_t>(meta::get_be64(cur.value().data()));
        std::lock_guard lk(mu_);
        map_[key] = v;
    }
    return cur.status();
}

} // namespace overcache::cache
