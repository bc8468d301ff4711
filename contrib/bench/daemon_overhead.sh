#!/bin/bash
# The daemon's own cost per request, between two overcache binaries (say,
# before and after a change), on a local tree where the backing costs next
# to nothing: two mounts over one tree of DIRS x FILES small files with
# attr_timeout=0,entry_timeout=0, so that every stat, lookup, open and close
# reaches the daemon. farm-bench runs A and B in turn and prints A/B; quote
# the median. Needs root (mounts) and farm-bench. NEW_OPTS and OLD_OPTS
# add -o options to either mount (say NEW_OPTS=backing_calls=gated).
#   contrib/bench/daemon_overhead.sh NEW_OVERCACHE OLD_OVERCACHE [DIRS FILES]
set -euo pipefail
new=${1:?usage: $0 NEW_OVERCACHE OLD_OVERCACHE [DIRS FILES]}
old=${2:?usage: $0 NEW_OVERCACHE OLD_OVERCACHE [DIRS FILES]}
dirs=${3:-40}
files=${4:-250}
work=$(mktemp -d /tmp/overcache-daemon-bench.XXXXXX)
cleanup() {
    fusermount3 -u "$work/a" 2>/dev/null || true
    fusermount3 -u "$work/b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{tree,a,b,cache-a,cache-b}
for ((d = 0; d < dirs; ++d)); do
    mkdir "$work/tree/d$d"
    for ((f = 0; f < files; ++f)); do
        printf '%0100d' "$f" > "$work/tree/d$d/f$f"
    done
done
opts=attr_timeout=0,entry_timeout=0,cache_size=64M
"$new" "$work/tree" "$work/a" -o "cache=$work/cache-a,$opts${NEW_OPTS:+,$NEW_OPTS}"
"$old" "$work/tree" "$work/b" -o "cache=$work/cache-b,$opts${OLD_OPTS:+,$OLD_OPTS}"
echo "== find -newer and ls -lR (lookups, getattrs, readdirplus): A = $new, B = $old"
farm-bench -n 7 --timeout 900 \
    --vs "sh -c 'find $work/b -type f -newer $work/tree >/dev/null; ls -lR $work/b >/dev/null'" \
    -- sh -c "find $work/a -type f -newer $work/tree >/dev/null; ls -lR $work/a >/dev/null"
echo "== cat of every file (lookup, getattr, open, read, flush, release): A = $new, B = $old"
farm-bench -n 7 --timeout 900 \
    --vs "sh -c 'cat $work/b/d*/f* >/dev/null'" -- sh -c "cat $work/a/d*/f* >/dev/null"
