// A setting that a mounted overcache takes a new value of (`set KEY VALUE`
// on the control file): readers load it at each use, a change is one
// atomic store. It sits in otherwise const parameter structs (the paths
// hold `const CachingParams`), so set() is const: only a Tunable changes
// after construction, never the fields around it. Copying copies the value
// (the structs are built by value and handed over).
#pragma once

#include <atomic>

namespace overcache {

template <typename T> class Tunable {
public:
    Tunable(T v = T{}) noexcept : v_(v) {} // NOLINT: implicit, as the plain field it replaces
    Tunable(const Tunable& o) noexcept : v_(o.get()) {}
    Tunable& operator=(const Tunable& o) noexcept {
        set(o.get());
        return *this;
    }
    Tunable& operator=(T v) noexcept {
        set(v);
        return *this;
    }

    T get() const noexcept { return v_.load(std::memory_order_relaxed); }
    operator T() const noexcept { return get(); } // NOLINT: reads as the plain field
    void set(T v) const noexcept { v_.store(v, std::memory_order_relaxed); }

private:
    mutable std::atomic<T> v_;
};

} // namespace overcache
