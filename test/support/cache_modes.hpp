// Test support: the cache modes the writeback suites (writeback_crash,
// writeback_ops) run in, and what those suites need from a mount in any
// mode: a small cache, so GC runs during them, and a flush.
//
// OVERCACHE_TEST_CACHE_MODE, a comma-separated list of modes (e.g.
// "writethrough,writeback"), chooses the modes; unset, kDefaultCacheModes.
// Each suite has one TEST_CASE per mode; a case whose mode is not chosen
// says so and passes without mounting.
#pragma once

#include "fuse_mount.hpp"

#include <string>
#include <vector>

namespace overcache::test {

// Both, unless OVERCACHE_TEST_CACHE_MODE names others, or the run puts every
// mount in one mode (OVERCACHE_TEST_EXTRA_OPTIONS=cache_mode=X, as
// `contrib/run-tests.sh --writeback` does): then that one.
inline constexpr const char* kDefaultCacheModes = "writethrough,writeback";

// The modes chosen for this run, in the order given.
std::vector<std::string> chosen_cache_modes();
bool cache_mode_chosen(const std::string& mode);

// -o options for a small cache in `mode`: cache_size=16M (the smallest the
// options allow) in 64 KiB buckets (256 of them; fill_size may not exceed a
// bucket), and no sequential cutoff, so that reads fill it too. Writes of a
// few dozen MiB make GC reclaim buckets.
std::string small_cache_options(const std::string& mode);

// Makes the backing hold every byte the mount acknowledged, synced, with the
// mount still up: writes "flush\n" to MOUNT/.overcache; an error fails the
// test. Returns whether the mount is still up. The caller fsyncs or closes
// its files first (the kernel may hold writes that the daemon has not seen).
bool flush_to_backing(Mount& m, const std::string& mode);

} // namespace overcache::test
