#!/bin/bash
# walk_scale.sh [FILES] [OPTIONS]: the daemon's memory and the index's size
# while `find` and `ls -lR` walk a tree of FILES empty files (default
# 1 000 000, 1 000 a directory) through overcache — issue #10's "the
# daemon's memory stays bounded while walking a 1 000 000-file tree".
# OPTIONS are added to the mount's -o (e.g. max_inodes=0 for the
# unbounded table). Prints VmRSS/VmHWM after each step, the walk times,
# the inode table and what the index keeps.
# The tree is made once in /var/tmp/oc-walk-scale-FILES and kept (rm -rf it
# after). Uses the overcache of build-bench-scale (or $BUILD). Run as root,
# alone: it drops the page cache.
set -euo pipefail
files=${1:-1000000}
opts=${2:-}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$src/build-bench-scale}
if [[ ! -d $build ]]; then
    meson setup "$build" "$src" --buildtype=release -Dtests=enabled >/dev/null
fi
ninja -C "$build" src/overcache >/dev/null
bin=$build/src/overcache
tree=/var/tmp/oc-walk-scale-$files
if [[ ! -d $tree ]]; then
    echo "making $files files in $tree"
    python3 - "$tree" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root + ".part")
for i in range(n):
    d = f"{root}.part/d{i // 1000:05d}"
    if i % 1000 == 0:
        os.mkdir(d)
    os.close(os.open(f"{d}/file-{i % 1000:04d}.txt", os.O_CREAT | os.O_WRONLY, 0o644))
os.rename(root + ".part", root)
PY
fi
work=$(mktemp -d /var/tmp/oc-walk-scale-run.XXXXXX)
mnt=$work/mnt
trap 'fusermount3 -uz "$mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$mnt" "$work/cache"
"$bin" "$tree" "$mnt" -o "cache=$work/cache,cache_size=1G,cache_min_free=0${opts:+,$opts}" \
    2>"$work/log"
pid=$(pgrep -n -f "overcache $tree")
rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s %d MiB  ", $1, $2 / 1024}' "/proc/$pid/status"; }
stat_of() { awk -v k="$1" '$1 == k {print $2}' "$mnt/.overcache"; }
table() {
    echo "inodes $(stat_of inodes), inodes_dropped $(stat_of inodes_dropped)," \
        "metadata_bytes $(stat_of metadata_bytes) of $(stat_of metadata_max)"
}
timed() { # LABEL CMD...: runs CMD, output thrown away, prints its seconds
    local label=$1 t0
    shift
    t0=$(date +%s.%N)
    "$@" >/dev/null
    printf '%-22s %6.1f s  ' "$label" "$(echo "$(date +%s.%N) - $t0" | bc)"
}
echo "== $files files, overcache $(git -C "$src" describe --always --dirty) ${opts:+-o $opts}"
echo "mounted:               $(rss)"
sync
echo 3 >/proc/sys/vm/drop_caches
timed "find (cold)" find "$mnt"
echo "$(rss)$(table)"
timed "ls -lR" ls -lR "$mnt"
echo "$(rss)$(table)"
sync
echo 3 >/proc/sys/vm/drop_caches
sleep 11 # the inode trimmer gives memory back at most every 10 s
echo "after drop_caches:     $(rss)$(table)"
timed "find (cold, again)" find "$mnt"
echo "$(rss)$(table)"
echo "index on disk: $(du -sh "$work/cache/index" | cut -f1)"
grep -E "index: names and attributes took" "$work/log" | tail -3 | sed 's/^/log: /' || true
fusermount3 -u "$mnt"
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
