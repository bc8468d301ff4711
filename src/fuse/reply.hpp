// Reply helpers for the op_* handlers: the one place an overcache Error
// becomes an errno, and the guard that makes every handler reply exactly
// once even when it throws.
//
// Handler bodies follow one convention: they return 0 after sending their
// reply themselves, or an errno value for the guard to send. Replies are the
// last thing a body does (fuse_reply_* are C calls and never throw), so an
// exception always arrives before any reply went out.
#pragma once

#include "backing/request_scope.hpp"
#include "overcache/util/result.hpp"
#include "util/log.hpp"

#include <cerrno>
#include <exception>
#include <fuse_lowlevel.h>
#include <new>

namespace overcache::fuse {

// The errno a request fails with for an Error.
inline int errno_of(const Error& e) noexcept {
    return to_errno(e);
}

// The gate of the mount `req` came to (fuse/backing_calls.cpp).
backing::Gate& gate_of_request(fuse_req_t req) noexcept;

// Runs a handler body under a RequestScope: its backing calls, and the
// data paths' under it, wait for a stalled backing one deadline at most.
template <typename Body> void guarded(fuse_req_t req, const char* op, Body&& body) noexcept {
    int err = 0;
    try {
        backing::RequestScope scope(gate_of_request(req));
        err = body();
    } catch (const std::bad_alloc&) {
        err = ENOMEM;
    } catch (const std::exception& e) {
        log::error(op, ": unexpected exception: ", e.what());
        err = EIO;
    } catch (...) {
        log::error(op, ": unexpected exception");
        err = EIO;
    }
    if (err != 0)
        fuse_reply_err(req, err);
}

// Like guarded() for the requests that take no reply (forget).
template <typename Body>
void guarded_no_reply(fuse_req_t req, const char* op, Body&& body) noexcept {
    try {
        body();
    } catch (const std::exception& e) {
        log::error(op, ": unexpected exception: ", e.what());
    } catch (...) {
        log::error(op, ": unexpected exception");
    }
    fuse_reply_none(req);
}

// Replies to a getxattr with `v`: its size when the caller asks for it
// (size 0), else the bytes, or ERANGE when they do not fit (returned, for
// guarded() to send).
inline int reply_xattr_value(fuse_req_t req, std::string_view v, std::size_t size) {
    if (size == 0) {
        fuse_reply_xattr(req, v.size());
        return 0;
    }
    if (v.size() > size)
        return ERANGE;
    fuse_reply_buf(req, v.data(), v.size());
    return 0;
}

} // namespace overcache::fuse
