// The end of a mount whose backing stopped answering.
//
// DataPath::stop() waits for the cache's background work: the writeback
// batch in flight (and, with flush_on_unmount, all dirty data), the fills
// already queued. Those threads call the backing without a deadline (a
// request's calls have one; theirs could not be abandoned safely), so a
// backing that stopped answering, an NFS server gone at shutdown, kept the
// daemon from ever exiting after its unmount. stop_or_exit() runs stop()
// and the executors' end on a thread of their own and watches them: as long
// as writeback moves (a flush at unmount over a slow backing) it waits; once
// nothing moved for `limit`, it makes the cache durable (as an fsync does)
// and ends the process where it is. The cache is crash-safe by design: the
// next mount finds the dirty data and writes it back, as after kill -9.
#pragma once

#include "overcache/bg/executors.hpp"
#include "overcache/cache/data_path.hpp"

#include <chrono>

namespace overcache {

// Returns once stop() and the executors' stop() returned. If they stall,
// logs what is left and ends the process with `exit_code` (never returns).
void stop_or_exit(cache::DataPath& data, bg::Executors& executors, std::chrono::milliseconds limit,
                  int exit_code);

// The limit for a mount's backing_timeout: six missed calls' worth, at
// least 10 s (30 s by default). A flush at unmount moves once per run of
// dirty data written (up to 64 MiB) and per sync: a backing slower than
// about 2 MiB/s may be taken for a stuck one, which only ends the flush
// early (the rest is written back after the next mount).
std::chrono::milliseconds stop_stall_limit(double backing_timeout_s);

} // namespace overcache
