#!/usr/bin/env bash
# Builds overcache and mounts a demo, with no configuration at all:
#
#   sudo contrib/quickstart.sh                      # demo tree under /srv/overcache-demo
#   sudo contrib/quickstart.sh BACKING MOUNTPOINT   # your own slow directory
#
# It installs the Debian packages it needs (contrib/install-deps.sh), builds
# in build-quickstart/, and mounts BACKING at MOUNTPOINT with the cache in its
# default place (see FILES in man/overcache.8). Run as an ordinary user it
# mounts for that user, with the demo under ~/overcache-demo. Running it again
# rebuilds and, if the mount is already there, says so and leaves it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD

if (($# != 0 && $# != 2)); then
    echo "usage: $0 [BACKING MOUNTPOINT]" >&2
    exit 2
fi

"$src/contrib/install-deps.sh"

bdir=$src/build-quickstart
echo "== building overcache in $bdir"
# The build's output goes to a log, shown whenever the build fails.
log=$(mktemp -t overcache-quickstart-build.XXXXXX)
build() {
    if [[ -f $bdir/build.ninja ]]; then
        meson setup --reconfigure "$bdir" || return
    else
        meson setup "$bdir" || return
    fi
    ninja -C "$bdir" src/overcache
}
if ! build > "$log" 2>&1; then
    echo "quickstart: the build FAILED; the last 100 lines of its output:" >&2
    tail -n 100 "$log" >&2
    echo "quickstart: the build FAILED; its whole output is in $log" >&2
    exit 1
fi
rm -f "$log"
bin=$bdir/src/overcache

if (($# == 2)); then
    backing=$1 mnt=$2
    demo=0
else
    if [[ $(id -u) -eq 0 ]]; then base=/srv/overcache-demo; else base=$HOME/overcache-demo; fi
    backing=$base/slow mnt=$base/fast
    demo=1
fi

if [[ ! -d $backing ]]; then
    if ((demo)); then
        echo "== creating a demo backing tree in $backing"
        mkdir -p "$backing/docs" "$backing/data"
        cp -r "$src/man" "$src/contrib" "$backing/docs/"
        [[ -f $src/README.md ]] && cp "$src/README.md" "$backing/docs/"
        head -c $((64 << 20)) /dev/urandom > "$backing/data/64MiB.bin"
    else
        echo "quickstart: the backing directory $backing does not exist" >&2
        exit 1
    fi
fi
mkdir -p "$mnt"
backing=$(cd "$backing" && pwd) mnt=$(cd "$mnt" && pwd)

show_how() {
    echo
    echo "   look at it:  ls $mnt"
    echo "   its stats:   cat $mnt/.overcache"
    echo "   unmount:     umount $mnt    (as a user: fusermount3 -u $mnt)"
    echo "   manual:      man -l $src/man/overcache.8"
}

if mountpoint -q "$mnt"; then
    fstype=$(findmnt -n -o FSTYPE --target "$mnt" || true)
    if [[ $fstype == fuse.overcache* || $fstype == fuse ]]; then
        echo "== $mnt is already mounted ($fstype); leaving it as it is"
        show_how
        exit 0
    fi
    echo "quickstart: $mnt is already a mountpoint of type '$fstype', not overcache" >&2
    exit 1
fi

echo "== mounting $backing at $mnt (default cache location and size)"
# overcache daemonizes once the mount is up; it exits non-zero, with a
# message, when it cannot mount.
"$bin" "$backing" "$mnt"
for _ in $(seq 100); do
    mountpoint -q "$mnt" && break
    sleep 0.1
done
if ! mountpoint -q "$mnt"; then
    echo "quickstart: $mnt did not appear; try '$bin $backing $mnt -f' to see why" >&2
    exit 1
fi

echo "== mounted: $mnt now shows $backing, caching what is read"
if ((demo)) && [[ -f $mnt/data/64MiB.bin ]]; then
    # Read the small demo files, drop them from the kernel's page cache
    # (dd's nocache flag, for these files only) and read them again: the
    # second read reaches overcache and comes from its cache. (The big file
    # is read by nothing here: sequential_cutoff keeps long sequential
    # streams such as a plain `cat` of it out of the cache by design.)
    find "$mnt/docs" -type f -exec cat {} + > /dev/null
    find "$mnt/docs" -type f -exec dd iflag=nocache count=0 status=none if={} \;
    find "$mnt/docs" -type f -exec cat {} + > /dev/null
    if [[ -r $mnt/.overcache ]]; then
        echo "   after reading the demo docs twice:"
        grep -E '^(cache_hits|cache_misses|cache_used_bytes|buckets_total) ' "$mnt/.overcache" |
            sed 's/^/     /'
    fi
fi
show_how
