#!/usr/bin/env bash
# Builds overcache and mounts a demo, with no configuration at all:
#
#   contrib/quickstart.sh                      # demo tree under /srv/overcache-demo
#   contrib/quickstart.sh BACKING MOUNTPOINT   # your own slow directory
#
# It installs the Debian packages it needs (contrib/install-deps.sh, which
# asks for sudo only when a package is missing and it is not root), builds
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

# The default cache directory of a mountpoint (FILES in man/overcache.8):
# "/" -> "-", "-" -> "--"; names with other characters are left to the manual.
cache_dir_of() {
    local p=${1#/} base
    [[ $p =~ ^[A-Za-z0-9_:+,@=/.-]+$ && $p != .* ]] || return 1
    p=${p//-/--} p=${p//\//-}
    if [[ $(id -u) -eq 0 ]]; then
        base=/var/cache/overcache
    elif [[ ${XDG_CACHE_HOME:-} == /* ]]; then
        base=$XDG_CACHE_HOME/overcache
    else
        base=$HOME/.cache/overcache
    fi
    echo "$base/$p"
}

show_how() {
    local cache oc=overcache
    # Until `meson install` puts it on PATH, the command is the built one.
    command -v overcache >/dev/null || oc=$bin
    echo
    echo "   look at it:  ls $mnt"
    echo "   its stats:   $oc stats $mnt    (or: cat $mnt/.overcache)"
    if [[ $(id -u) -eq 0 ]]; then
        echo "   unmount:     umount $mnt"
    else
        echo "   unmount:     fusermount3 -u $mnt"
    fi
    if cache=$(cache_dir_of "$mnt"); then
        echo "   its cache:   $cache    (rm -rf it after unmounting to drop the cache)"
    fi
    if command -v man >/dev/null; then
        echo "   manual:      man -l $src/man/overcache.8"
    else
        echo "   manual:      $src/man/overcache.8    (no man here: groff -man -Tutf8 FILE | less)"
    fi
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
# A cache hit as a user would try it. A second `cat` of a file is answered
# by the kernel's page cache and never reaches overcache, so cache_hits does
# not move; only after the page cache is dropped does a read come to
# overcache, which then serves it from its cache on the fast device.
stat_of() { awk -v k="$1" '$1 == k { print $2 }' "$mnt/.overcache"; }
file=$mnt/docs/man/overcache.8
if ((demo)) && [[ -f $file && -r $mnt/.overcache ]]; then
    echo "== a cache hit, step by step: cat $file"
    h0=$(stat_of cache_hits)
    cat "$file" > /dev/null
    # The copy into the cache happens after the reply: wait for it to land.
    sleep 0.2
    for _ in $(seq 50); do
        [[ $(stat_of fills_pending) == 0 ]] && break
        sleep 0.1
    done
    h1=$(stat_of cache_hits)
    if [[ $h1 == "$h0" ]]; then
        echo "   1st cat:  cache_hits $h0 -> $h1  (a miss: read from $backing, then copied into the cache)"
    else
        echo "   1st cat:  cache_hits $h0 -> $h1  (cached already, by an earlier run)"
    fi
    cat "$file" > /dev/null
    h2=$(stat_of cache_hits)
    echo "   2nd cat:  cache_hits $h1 -> $h2  (unchanged: the kernel's page cache answered, overcache never saw the read)"
    dropped=
    if [[ $(id -u) -eq 0 ]] && { echo 1 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
        dropped="echo 1 > /proc/sys/vm/drop_caches"
    elif dd if="$file" iflag=nocache count=0 status=none 2>/dev/null; then
        # drop_caches needs root (and a writable /proc/sys); dd can ask the
        # kernel to forget one file's pages without it.
        dropped="dd if=FILE iflag=nocache count=0, for this file only"
    fi
    if [[ -n $dropped ]]; then
        cat "$file" > /dev/null
        h3=$(stat_of cache_hits)
        echo "   page cache dropped ($dropped)"
        echo "   3rd cat:  cache_hits $h2 -> $h3  (served by overcache from its cache on the fast device)"
    else
        echo "   to see a hit, drop the page cache (as root: echo 1 > /proc/sys/vm/drop_caches),"
        echo "   then cat the file again and look at cache_hits in $mnt/.overcache"
    fi
fi
show_how
