#include "cache/write_buffers.hpp"

#include <algorithm>
#include <new>

namespace overcache::cache {

namespace {
constexpr std::size_t kAlign = 4096;
}

WriteBuffers::Buffer& WriteBuffers::Buffer::operator=(Buffer&& o) noexcept {
    if (this != &o) {
        give_back();
        p_ = std::move(o.p_);
        cap_ = o.cap_;
        pool_ = o.pool_;
        o.cap_ = 0;
        o.pool_ = nullptr;
    }
    return *this;
}

void WriteBuffers::Buffer::give_back() noexcept {
    if (pool_ != nullptr && p_)
        pool_->put(*this);
    p_.reset();
    cap_ = 0;
    pool_ = nullptr;
}

WriteBuffers::Buffer WriteBuffers::get(std::size_t size) {
    {
        std::lock_guard lk(mu_);
        std::size_t best = kept_.size();
        for (std::size_t i = 0; i < kept_.size(); ++i)
            if (kept_[i].cap_ >= size && (best == kept_.size() || kept_[i].cap_ < kept_[best].cap_))
                best = i;
        if (best < kept_.size()) {
            Buffer b = std::move(kept_[best]);
            kept_[best] = std::move(kept_.back());
            kept_.pop_back();
            kept_bytes_ -= b.cap_;
            b.pool_ = this;
            return b;
        }
    }
    Buffer b;
    const std::size_t cap = (std::max<std::size_t>(size, 1) + kAlign - 1) / kAlign * kAlign;
    b.p_.reset(static_cast<char*>(std::aligned_alloc(kAlign, cap)));
    if (!b.p_)
        throw std::bad_alloc();
    b.cap_ = cap;
    b.pool_ = this;
    return b;
}

void WriteBuffers::put(Buffer& b) noexcept {
    std::lock_guard lk(mu_);
    if (kept_.size() >= kKeepBuffers || kept_bytes_ + b.cap_ > kKeepBytes)
        return; // freed by the caller
    if (kept_.capacity() < kKeepBuffers) {
        try {
            kept_.reserve(kKeepBuffers);
        } catch (...) {
            return;
        }
    }
    Buffer kept;
    kept.p_ = std::move(b.p_);
    kept.cap_ = b.cap_;
    kept_bytes_ += kept.cap_;
    kept_.push_back(std::move(kept)); // pool_ unset: destroyed with the pool, not given back
}

} // namespace overcache::cache
