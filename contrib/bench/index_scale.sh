#!/bin/bash
# index_scale.sh [NAMES]: what an index holding NAMES kept names (default
# 10 000 000, with their listings and attributes) costs a mount — issue
# #10's "an index with 10 million names opens without a scan" and
# "metadata bounded by the cache's size rules":
#   1. an empty cache is made (a mount and unmount), then filled with NAMES
#      made-up names by test/index_fill, as a walk would leave them;
#   2. the mount is timed (overcache returns once the mount answers) with
#      metadata_max large enough to keep them all, next to the same mount
#      of an empty index; the daemon's RSS and a read of .overcache;
#   3. remounted with the default metadata_max (an eighth of cache_size):
#      the trim down to it is timed (from the daemon's log) and its peak
#      RSS read.
# Builds a release overcache in build-bench-scale (or $BUILD). Uses
# /var/tmp (about 1.5 GB for 10 million names). Run as root, alone.
set -euo pipefail
names=${1:-10000000}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$src/build-bench-scale}
if [[ ! -d $build ]]; then
    meson setup "$build" "$src" --buildtype=release -Dtests=enabled >/dev/null
fi
ninja -C "$build" src/overcache test/index_fill >/dev/null
bin=$build/src/overcache
work=$(mktemp -d /var/tmp/oc-index-scale.XXXXXX)
trap 'fusermount3 -uz "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/backing/dir" "$work/mnt" "$work/cache" "$work/empty-cache"
for i in $(seq 1 100); do echo "$i" > "$work/backing/dir/f$i"; done
size=4G
mount_oc() { # CACHE OPTIONS: mounts, prints the seconds it took
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" "$work/backing" "$work/mnt" -o "cache=$1,cache_size=$size,cache_min_free=0${2:+,$2}" \
        2>>"$work/log"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
pid_of() { pgrep -n -f "overcache $work/backing"; }
rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s %d MiB  ", $1, $2 / 1024}' "/proc/$(pid_of)/status"; }
stat_of() { awk -v k="$1" '$1 == k {print $2}' "$work/mnt/.overcache"; }
umount_oc() {
    local pid
    pid=$(pid_of)
    fusermount3 -u "$work/mnt"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

echo "== $names names: overcache $(git -C "$src" describe --always --dirty)"
mount_oc "$work/empty-cache" "" >/dev/null
umount_oc
echo "empty index: mount $(mount_oc "$work/empty-cache" "") s; $(rss)"
umount_oc
mount_oc "$work/cache" "" >/dev/null
umount_oc
"$build/test/index_fill" "$work/cache" "$names" 1000
echo "index on disk: $(du -sh "$work/cache/index" | cut -f1)"
sync
echo 3 > /proc/sys/vm/drop_caches
echo "full index, metadata_max=64G (kept): mount $(mount_oc "$work/cache" metadata_max=64G) s; $(rss)"
t0=$(date +%s.%N)
ls "$work/mnt/dir" >/dev/null
cat "$work/mnt/.overcache" >/dev/null
echo "  first ls + .overcache read: $(echo "$(date +%s.%N) - $t0" | bc) s;" \
    "metadata_bytes $(stat_of metadata_bytes)"
umount_oc
sync
echo 3 > /proc/sys/vm/drop_caches
echo "full index, default metadata_max: mount $(mount_oc "$work/cache" "") s; $(rss)"
echo "  metadata_max $(stat_of metadata_max), metadata_bytes $(stat_of metadata_bytes)"
t0=$(date +%s.%N)
echo gc > "$work/mnt/.overcache"
for _ in $(seq 1 600); do
    [[ $(stat_of metadata_trims) -ge 1 ]] && break
    sleep 1
done
echo "  after the trim ($(echo "$(date +%s.%N) - $t0" | bc) s): metadata_bytes" \
    "$(stat_of metadata_bytes), metadata_trims $(stat_of metadata_trims), listings_dropped" \
    "$(stat_of listings_dropped), attrs_dropped $(stat_of attrs_dropped); $(rss)"
grep "index: " "$work/log" | sed 's/^/  log: /' || true
umount_oc
