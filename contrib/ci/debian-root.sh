#!/usr/bin/env bash
# Runs a command, by default the README's test command, in a fresh Debian
# root made with debootstrap, as a new user's machine would: nothing but a
# minimal system with git, and this checkout. CI runs it for Debian 13.
#
#   sudo contrib/ci/debian-root.sh trixie                  # contrib/run-tests.sh in Debian 13
#   sudo contrib/ci/debian-root.sh bookworm CMD [ARG...]   # any command, from the checkout
#   sudo contrib/ci/debian-root.sh --clone trixie CMD...   # git clone the current branch in
#                                                          # the root instead of copying HEAD
#   sudo contrib/ci/debian-root.sh --keep ...              # leave the root behind (unmounted)
#
# A pristine root per release (debootstrap --variant=minbase
# --include=git,ca-certificates) is kept in $OVERCACHE_CI_CACHE
# (/var/cache/overcache-ci) and copied for each run, with the downloaded
# packages kept beside it; delete the directory to start from the mirror
# again. The checkout's HEAD (committed work only) goes to /src/overcache.
# The root is bound onto itself (a private mount point, as "/" is on a
# machine); /dev, /dev/pts, /proc and /sys are bound into it for the run (the
# mount tests need /dev/fuse); every mount under the root, including FUSE
# mounts the command left, is unmounted and the copy removed at the end,
# however the run ends.
set -euo pipefail

keep=0 clone=0
while [[ ${1:-} == --* ]]; do
    case $1 in
        --keep) keep=1 ;;
        --clone) clone=1 ;;
        *) echo "debian-root: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if (($# < 1)); then
    echo "usage: $0 [--keep] [--clone] SUITE [COMMAND [ARG...]]" >&2
    exit 2
fi
suite=$1; shift
cmd=("$@")
((${#cmd[@]})) || cmd=(contrib/run-tests.sh)
if [[ $(id -u) -ne 0 ]]; then
    echo "debian-root: needs root (debootstrap, chroot, mount)" >&2
    exit 1
fi
src=$(cd "$(dirname "$0")/../.." && pwd)
cache=${OVERCACHE_CI_CACHE:-/var/cache/overcache-ci}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
pristine=$cache/pristine-$suite
t0=$SECONDS
mkdir -p "$cache/debs"

# 1. The pristine root, made once per release (under a lock: two runs at
#    once wait for one debootstrap).
if [[ ! -f $pristine/.overcache-pristine ]]; then
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
    exec 9>"$cache/lock-$suite"
    flock 9
    if [[ ! -f $pristine/.overcache-pristine ]]; then
        echo "== debian-root: debootstrap $suite from $mirror into $pristine"
        rm -rf --one-file-system "$pristine.tmp" "$pristine"
        debootstrap --variant=minbase --include=git,ca-certificates \
            --cache-dir="$cache/debs" "$suite" "$pristine.tmp" "$mirror"
        date -u > "$pristine.tmp/.overcache-pristine"
        mv "$pristine.tmp" "$pristine"
    fi
    exec 9>&-
fi
echo "== debian-root: pristine $suite root ready ($((SECONDS - t0)) s)"

# 2. A copy of it for this run, and the cleanup that always follows.
root=$(mktemp -d "$cache/run-$suite.XXXXXX")
cleanup() {
    local rc=$? p m
    trap - EXIT INT TERM
    # Processes still running in the root (a daemon the command started).
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/root" 2>/dev/null) == "$root" ]] && kill "${p#/proc/}" 2>/dev/null || true
    done
    # Every mount under the root, deepest first; lazily if one is busy.
    for m in $(awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo |
               sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
    if awk -v r="$root" '$5 == r || index($5, r "/") == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
        echo "debian-root: mounts remain under $root; not removing it" >&2
        rc=1
    elif ((keep)); then
        echo "== debian-root: kept $root"
    else
        rm -rf --one-file-system "$root"
    fi
    echo "== debian-root: $suite done, exit $rc, $((SECONDS - t0)) s in all"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cp -a "$pristine/." "$root/"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$cache/apt-$suite/partial" "$root/src"
# The root a mount point of its own, as "/" is on a machine, and private:
# tests that make "/" private in a mount namespace of their own need it,
# and nothing mounted inside reaches this machine's mounts.
mount --bind "$root" "$root"
mount --make-private "$root"
mount --bind "$cache/apt-$suite" "$root/var/cache/apt/archives"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount -t proc proc "$root/proc"
mount --bind /sys "$root/sys"
# A compiler cache given by the caller (.ci/run) is shared with the root,
# in a directory of its own beside it per suite (another compiler).
if [[ -n ${OVERCACHE_CCACHE:-} && -n ${CCACHE_DIR:-} ]]; then
    mkdir -p "$CCACHE_DIR-$suite" "$root/var/cache/ccache"
    mount --bind "$CCACHE_DIR-$suite" "$root/var/cache/ccache"
fi
[[ -c $root/dev/fuse ]] || echo "debian-root: warning: no /dev/fuse in the root" >&2

# 3. The source: HEAD of this checkout, or a clone of its branch.
if ((clone)); then
    branch=$(git -C "$src" rev-parse --abbrev-ref HEAD)
    git -C "$src" bundle create "$root/src/overcache.bundle" "$branch"
    chroot "$root" git clone -q -b "$branch" /src/overcache.bundle /src/overcache
    echo "== debian-root: cloned branch $branch ($(git -C "$src" rev-parse --short HEAD)) into /src/overcache"
else
    if [[ -n $(git -C "$src" status --porcelain --untracked-files=no) ]]; then
        echo "debian-root: note: uncommitted changes are not copied, only HEAD" >&2
    fi
    mkdir -p "$root/src/overcache"
    git -C "$src" archive --format=tar HEAD | tar -x -C "$root/src/overcache"
    echo "== debian-root: copied HEAD ($(git -C "$src" rev-parse --short HEAD)) to /src/overcache"
fi

# 4. The command, as root in the root, with a plain environment.
echo "== debian-root: running in $suite: ${cmd[*]}"
t1=$SECONDS
rc=0
chroot "$root" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CI="${CI:-}" OVERCACHE_TESTS_NO_SKIP="${OVERCACHE_TESTS_NO_SKIP:-1}" \
    ${OVERCACHE_CCACHE:+OVERCACHE_CCACHE=1 CCACHE_DIR=/var/cache/ccache} \
    ${OVERCACHE_CCACHE:+CCACHE_BASEDIR=/src/overcache CCACHE_NOHASHDIR=1} \
    ${OVERCACHE_CCACHE:+CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-12G}} \
    /bin/bash -c 'cd /src/overcache && exec "$@"' bash "${cmd[@]}" || rc=$?
echo "== debian-root: the command exited $rc after $((SECONDS - t1)) s"
exit "$rc"
