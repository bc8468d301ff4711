#!/usr/bin/env python3
"""Random writes to one file, each checked at once against a model.

usage: read-write-check.py FILE OPS SEED [readwrite|mapwrite|pwrite ...]

The file is made 8 MiB long, then each operation writes up to 256 KiB at a
random offset, either after reading the same range (readwrite: the read
misses and queues a fill), through a shared mapping with msync(MS_SYNC)
(mapwrite), or with a plain pwrite. After each one the file's pages are
dropped from the kernel's cache (POSIX_FADV_DONTNEED, this file only), so the
re-read of the range asks the mount and not the page cache. It stops at the
first difference and says where, and whether the bad bytes are the ones from
before the write. Exit status 1 on a difference.

Several of these at once, on a writeback mount with a cache small enough
that reclaim runs, is the reproduction in README.md.
"""
import mmap
import os
import random
import sys

SIZE = 8 << 20


def main():
    path, nops, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    kinds = sys.argv[4:] or ["readwrite"]
    rnd = random.Random(seed)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, SIZE)
    model = bytearray(SIZE)
    for n in range(1, nops + 1):
        off = rnd.randrange(0, SIZE - 1)
        ln = rnd.randrange(1, min(256 << 10, SIZE - off))
        data = rnd.randbytes(ln)
        kind = rnd.choice(kinds)
        if kind == "readwrite":
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.pread(fd, ln, off)
            os.pwrite(fd, data, off)
        elif kind == "mapwrite":
            pg = off & ~(mmap.PAGESIZE - 1)
            m = mmap.mmap(fd, off + ln - pg, mmap.MAP_SHARED, offset=pg)
            m[off - pg:off - pg + ln] = data
            m.flush()  # msync(MS_SYNC)
            m.close()
        else:
            os.pwrite(fd, data, off)
        before = bytes(model[off:off + ln])
        model[off:off + ln] = data
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        lo, hi = max(0, off - 8192), min(SIZE, off + ln + 8192)
        got = os.pread(fd, hi - lo, lo)
        if got != model[lo:hi]:
            bad = [i for i in range(hi - lo) if got[i] != model[lo + i]]
            b0, b1 = lo + bad[0], lo + bad[-1] + 1
            seg = got[b0 - lo:b1 - lo]
            old = before[b0 - off:b1 - off] if off <= b0 and b1 <= off + ln else None
            what = ("the bytes from before this write" if seg == old else
                    "zeros" if seg == bytes(len(seg)) else "other bytes")
            print(f"{path}: op {n} {kind} [{off:#x}, {off + ln:#x}): "
                  f"[{b0:#x}, {b1:#x}) reads back as {what}")
            return 1
    print(f"{path}: {nops} ops ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
