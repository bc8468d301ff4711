// Result<T>: a value or an Error, with the member names of std::expected so
// that moving to <expected> later is a `using` change (g++ 12 lacks it in
// C++20). Every Error carries its errno class, bcachefs style: the FUSE
// adapter maps an Error to the reply with to_errno() and nothing else.
#pragma once

#include <cerrno>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace overcache {

enum class Errc {
    Sys,          // a system call failed; sys_errno says how
    CacheFull,    // no free bucket could be had            -> ENOSPC
    BackingStale, // the backing changed under the cache    -> ESTALE
    MetaCorrupt,  // the index or a superblock is damaged   -> EIO
    Checksum,     // cached bytes failed their checksum     -> EIO
    UnknownKey,   // no such setting or xattr               -> ENODATA
    ReadOnlyKey,  // setting cannot be changed              -> EROFS
    BadValue,     // a value did not parse or is out of range -> EINVAL
    NotSupported, // a mode or operation not implemented    -> ENOTSUP
    Foreign,      // a cache that belongs to another backing or version -> EINVAL
    CacheIo,      // the cache device failed an I/O; reads as a miss -> EIO
};

struct Error {
    Errc code = Errc::Sys;
    int sys_errno = 0;   // meaningful for Errc::Sys; 0 otherwise
    std::string message; // for logs and control-file replies; may be empty

    static Error sys(int e, std::string msg = {}) { return Error{Errc::Sys, e, std::move(msg)}; }
    static Error from_errno(std::string msg = {}) { return sys(errno, std::move(msg)); }
    static Error make(Errc c, std::string msg = {}) { return Error{c, 0, std::move(msg)}; }
};

// The errno a caller of the filesystem sees for an Error.
int to_errno(const Error& e) noexcept;
// "ENOENT: No such file or directory" style text, with the message first.
std::string to_string(const Error& e);
const char* errc_name(Errc c) noexcept;

struct Unexpected {
    Error error;
};
inline Unexpected fail(Error e) { return Unexpected{std::move(e)}; }
inline Unexpected fail_sys(int e, std::string msg = {}) { return Unexpected{Error::sys(e, std::move(msg))}; }
inline Unexpected fail_errno(std::string msg = {}) { return Unexpected{Error::from_errno(std::move(msg))}; }
inline Unexpected fail(Errc c, std::string msg = {}) { return Unexpected{Error::make(c, std::move(msg))}; }

template <typename T> class [[nodiscard]] Result {
public:
    using value_type = T;

    Result() requires std::is_default_constructible_v<T> : v_(T{}) {}
    Result(T v) : v_(std::move(v)) {} // NOLINT(google-explicit-constructor)
    Result(Unexpected u) : v_(std::move(u.error)) {} // NOLINT(google-explicit-constructor)
    Result(Error e) : v_(std::move(e)) {} // NOLINT(google-explicit-constructor)

    bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }
    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    const Error& error() const& { return std::get<1>(v_); }
    Error&& error() && { return std::get<1>(std::move(v_)); }
    T value_or(T other) const& { return has_value() ? value() : std::move(other); }

    template <typename F> auto and_then(F&& f) & -> std::invoke_result_t<F, T&> {
        if (has_value())
            return std::forward<F>(f)(value());
        return Unexpected{error()};
    }

private:
    std::variant<T, Error> v_;
};

template <> class [[nodiscard]] Result<void> {
public:
    using value_type = void;

    Result() = default;
    Result(Unexpected u) : err_(std::move(u.error)), ok_(false) {} // NOLINT
    Result(Error e) : err_(std::move(e)), ok_(false) {}            // NOLINT

    bool has_value() const noexcept { return ok_; }
    explicit operator bool() const noexcept { return ok_; }
    void value() const {}
    const Error& error() const& { return err_; }
    Error&& error() && { return std::move(err_); }

private:
    Error err_;
    bool ok_ = true;
};

} // namespace overcache
