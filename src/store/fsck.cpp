// DOC: `overcache fsck`: the index of an unmounted cache checked against its
// bucket records, its data device and itself. One read pass loads the
// buckets, file records, file_ids and dirty entries, then walks the extents
// file by file: each is decoded, placed (bucket and bounds), judged current
// (its gen is its bucket's: a stale one is normal, dropped later by
// compaction) and its bytes read back and verified. Sums of current extents
// per bucket are compared with the bucket records.
// Repair never drops a dirty extent whose bytes verify. One that cannot be
// used (damaged, misplaced, failing its checksum) has its bytes copied to
// lost+found and synced first; then one synced batch drops the extents (and
// the dirty entry of a file left with no dirty data), the next rewrites the
// bucket accounting, the last mends file_ids and dirty entries. Without
// repair the index is opened read-only and nothing at all is written.
#include "overcache/store/fsck.hpp"

#include "fsck_salvage.hpp"
#include "offline_cache.hpp"
#include "overcache/meta/key_codec.hpp"
#include "overcache/meta/meta_store.hpp"
#include "overcache/meta/names_codec.hpp"
#include "util/file_io.hpp"
#include "util/size_text.hpp"
#include "util/unique_fd.hpp"

#include <chrono>
#include <fcntl.h>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unistd.h>

namespace overcache::store {
namespace {

constexpr std::size_t kExamples = 5;

using Each = std::function<bool(std::string_view, std::string_view)>;

// The index as fsck reads it: read-only (no LOCK, nothing written) for a
// check, through the store opened for writing for a repair.
struct IndexView {
    std::string dir;
    meta::MetaStore* ms = nullptr;

    Result<void> scan(meta::Cf cf, const Each& each) const {
        if (ms == nullptr)
            return meta::MetaStore::peek_each(dir, cf, each);
        auto cur = ms->cursor(cf);
        for (cur.seek_to_first(); cur.valid(); cur.next())
            if (!each(cur.key(), cur.value()))
                break;
        return cur.status();
    }
};

std::string hex(std::string_view s) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    for (const char c : s.substr(0, 24)) {
        out.push_back(kDigits[(static_cast<unsigned char>(c) >> 4) & 0xf]);
        out.push_back(kDigits[static_cast<unsigned char>(c) & 0xf]);
    }
    return s.size() > 24 ? out + "..." : out;
}

void note(FsckFinding& f, std::uint64_t bytes, std::string example) {
    ++f.count;
    f.bytes += bytes;
    if (f.examples.size() < kExamples)
        f.examples.push_back(std::move(example));
}

struct Sums {
    std::uint64_t live = 0;
    std::uint64_t dirty = 0;
    std::uint64_t pinned = 0; // kExtentPinned (user.overcache.pin)
};

struct Bucket {
    std::optional<meta::BucketRecord> rec; // nullopt: no record (free at gen 0)
    bool damaged = false;                  // a record that does not decode: no gen to judge by
    Sums found;                            // current extents as the index has them
    Sums kept;                             // the same after this run's repairs
};

struct File {
    std::string key; // in Cf::files
    meta::FileRecord rec;
    bool claimed_twice = false;
};

// A current extent that passed its checks, remembered for the overlap test
// against the next one of its file.
struct Kept {
    std::string key;
    meta::ExtentValue v;
    std::uint64_t start = 0;
    std::uint64_t end = 0;
};

class Fsck {
public:
    Fsck(std::string dir, bool repair) : dir_(std::move(dir)), repair_(repair) {}
    Result<FsckReport> run();

private:
    Result<void> open();
    Result<void> load();
    Result<void> check_extents();
    void check_extent(std::string_view key, std::string_view value);
    // Drops an extent (repair only), first saving its bytes when it may be
    // dirty. v: nullptr when the value does not decode.
    void drop(std::string_view key, meta::FileId file, std::uint64_t start,
              const meta::ExtentValue* v, std::string_view raw, const std::string& why);
    void check_accounting();
    void check_links();
    // Kept directory listings (dentries, dirs) and attributes (attrs) whose
    // records do not decode:
    // the directory's listing is dropped (it is read from the backing again).
    Result<void> check_listings();
    Result<void> commit(meta::Batch& b);
    std::string where(meta::FileId file, std::uint64_t start, std::uint64_t len) const;

    std::string dir_;
    bool repair_;
    FsckReport rep_;
    std::unique_ptr<meta::MetaStore> ms_;
    IndexView index_;
    UniqueFd data_;
    std::string data_path_;
    meta::Superblock sb_;
    std::vector<Bucket> buckets_;
    std::map<meta::FileId, File> files_;                // by the FileId the record claims
    std::map<meta::FileId, std::string> file_ids_;      // FileId -> the files key it names
    std::map<meta::FileId, std::string> dirty_;         // FileId -> its dirty entry's key
    std::map<meta::FileId, std::uint64_t> dirty_bytes_; // kept dirty bytes per file
    std::set<meta::FileId> lost_dirty_;                 // files whose dirty extent was dropped
    std::vector<std::string> bad_file_id_keys_;         // file_ids keys that do not decode
    std::vector<std::string> bad_dirty_keys_;           // dirty entries that do not decode
    std::optional<Kept> last_;                          // of the file being walked
    std::optional<meta::Batch> extents_batch_;
    Error saving_error_;
    bool saving_failed_ = false;
};

std::string Fsck::where(meta::FileId file, std::uint64_t start, std::uint64_t len) const {
    std::string s = "file " + std::to_string(file);
    if (auto it = files_.find(file); it != files_.end() && !it->second.rec.path.empty())
        s += " (/" + it->second.rec.path + ")";
    return s + " [" + std::to_string(start) + ", +" + size_text(len) + ")";
}

Result<void> Fsck::open() {
    const std::string index_dir = dir_ + "/index";
    if (!meta::MetaStore::exists(index_dir))
        return fail(Errc::BadValue,
                    dir_ + " is not an overcache cache: it has no index (" + index_dir + ")");
    if (const pid_t pid = lock_holder(index_dir); pid != 0)
        return in_use(dir_, pid);
    index_.dir = index_dir;
    std::optional<std::string> raw;
    if (repair_) {
        auto ms = meta::MetaStore::open(index_dir, meta::StoreOptions{});
        if (!ms) {
            if (ms.error().code == Errc::Sys) // the LOCK taken between the check and the open
                return in_use(dir_, lock_holder(index_dir));
            return fail(Errc::MetaCorrupt,
                        "cannot open the index of " + dir_ + " (" + ms.error().message + ")");
        }
        ms_ = std::move(*ms);
        index_.ms = ms_.get();
        auto v = ms_->get(meta::Cf::meta, meta::kSuperblockKey);
        if (!v)
            return fail(v.error());
        raw = std::move(*v);
    } else {
        auto v = meta::MetaStore::peek(index_dir, meta::Cf::meta, meta::kSuperblockKey);
        if (!v)
            return fail(Errc::MetaCorrupt,
                        "cannot read the index of " + dir_ + " (" + v.error().message + ")");
        raw = std::move(*v);
    }
    if (std::string damage = superblock_damage(dir_, raw, sb_); !damage.empty()) {
        rep_.fatal = std::move(damage);
        return {};
    }
    rep_.bucket_count = sb_.bucket_count;
    rep_.bucket_size = sb_.bucket_size;
    data_path_ = dir_ + "/data";
    // Only read, also by a repair: salvaged bytes go to lost+found.
    data_ = UniqueFd(::open(data_path_.c_str(), O_RDONLY | O_CLOEXEC));
    if (!data_)
        return fail_errno("cannot open " + data_path_ +
                          " (a cache on a cache_dev= device is not checked by fsck)");
    auto damage = data_header_damage(data_.get(), data_path_, sb_);
    if (!damage)
        return fail(damage.error());
    if (!damage->empty())
        rep_.fatal = "the cache at " + dir_ + " is damaged: " + *damage;
    return {};
}

Result<void> Fsck::load() {
    buckets_.resize(sb_.bucket_count);
    auto& bad_buckets = rep_.at(FsckCheck::bucket_records);
    std::optional<meta::Batch> fix;
    if (repair_)
        fix.emplace(ms_->batch());
    auto r = index_.scan(meta::Cf::buckets, [&](std::string_view k, std::string_view v) {
        std::uint32_t b = 0;
        if (!meta::decode_bucket_key(k, b) || b >= sb_.bucket_count) {
            // Nothing points there; a grow would otherwise find it.
            note(bad_buckets, 0, "a bucket record past the last bucket (key " + hex(k) + ")");
            if (fix) {
                fix->del(meta::Cf::buckets, k);
                ++bad_buckets.repaired;
            }
        } else if (auto rec = meta::decode_bucket(v)) {
            buckets_[b].rec = *rec;
        } else {
            // The allocator keeps such a bucket out of use; rewriting it
            // would need a gen, which would decide what its extents are.
            buckets_[b].damaged = true;
            note(bad_buckets, 0,
                 "bucket " + std::to_string(b) +
                     "'s record does not decode (left as it is: "
                     "the mount keeps it out of use)");
        }
        return true;
    });
    if (!r)
        return r;
    if (fix && fix->count() > 0)
        if (auto w = commit(*fix); !w)
            return w;

    auto& links = rep_.at(FsckCheck::file_ids);
    r = index_.scan(meta::Cf::files, [&](std::string_view k, std::string_view v) {
        meta::FileKey fk;
        auto rec = meta::decode_file_record(v);
        if (!meta::decode_file_key(k, fk) || !rec) {
            note(links, 0, "a file record that does not decode (key " + hex(k) + "; left)");
            return true;
        }
        auto [it, fresh] = files_.try_emplace(rec->file_id, File{std::string(k), *rec, false});
        if (!fresh) {
            it->second.claimed_twice = true;
            note(links, 0,
                 "file id " + std::to_string(rec->file_id) + " is claimed by two file records (/" +
                     it->second.rec.path + " and /" + rec->path + "; left)");
        }
        return true;
    });
    if (!r)
        return r;
    r = index_.scan(meta::Cf::file_ids, [&](std::string_view k, std::string_view v) {
        meta::FileId id = 0;
        if (!meta::decode_file_id_key(k, id)) {
            note(links, 0, "a file_ids entry whose key does not decode (" + hex(k) + ")");
            bad_file_id_keys_.emplace_back(k); // dropped by check_links()
            return true;
        }
        file_ids_[id] = std::string(v);
        return true;
    });
    if (!r)
        return r;
    return index_.scan(meta::Cf::dirty, [&](std::string_view k, std::string_view v) {
        meta::DirtyKey dk;
        if (!meta::decode_dirty_key(k, dk) || v.size() != 8) {
            note(rep_.at(FsckCheck::dirty_orphan), 0,
                 "a dirty entry that does not decode (key " + hex(k) + ")");
            bad_dirty_keys_.emplace_back(k); // dropped by check_links()
            return true;
        }
        if (dk.start == 0)
            dirty_[dk.file] = std::string(k);
        return true;
    });
}

void Fsck::drop(std::string_view key, meta::FileId file, std::uint64_t start,
                const meta::ExtentValue* v, std::string_view raw, const std::string& why) {
    if (!repair_ || saving_failed_)
        return;
    // A value that does not decode may have been dirty: keep what it said.
    const bool maybe_dirty = v == nullptr || (v->flags & meta::kExtentDirty) != 0;
    if (maybe_dirty) {
        Salvage s;
        s.file_id = file;
        s.offset = start;
        s.len = v != nullptr ? v->len : 0;
        if (auto it = files_.find(file); it != files_.end())
            s.file_path = it->second.rec.path;
        s.why = why;
        if (v == nullptr) {
            s.readable = false;
            s.why += " (the index value, hex: " + hex(raw) + ")";
        } else if (v->bucket < sb_.bucket_count) {
            s.bytes.resize(v->len);
            const std::uint64_t off =
                sb_.data_offset + std::uint64_t{v->bucket} * sb_.bucket_size + v->bucket_off;
            const ssize_t n = pread_upto(data_.get(), s.bytes.data(), s.bytes.size(), off);
            s.bytes.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
            s.readable = n > 0;
        } else {
            s.readable = false;
        }
        auto saved = save_salvage(dir_ + "/lost+found", s);
        if (!saved) {
            // Never drop dirty bytes without their copy: stop repairing.
            saving_failed_ = true;
            saving_error_ = saved.error();
            return;
        }
        rep_.saved.push_back(*saved + " (" + where(file, start, s.len) + ": " + why + ")");
        lost_dirty_.insert(file);
    }
    extents_batch_->del(meta::Cf::extents, key);
}

void Fsck::check_extent(std::string_view key, std::string_view value) {
    meta::ExtentKey k;
    meta::ExtentValue v;
    const bool key_ok = meta::decode_extent_key(key, k);
    if (!key_ok || !meta::decode_extent(value, v)) {
        auto& f = rep_.at(FsckCheck::extent_damaged);
        note(f, 0,
             key_ok ? "the extent ending at " + std::to_string(k.end) + " of file " +
                          std::to_string(k.file) + " does not decode"
                    : "an extent whose key does not decode (" + hex(key) + ")");
        drop(key, k.file, k.end, nullptr, value, "its index entry does not decode");
        f.repaired += repair_ && !saving_failed_;
        return;
    }
    const bool dirty = (v.flags & meta::kExtentDirty) != 0;
    const char* kind = dirty ? "dirty" : "clean";
    if (!dirty && v.bucket >= sb_.bucket_count && v.len != 0 && v.len <= k.end &&
        std::uint64_t{v.bucket_off} + v.len <= sb_.bucket_size) {
        // A live shrink leaves the clean entries past the new end (only a
        // file's owner deletes its extents): stale, as in a reclaimed
        // bucket, and the compaction filter drops them the same way.
        note(rep_.at(FsckCheck::extent_stale), v.len, where(k.file, k.end - v.len, v.len));
        return;
    }
    if (v.len == 0 || v.len > k.end || v.bucket >= sb_.bucket_count ||
        std::uint64_t{v.bucket_off} + v.len > sb_.bucket_size) {
        auto& f = rep_.at(FsckCheck::extent_range);
        const std::uint64_t start = v.len <= k.end ? k.end - v.len : 0;
        const std::string why = std::string(kind) + ", bucket " + std::to_string(v.bucket) + " +" +
                                std::to_string(v.bucket_off) + ": outside the cache's buckets";
        note(f, v.len, where(k.file, start, v.len) + ": " + why);
        drop(key, k.file, start, &v, value, "its place on the cache device is out of range");
        f.repaired += repair_ && !saving_failed_;
        return;
    }
    const std::uint64_t start = k.end - v.len;
    if (v.csums.size() != meta::csum_block_count(start, v.len)) {
        auto& f = rep_.at(FsckCheck::extent_csum_count);
        note(f, v.len,
             where(k.file, start, v.len) + ": " + kind + ", " + std::to_string(v.csums.size()) +
                 " checksums for " + std::to_string(meta::csum_block_count(start, v.len)) +
                 " blocks");
        drop(key, k.file, start, &v, value, "its index entry has the wrong number of checksums");
        f.repaired += repair_ && !saving_failed_;
        return;
    }
    Bucket& b = buckets_[v.bucket];
    const std::uint32_t gen = b.rec ? b.rec->gen : 0;
    if (b.damaged || gen != v.gen) {
        note(rep_.at(FsckCheck::extent_stale), v.len, where(k.file, start, v.len));
        return;
    }
    ++rep_.extents;
    rep_.extent_bytes += v.len;
    rep_.dirty_bytes += dirty ? v.len : 0;
    b.found.live += v.len;
    b.found.dirty += dirty ? v.len : 0;
    const bool pinned = (v.flags & meta::kExtentPinned) != 0;
    b.found.pinned += pinned ? v.len : 0;

    std::vector<char> bytes(v.len);
    const std::uint64_t off =
        sb_.data_offset + std::uint64_t{v.bucket} * sb_.bucket_size + v.bucket_off;
    const ssize_t n = pread_upto(data_.get(), bytes.data(), bytes.size(), off);
    if (n != static_cast<ssize_t>(bytes.size()) || !checksums_match(start, bytes, v.csums)) {
        auto& f = rep_.at(dirty ? FsckCheck::dirty_checksum : FsckCheck::clean_checksum);
        const std::string why = n < 0 ? "its bytes cannot be read from the cache device"
                                      : "its bytes fail their checksums";
        note(f, v.len,
             where(k.file, start, v.len) + " in bucket " + std::to_string(v.bucket) + ": " + why);
        drop(key, k.file, start, &v, value, why);
        f.repaired += repair_ && !saving_failed_;
        return;
    }

    Kept here{std::string(key), v, start, k.end};
    if (last_ && start < last_->end) {
        auto& f = rep_.at(FsckCheck::extent_overlap);
        note(f, std::min(last_->end, k.end) - start,
             where(k.file, start, v.len) + " overlaps [" + std::to_string(last_->start) + ", " +
                 std::to_string(last_->end) + ")");
        // Of two, a clean one goes (the backing has its bytes); two dirty
        // ones are left for a person to judge.
        if (!dirty) {
            drop(key, k.file, start, &v, value, "overlaps another extent");
            f.repaired += repair_ && !saving_failed_;
            return;
        }
        if ((last_->v.flags & meta::kExtentDirty) == 0 && repair_ && !saving_failed_) {
            drop(last_->key, k.file, last_->start, &last_->v, {}, "overlaps another extent");
            Sums& was = buckets_[last_->v.bucket].kept;
            was.live -= last_->v.len; // clean: no dirty bytes
            if ((last_->v.flags & meta::kExtentPinned) != 0)
                was.pinned -= last_->v.len;
            ++f.repaired;
        }
    }
    b.kept.live += v.len;
    b.kept.pinned += pinned ? v.len : 0;
    if (dirty) {
        b.kept.dirty += v.len;
        dirty_bytes_[k.file] += v.len;
    }
    last_ = std::move(here);
}

Result<void> Fsck::check_extents() {
    if (repair_)
        extents_batch_.emplace(ms_->batch());
    meta::FileId file = ~meta::FileId{0};
    auto r = index_.scan(meta::Cf::extents, [&](std::string_view k, std::string_view v) {
        meta::ExtentKey ek;
        if (!meta::decode_extent_key(k, ek))
            ek.file = ~meta::FileId{0};
        if (ek.file != file) {
            last_.reset();
            file = ek.file;
        }
        check_extent(k, v);
        return true;
    });
    if (!r)
        return r;
    if (saving_failed_)
        return fail(saving_error_.code, "cannot keep a copy of dirty data before dropping it (" +
                                            saving_error_.message + "); nothing was dropped");
    if (!repair_)
        return {};
    // A file whose dirty data went to lost+found and has none left is no
    // longer ahead of the backing: writeback has nothing to write.
    for (const meta::FileId id : lost_dirty_) {
        if (dirty_bytes_.count(id) != 0)
            continue;
        if (auto d = dirty_.find(id); d != dirty_.end()) {
            extents_batch_->del(meta::Cf::dirty, d->second);
            dirty_.erase(d);
        }
        if (auto f = files_.find(id);
            f != files_.end() && (f->second.rec.flags & meta::kFileAhead) != 0) {
            f->second.rec.flags &= ~meta::kFileAhead;
            extents_batch_->put(meta::Cf::files, f->second.key, meta::encode(f->second.rec));
            rep_.notes.push_back("file " + std::to_string(id) + " (/" + f->second.rec.path +
                                 ") has no dirty data left: it is no longer ahead of its "
                                 "backing, which now serves the ranges saved to lost+found");
        }
    }
    if (extents_batch_->count() > 0)
        return commit(*extents_batch_);
    return {};
}

void Fsck::check_accounting() {
    auto& f = rep_.at(FsckCheck::bucket_accounting);
    std::optional<meta::Batch> fix;
    if (repair_)
        fix.emplace(ms_->batch());
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
        Bucket& b = buckets_[i];
        if (b.damaged)
            continue;
        const meta::BucketRecord rec = b.rec.value_or(meta::BucketRecord{});
        if (rec.live_bytes != b.found.live || rec.dirty_bytes != b.found.dirty ||
            rec.pinned_bytes != b.found.pinned)
            note(f, 0,
                 "bucket " + std::to_string(i) + ": live " + size_text(rec.live_bytes) +
                     ", dirty " + size_text(rec.dirty_bytes) + ", pinned " +
                     size_text(rec.pinned_bytes) + "; its extents hold " + size_text(b.found.live) +
                     ", dirty " + size_text(b.found.dirty) + ", pinned " +
                     size_text(b.found.pinned));
        if (fix && (rec.live_bytes != b.kept.live || rec.dirty_bytes != b.kept.dirty ||
                    rec.pinned_bytes != b.kept.pinned)) {
            meta::BucketRecord next = rec;
            next.live_bytes = static_cast<std::uint32_t>(b.kept.live);
            next.dirty_bytes = static_cast<std::uint32_t>(b.kept.dirty);
            next.pinned_bytes = static_cast<std::uint32_t>(b.kept.pinned);
            if (!b.rec && next.live_bytes > 0) { // extents in a bucket with no record
                next.state = meta::BucketState::full;
                next.fill_bytes = static_cast<std::uint32_t>(sb_.bucket_size);
            }
            fix->put(meta::Cf::buckets, meta::bucket_key(static_cast<std::uint32_t>(i)),
                     meta::encode(next));
        }
    }
    if (fix && fix->count() > 0) {
        if (auto w = commit(*fix); !w) {
            saving_failed_ = true;
            saving_error_ = w.error();
            return;
        }
        f.repaired = f.count;
    }
}

void Fsck::check_links() {
    auto& links = rep_.at(FsckCheck::file_ids);
    auto& orphans = rep_.at(FsckCheck::dirty_orphan);
    auto& unlisted = rep_.at(FsckCheck::dirty_unlisted);
    std::optional<meta::Batch> fix;
    if (repair_)
        fix.emplace(ms_->batch());
    std::uint64_t fixed_links = 0, fixed_orphans = 0, fixed_unlisted = 0;

    for (const auto& [id, file] : files_) {
        auto it = file_ids_.find(id);
        if (it != file_ids_.end() && it->second == file.key)
            continue;
        note(links, 0,
             "file id " + std::to_string(id) + " (/" + file.rec.path + ") " +
                 (it == file_ids_.end() ? "has no file_ids entry"
                                        : "has a file_ids entry naming "
                                          "another file"));
        if (fix && !file.claimed_twice) {
            fix->put(meta::Cf::file_ids, meta::file_id_key(id), file.key);
            ++fixed_links;
        }
    }
    for (const auto& [id, key] : file_ids_) {
        if (files_.count(id) != 0)
            continue;
        note(links, 0, "file_ids entry " + std::to_string(id) + " names no file record");
        if (fix) {
            fix->del(meta::Cf::file_ids, meta::file_id_key(id));
            ++fixed_links;
        }
    }
    for (const auto& key : bad_file_id_keys_) // noted at load
        if (fix) {
            fix->del(meta::Cf::file_ids, key);
            ++fixed_links;
        }
    for (const auto& key : bad_dirty_keys_) // noted at load; writeback skips them
        if (fix) {
            fix->del(meta::Cf::dirty, key);
            ++fixed_orphans;
        }

    const auto ahead = [&](meta::FileId id) {
        auto f = files_.find(id);
        return f != files_.end() && (f->second.rec.flags & meta::kFileAhead) != 0;
    };
    // An entry per file that is ahead of the backing; such a file may have
    // no dirty extent (a size changed through the mount), so that is fine.
    for (const auto& [id, key] : dirty_) {
        if (ahead(id))
            continue;
        if (dirty_bytes_.count(id) != 0)
            continue; // its dirty extents are reported below; the entry stays with them
        note(orphans, 0,
             "dirty entry of file " + std::to_string(id) + ", which is not ahead of its backing");
        if (fix) {
            fix->del(meta::Cf::dirty, key);
            ++fixed_orphans;
        }
    }
    for (const auto& [id, bytes] : dirty_bytes_) {
        const bool listed = dirty_.count(id) != 0;
        if (listed && ahead(id))
            continue;
        auto f = files_.find(id);
        const std::string who =
            "file " + std::to_string(id) +
            (f != files_.end() ? " (/" + f->second.rec.path + ")" : std::string(" (no record)"));
        if (!ahead(id)) {
            // Writeback cannot take it without a record that is ahead; what
            // size to give the file is not fsck's to guess.
            note(unlisted, bytes,
                 who + ": " + size_text(bytes) +
                     " of dirty data, but its record is not ahead of the backing (left)");
            continue;
        }
        note(unlisted, bytes, who + ": " + size_text(bytes) + " of dirty data with no dirty entry");
        if (fix) {
            std::string since;
            meta::put_be64(since, static_cast<std::uint64_t>(
                                      std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count()));
            fix->put(meta::Cf::dirty, meta::dirty_key(id, 0), since);
            ++fixed_unlisted;
        }
    }
    if (fix && fix->count() > 0) {
        if (auto w = commit(*fix); !w) {
            saving_failed_ = true;
            saving_error_ = w.error();
            return;
        }
        links.repaired += fixed_links;
        orphans.repaired += fixed_orphans;
        unlisted.repaired += fixed_unlisted;
    }
}

Result<void> Fsck::check_listings() {
    auto& bad = rep_.at(FsckCheck::listings);
    std::optional<meta::Batch> fix;
    if (repair_)
        fix.emplace(ms_->batch());
    // Drops the whole listing of the directory a damaged record belongs to,
    // when the key says which one; else just the record.
    auto drop = [&](meta::Cf cf, std::string_view k) {
        if (!fix)
            return;
        fix->del(cf, k);
        meta::FileKey dir;
        if (k.size() >= 16 && meta::decode_file_key(k.substr(0, 16), dir)) {
            fix->del(meta::Cf::dirs, meta::file_key(dir));
            fix->del_range(meta::Cf::dentries, meta::dentry_seek_key(dir, 0),
                           meta::dentry_key_end(dir));
        }
        ++bad.repaired;
    };
    auto r = index_.scan(meta::Cf::dirs, [&](std::string_view k, std::string_view v) {
        meta::FileKey dir;
        if (!meta::decode_file_key(k, dir) || !meta::decode_dir_record(v)) {
            note(bad, 0, "a directory listing record that does not decode (key " + hex(k) + ")");
            drop(meta::Cf::dirs, k);
        }
        return true;
    });
    if (!r)
        return r;
    r = index_.scan(meta::Cf::dentries, [&](std::string_view k, std::string_view v) {
        meta::DentryKey dk;
        if (!meta::decode_dentry_key(k, dk) || !meta::decode_dentry(v)) {
            note(bad, 0, "a directory entry that does not decode (key " + hex(k) + ")");
            drop(meta::Cf::dentries, k);
        }
        return true;
    });
    if (!r)
        return r;
    // A damaged attribute record goes alone: the mount records it again at
    // the file's next lookup.
    r = index_.scan(meta::Cf::attrs, [&](std::string_view k, std::string_view v) {
        meta::FileKey file;
        if (!meta::decode_file_key(k, file) || !meta::decode_attr_record(v)) {
            note(bad, 0, "kept attributes that do not decode (key " + hex(k) + ")");
            if (fix) {
                fix->del(meta::Cf::attrs, k);
                ++bad.repaired;
            }
        }
        return true;
    });
    if (!r)
        return r;
    if (fix && fix->count() > 0)
        return commit(*fix);
    return {};
}

Result<void> Fsck::commit(meta::Batch& b) {
    if (auto r = ms_->write(b, true); !r)
        return fail(r.error().code, "cannot write the repair to the index: " + r.error().message);
    return {};
}

Result<FsckReport> Fsck::run() {
    if (auto r = open(); !r)
        return fail(r.error());
    if (!rep_.fatal.empty())
        return std::move(rep_);
    if (auto r = load(); !r)
        return fail(r.error());
    if (auto r = check_extents(); !r)
        return fail(r.error());
    check_accounting();
    if (!saving_failed_)
        check_links();
    if (saving_failed_)
        return fail(saving_error_);
    if (auto r = check_listings(); !r)
        return fail(r.error());
    if (ms_)
        if (auto r = ms_->flush(); !r)
            return fail(r.error());
    return std::move(rep_);
}

} // namespace

std::uint64_t FsckReport::problems() const {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < found.size(); ++i)
        if (static_cast<FsckCheck>(i) != FsckCheck::extent_stale)
            n += found[i].count;
    return n + (fatal.empty() ? 0 : 1);
}

std::uint64_t FsckReport::repaired() const {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < found.size(); ++i)
        if (static_cast<FsckCheck>(i) != FsckCheck::extent_stale)
            n += found[i].repaired;
    return n;
}

const char* fsck_check_label(FsckCheck c) noexcept {
    switch (c) {
    case FsckCheck::bucket_records:
        return "bad bucket records";
    case FsckCheck::extent_damaged:
        return "extents that do not decode";
    case FsckCheck::extent_range:
        return "extents out of range";
    case FsckCheck::extent_csum_count:
        return "extents with wrong checksum count";
    case FsckCheck::extent_stale:
        return "stale extents (normal)";
    case FsckCheck::extent_overlap:
        return "overlapping extents";
    case FsckCheck::clean_checksum:
        return "clean data failing checksums";
    case FsckCheck::dirty_checksum:
        return "dirty data failing checksums";
    case FsckCheck::dirty_unlisted:
        return "dirty data writeback cannot find";
    case FsckCheck::dirty_orphan:
        return "orphaned dirty entries";
    case FsckCheck::file_ids:
        return "files/file_ids mismatches";
    case FsckCheck::bucket_accounting:
        return "bucket accounting mismatches";
    case FsckCheck::listings:
        return "damaged directory listings or attributes";
    }
    return "?";
}

Result<FsckReport> fsck_cache_dir(const std::string& dir, bool repair) {
    return Fsck(dir, repair).run();
}

} // namespace overcache::store
