// DOC: the table of files in use. acquire() and the last StateRef's release
// run under the table's mutex, which is a leaf (held for a map operation
// only), so a FileState is never freed while a reference can still reach it
// and an entry never outlives its last user.
#include "cache/file_table.hpp"

#include "util/log.hpp"

namespace overcache::cache {

StateRef::StateRef(const StateRef& o) : t_(o.t_), s_(o.s_) {
    if (s_ != nullptr)
        t_->add_ref(s_);
}

StateRef& StateRef::operator=(const StateRef& o) {
    if (this != &o) {
        if (o.s_ != nullptr)
            o.t_->add_ref(o.s_);
        reset();
        t_ = o.t_;
        s_ = o.s_;
    }
    return *this;
}

StateRef& StateRef::operator=(StateRef&& o) noexcept {
    if (this != &o) {
        reset();
        t_ = o.t_;
        s_ = o.s_;
        o.t_ = nullptr;
        o.s_ = nullptr;
    }
    return *this;
}

void StateRef::reset() noexcept {
    if (s_ != nullptr)
        t_->release(s_);
    t_ = nullptr;
    s_ = nullptr;
}

StateRef FileTable::acquire(const meta::FileKey& key) {
    std::lock_guard lk(mu_);
    auto& slot = map_[key];
    if (!slot)
        slot = std::make_unique<FileState>(key);
    ++slot->refs;
    return StateRef(this, slot.get());
}

StateRef FileTable::find(const meta::FileKey& key) {
    std::lock_guard lk(mu_);
    auto it = map_.find(key);
    if (it == map_.end())
        return {};
    ++it->second->refs;
    return StateRef(this, it->second.get());
}

std::size_t FileTable::size() const {
    std::lock_guard lk(mu_);
    return map_.size() + detached_.size(); // a nameless file still open is in use
}

void FileTable::add_ref(FileState* s) {
    std::lock_guard lk(mu_);
    ++s->refs;
}

void FileTable::detach(FileState& s) {
    std::lock_guard lk(mu_);
    auto it = map_.find(s.key);
    if (it == map_.end() || it->second.get() != &s)
        return; // detached already
    detached_.push_back(std::move(it->second));
    map_.erase(it);
}

void FileTable::release(FileState* s) noexcept {
    std::unique_ptr<FileState> dead; // freed after the lock is dropped
    std::lock_guard lk(mu_);
    if (--s->refs != 0)
        return;
    if (auto it = map_.find(s->key); it != map_.end() && it->second.get() == s) {
        dead = std::move(it->second);
        map_.erase(it);
        return;
    }
    for (auto it = detached_.begin(); it != detached_.end(); ++it)
        if (it->get() == s) {
            dead = std::move(*it);
            detached_.erase(it);
            return;
        }
    OC_ASSERT(false);
}

} // namespace overcache::cache
