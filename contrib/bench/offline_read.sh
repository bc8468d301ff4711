#!/bin/bash
# offline_read.sh [FILES] [KIB] [TIMEOUT_S] [OPTIONS]: issue #10's "with the
# backing stopped, a cached file opens and reads within 2x its online time
# (the deadline paid at most once per backing stall, not per request)".
#
# The backing is libfuse's passthrough_ll over a directory on the local
# disk, as in run.sh; stopping its daemon (SIGSTOP) is a server that stops
# answering. overcache (a release build: $BUILD, default build-bench-offline)
# mounts it with backing_timeout=TIMEOUT_S (default 2) and OPTIONS, and
# reads a tree of FILES files of KIB KiB each (default 500 x 64) once to fill
# its cache. Then, each with the page cache dropped first (echo 3):
#   online    the tree read through overcache (treeread: readdir, then open,
#             read to the end and close each file), 3 times;
#   first     with passthrough_ll stopped, one cat of one file: the request
#             that meets the stall and pays the deadline;
#   offline   the tree read again, 3 times, passthrough_ll still stopped.
# Prints the medians, the ratio offline/online and the gate's counters (one
# timeout per stall is the goal). Run as root, alone: it drops the page
# cache.
set -euo pipefail
files=${1:-500}
kib=${2:-64}
timeout_s=${3:-2}
opts=${4:-}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$src/build-bench-offline}
if [[ ! -d $build ]]; then
    meson setup "$build" "$src" --buildtype=release -Dtests=disabled >/dev/null
fi
ninja -C "$build" src/overcache >/dev/null
bin=$build/src/overcache

work=$(mktemp -d /var/tmp/oc-offline.XXXXXX)
lower=$work/lower pt=$work/pt mnt=$work/mnt tools=$work/tools
mkdir -p "$lower/d" "$pt" "$mnt" "$work/cache" "$tools"
pt_pid="" oc_pid=""
cleanup() {
    [[ -n $pt_pid ]] && kill -CONT "$pt_pid" 2>/dev/null || true
    fusermount3 -uz "$mnt" 2>/dev/null || true
    # The daemon closes its index after the unmount: wait for it to go.
    for _ in $(seq 100); do
        [[ -n $oc_pid ]] && kill -0 "$oc_pid" 2>/dev/null || break
        sleep 0.1
    done
    fusermount3 -uz "$pt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ex=/usr/share/doc/libfuse3-dev/examples
gcc -O2 -Wall -o "$tools/passthrough_ll" "$ex/passthrough_ll.c" -I"$ex" \
    $(pkg-config --cflags --libs fuse3)
gcc -O2 -Wall -o "$tools/treeread" "$src/contrib/bench/treeread.c"

for ((i = 0; i < files; i++)); do
    head -c $((kib * 1024)) /dev/urandom >"$(printf '%s/d/f%05d' "$lower" "$i")"
done

mounted() { grep -q " $1 " /proc/self/mounts; }
wait_mounted() {
    for _ in $(seq 200); do
        mounted "$1" && return 0
        sleep 0.05
    done
    echo "offline_read.sh: $1 did not mount" >&2
    exit 1
}
"$tools/passthrough_ll" -f -o source="$lower" "$pt" 2>"$work/pt.log" &
pt_pid=$!
wait_mounted "$pt"
"$bin" "$pt" "$mnt" -o "cache=$work/cache,cache_size=1G,cache_min_free=0,backing_timeout=$timeout_s${opts:+,$opts}" \
    2>"$work/oc.log"
wait_mounted "$mnt"
oc_pid=$(pgrep -n -f "overcache $pt $mnt")
stat_of() { awk -v k="$1" '$1 == k {print $2}' "$mnt/.overcache"; }
elapsed() { python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])'; }
tree_s() { # one read of the tree, page cache dropped first: seconds
    echo 3 >/proc/sys/vm/drop_caches
    "$tools/treeread" "$mnt" | elapsed
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

# Listings are kept whole once the directory has not changed for dir_settle
# (2 s): the reads below come after that.
sleep 2.5
"$tools/treeread" "$mnt" >/dev/null
"$tools/treeread" "$mnt" >/dev/null
sleep 2 # fills land
echo "== $files files of $kib KiB, backing_timeout=$timeout_s, overcache" \
    "$(git -C "$src" describe --always --dirty) ${opts:+-o $opts}"
echo "cache_used_bytes $(stat_of cache_used_bytes), listings_recorded $(stat_of listings_recorded)"

online=()
for _ in 1 2 3; do online+=("$(tree_s)"); done

kill -STOP "$pt_pid"
echo 3 >/proc/sys/vm/drop_caches
t0=$(date +%s.%N)
cat "$mnt/d/f00000" >/dev/null
first=$(echo "$(date +%s.%N) - $t0" | bc)
offline=()
for _ in 1 2 3; do offline+=("$(tree_s)"); done
state=$(stat_of backing_state) timeouts=$(stat_of backing_timeouts) offline_total=$(stat_of backing_offline_total)
kill -CONT "$pt_pid"

on=$(median "${online[@]}") off=$(median "${offline[@]}")
printf 'online   %s s (median of %s)\n' "$on" "${online[*]}"
printf 'first    %.3f s (the request that met the stall)\n' "$first"
printf 'offline  %s s (median of %s)\n' "$off" "${offline[*]}"
printf 'ratio    %.2fx offline/online (goal: at most 2x)\n' "$(echo "$off / $on" | bc -l)"
echo "backing_state $state while stopped, backing_timeouts $timeouts, backing_offline_total $offline_total"
