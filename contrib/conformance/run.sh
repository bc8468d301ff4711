#!/bin/bash
# Runs external conformance and data-verification suites (pjdfstest, fsx,
# fio's verify jobs) on overcache mounts in cache_mode=writethrough and
# cache_mode=writeback, each over a fresh ext4 loop image and with the
# smallest cache overcache allows, so that reclaim and writeback run while
# the suites do. After each suite it flushes, records what the mount shows,
# unmounts, and checks that the backing alone holds exactly that (and, for
# fio, verifies the data on the backing again with fio itself).
#
# Root only (loop devices, mounts, pjdfstest's uid switches). The external
# suites are not fetched or built here: give already-built copies (see
# README.md in this directory).
#
#   PJDFSTEST=DIR   a built pjdfstest checkout (DIR/pjdfstest, DIR/tests)
#   FSX=FILE        an fsx binary (xfstests' ltp/fsx)
#   OVERCACHE_BIN   default: build/src/overcache of this tree, built if missing
#   WORK=DIR        scratch space outside the repo (default /var/tmp/overcache-conformance)
#   MODES, SUITES   subsets, e.g. MODES=writeback SUITES="fsx fio"
#   FSX_OPS, FSX_PROCS, FSX_LEN, FIO_SIZE, PJD_JOBS   sizes (defaults below)
#
# Exit status: 0 when every suite passed in every mode, 1 otherwise, 2 on a
# setup error.
set -u
set -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

WORK=${WORK:-/var/tmp/overcache-conformance}
MODES=${MODES:-"writethrough writeback"}
SUITES=${SUITES:-"pjdfstest fsx fio"}
FSX_OPS=${FSX_OPS:-20000}
FSX_PROCS=${FSX_PROCS:-4}
FSX_LEN=${FSX_LEN:-8388608}
FIO_SIZE=${FIO_SIZE:-24M}
PJD_JOBS=${PJD_JOBS:-8}
# The smallest cache the option parser accepts (man/overcache.8): with 1 MiB
# buckets that is 16 buckets, so every suite below overflows it.
CACHE_SIZE=16M
PJDFSTEST_COMMIT=85a8aea

die() { echo "conformance: $*" >&2; exit 2; }
log() { echo "== $*"; }

[ "$(id -u)" = 0 ] || die "run as root (loop devices, mounts, pjdfstest's uid switches)"
[ -c /dev/fuse ] || die "/dev/fuse is missing"
for tool in mkfs.ext4 losetup sha256sum mountpoint; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

case " $SUITES " in *" pjdfstest "*)
    [ -n "${PJDFSTEST:-}" ] || die "set PJDFSTEST to a built pjdfstest checkout (README.md)"
    [ -x "$PJDFSTEST/pjdfstest" ] && [ -d "$PJDFSTEST/tests" ] ||
        die "$PJDFSTEST has no built pjdfstest binary and tests/"
    command -v prove >/dev/null || die "prove (perl) is missing"
    have=$(git -C "$PJDFSTEST" rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
    [ "$have" = "$PJDFSTEST_COMMIT" ] ||
        echo "conformance: warning: pjdfstest is at $have, results were measured at $PJDFSTEST_COMMIT" >&2
    ;;
esac
case " $SUITES " in *" fsx "*)
    [ -n "${FSX:-}" ] && [ -x "$FSX" ] || die "set FSX to an fsx binary (README.md)" ;;
esac
case " $SUITES " in *" fio "*)
    if ! command -v fio >/dev/null; then
        # fio is a Debian package; nothing else here is installed on the fly.
        apt-get install -y fio >/dev/null 2>&1 || die "fio is missing (apt-get install fio)"
    fi ;;
esac

if [ -z "${OVERCACHE_BIN:-}" ]; then
    OVERCACHE_BIN=$repo/build/src/overcache
    if [ ! -d "$repo/build" ]; then
        meson setup "$repo/build" "$repo" -Dtests=enabled >/dev/null || die "meson setup failed"
    fi
    ninja -C "$repo/build" -j2 src/overcache >/dev/null || die "building overcache failed"
fi
[ -x "$OVERCACHE_BIN" ] || die "no overcache binary at $OVERCACHE_BIN"
OVERCACHE_BIN=$(readlink -f "$OVERCACHE_BIN")

# A stale mount from an earlier, interrupted run would make every step below
# fail confusingly; refuse instead of guessing what to tear down.
if grep -qs " $WORK/" /proc/mounts; then
    die "something is still mounted under $WORK (an interrupted run?): unmount it first"
fi
rm -rf "$WORK"
mkdir -p "$WORK/logs" || die "cannot create $WORK"
LOGS=$WORK/logs

# --- state torn down on exit -------------------------------------------------
loopdev=""
backing_mnt=""
oc_mnt=""
oc_pid=""

cleanup() {
    if [ -n "$oc_mnt" ] && mountpoint -q "$oc_mnt"; then
        umount "$oc_mnt" 2>/dev/null || umount -l "$oc_mnt"
    fi
    if [ -n "$oc_pid" ]; then
        wait "$oc_pid" 2>/dev/null
    fi
    if [ -n "$backing_mnt" ] && mountpoint -q "$backing_mnt"; then
        umount "$backing_mnt"
    fi
    if [ -n "$loopdev" ]; then
        losetup -d "$loopdev" 2>/dev/null
    fi
    oc_mnt="" oc_pid="" backing_mnt="" loopdev=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A fresh ext4 for each mode, so one mode's leftovers cannot hide or cause a
# failure in the other. Sparse, so 4G costs only what the suites write.
new_backing() { # MODE
    local img=$WORK/$1/backing.img
    mkdir -p "$WORK/$1/backing"
    truncate -s 4G "$img"
    mkfs.ext4 -q -F "$img" || die "mkfs.ext4 failed"
    loopdev=$(losetup -f --show "$img") || die "losetup failed"
    mount "$loopdev" "$WORK/$1/backing" || die "mounting $loopdev failed"
    backing_mnt=$WORK/$1/backing
}

# Mounts overcache in the foreground (so that its exit status and log are
# ours) over BACKING_DIR with a fresh cache.
oc_mount() { # MODE SUITE BACKING_DIR
    local mode=$1 suite=$2 dir=$3
    local cache=$WORK/$mode/cache-$suite
    oc_mnt=$WORK/$mode/mnt-$suite
    oc_cache=$cache
    mkdir -p "$cache" "$oc_mnt"
    local opts="cache=$cache,cache_size=$CACHE_SIZE,cache_mode=$mode"
    # Writeback starts as soon as data is dirty, so it runs during the suite
    # and races its writes, truncates, renames and unlinks.
    [ "$mode" = writeback ] && opts="$opts,writeback_delay=0"
    "$OVERCACHE_BIN" "$dir" "$oc_mnt" -f -o "$opts" >"$LOGS/$mode-$suite.daemon.log" 2>&1 &
    oc_pid=$!
    local i
    for i in $(seq 300); do
        mountpoint -q "$oc_mnt" && return 0
        kill -0 "$oc_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "overcache did not mount; its log:" >&2
    cat "$LOGS/$mode-$suite.daemon.log" >&2
    die "mount failed"
}

oc_stats() { cat "$oc_mnt/.overcache" 2>/dev/null; }
stat_of() { # STATS_TEXT KEY
    printf '%s\n' "$1" | awk -v k="$2" '$1 == k { print $2; exit }'
}

# Unmounts and waits for the daemon: the backing is only compared once the
# daemon has closed everything.
oc_umount() {
    local rc=0
    umount "$oc_mnt" || { umount -l "$oc_mnt"; rc=1; }
    wait "$oc_pid" || rc=1
    oc_pid="" oc_mnt=""
    return $rc
}

# One line per entry with what overcache promises the backing ends up with:
# type, mode, owner, size, link count, data mtime (files only: directory
# mtimes come from the backing either way) and the data's checksum.
manifest() { # DIR
    (cd "$1" && find . -mindepth 1 ! -name lost+found -printf '%y %m %U:%G %s %n %T@ %p\n' |
        while read -r type perm owner size links mtime path; do
            case $type in
            f) echo "$type $perm $owner $size $links $mtime $path $(sha256sum <"$path" | cut -c1-64)" ;;
            l) echo "$type $perm $owner $links $path -> $(readlink "$path")" ;;
            *) echo "$type $perm $owner $links $path" ;;
            esac
        done | sort)
}

# --- suites ------------------------------------------------------------------
# Each runs in the current overcache mount (cwd: its scratch directory) and
# returns non-zero on failure, leaving details in $LOGS.

# pjdfstest's files run in PJD_JOBS groups at once, each group in its own
# directory (its tests mostly sleep between steps to see times move, so
# serial runs take far longer than the work). Every group's failures are
# collected into the note.
run_pjdfstest() { # MODE
    local mode=$1 j d pids=() rc=0
    local -a groups=()
    # Deal the test directories out, largest first, to the lightest group.
    local -a load=()
    for j in $(seq 0 $((PJD_JOBS - 1))); do groups[j]="" load[j]=0; done
    while read -r count d; do
        local best=0
        for j in $(seq 1 $((PJD_JOBS - 1))); do
            [ "${load[j]}" -lt "${load[best]}" ] && best=$j
        done
        groups[best]="${groups[best]} $d"
        load[best]=$((load[best] + count))
    done < <(for d in "$PJDFSTEST"/tests/*/; do
        echo "$(find "$d" -name '*.t' | wc -l) ${d%/}"
    done | sort -rn)
    for j in $(seq 0 $((PJD_JOBS - 1))); do
        [ -n "${groups[j]}" ] || continue
        mkdir "pjd.$j"
        # shellcheck disable=SC2086 # one word per test directory
        (cd "pjd.$j" && prove -r ${groups[j]}) >"$LOGS/$mode-pjdfstest.$j.log" 2>&1 &
        pids+=($!)
    done
    for j in "${pids[@]}"; do wait "$j" || rc=1; done
    local files=0 tests=0 failed=""
    for j in $(seq 0 $((PJD_JOBS - 1))); do
        local f="$LOGS/$mode-pjdfstest.$j.log"
        [ -f "$f" ] || continue
        local nf nt
        nf=$(sed -n 's/^Files=\([0-9]*\),.*/\1/p' "$f" | tail -1)
        nt=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$f" | tail -1)
        files=$((files + ${nf:-0})) tests=$((tests + ${nt:-0}))
        failed="$failed $(sed -n '/^Test Summary Report/,$p' "$f" | grep -oE '^[^ ]+\.t' |
            sed "s|$PJDFSTEST/tests/||" | tr '\n' ' ')"
    done
    failed=$(echo $failed)
    suite_note="$files files, $tests tests"
    [ -n "$failed" ] && suite_note="$suite_note; failed: $failed"
    return $rc
}

# fsx: FSX_PROCS processes at once, each on its own file of up to FSX_LEN
# bytes (together several times the cache), with every operation fsx finds
# supported (buffered and mapped reads/writes, truncate, fallocate, punch,
# zero, collapse, insert, copy_file_range); one of them with O_DIRECT.
run_fsx() { # MODE
    local mode=$1 i pids=() rc=0 args
    mkdir -p "$LOGS/$mode-fsx"
    for i in $(seq "$FSX_PROCS"); do
        args=(-q -S "$i" -N "$FSX_OPS" -l "$FSX_LEN" -o 262144 -P "$LOGS/$mode-fsx")
        if [ "$i" = "$FSX_PROCS" ] && [ "$FSX_PROCS" -gt 1 ]; then
            args+=(-Z -R -W -r 4096 -w 4096 -t 4096)
        fi
        "$FSX" "${args[@]}" "fsx.$i" >"$LOGS/$mode-fsx.$i.log" 2>&1 &
        pids+=($!)
    done
    local failed=""
    for i in $(seq "$FSX_PROCS"); do
        wait "${pids[$((i - 1))]}" || { rc=1; failed="$failed fsx.$i"; }
    done
    suite_note="$FSX_PROCS x $FSX_OPS ops, files up to $FSX_LEN bytes"
    [ -n "$failed" ] && suite_note="$suite_note; failed:$failed (logs $LOGS/$mode-fsx.*)"
    return $rc
}

# fio's verify jobs: random 4 KiB buffered writes, random 64 KiB O_DIRECT
# writes through libaio, and sequential writes through mmap, each file
# written once with a crc32c header per block (offset included, so a block
# in the wrong place fails too), then read back and checked by fio.
fio_job() { # DIR [extra fio args]
    local dir=$1
    shift
    cat >"$WORK/verify.fio" <<EOF
[global]
directory=$dir
size=$FIO_SIZE
verify=crc32c
verify_fatal=1
verify_dump=1
randrepeat=1
group_reporting=0
# No state files: they would land in the caller's cwd (the tree, for the
# check on the backing).
verify_state_save=0

[rand4k]
rw=randwrite
bs=4k
ioengine=psync
fsync=256

[direct64k]
rw=randwrite
bs=64k
ioengine=libaio
iodepth=8
direct=1

[mmap128k]
rw=write
bs=128k
ioengine=mmap
EOF
    fio "$@" "$WORK/verify.fio"
}

run_fio() { # MODE
    fio_job "$PWD" >"$LOGS/$1-fio.log" 2>&1
    local rc=$?
    suite_note="3 jobs x $FIO_SIZE, verify=crc32c"
    [ $rc = 0 ] || suite_note="$suite_note; fio failed (log $LOGS/$1-fio.log)"
    return $rc
}

# After the mount is gone, fio verifies the same files again straight on the
# backing (it regenerates the same offsets and headers from the same seeds).
backing_fio() { # MODE DIR
    fio_job "$2" --verify_only >"$LOGS/$1-fio.backing.log" 2>&1
}

# --- driver ------------------------------------------------------------------
declare -a summary
failures=0

run_one() { # MODE SUITE
    local mode=$1 suite=$2 verdict=PASS notes=""
    local dir=$backing_mnt/$suite
    mkdir -p "$dir"
    chmod 0755 "$dir"
    oc_mount "$mode" "$suite" "$dir"
    log "$mode: $suite"
    suite_note=""
    local start=$SECONDS
    # The suite runs in a subshell (its cwd is the mount, which must not stay
    # busy for the unmount); its note comes back through a file.
    (cd "$oc_mnt" || exit 1
        "run_$suite" "$mode"
        r=$?
        echo "$suite_note" >"$WORK/note"
        exit $r)
    local rc=$?
    notes=$(cat "$WORK/note")
    [ $rc = 0 ] || verdict=FAIL

    # Whatever the suite left must reach the backing: flush (a no-op outside
    # writeback), then what the mount shows is what the backing must hold.
    if ! "$OVERCACHE_BIN" flush "$oc_mnt" >"$LOGS/$mode-$suite.flush.log" 2>&1; then
        verdict=FAIL notes="$notes; flush failed: $(tail -1 "$LOGS/$mode-$suite.flush.log")"
    fi
    local stats
    stats=$(oc_stats)
    printf '%s\n' "$stats" >"$LOGS/$mode-$suite.stats"
    local dirty conflicts errors gc around wb
    dirty=$(stat_of "$stats" dirty_data)
    conflicts=$(stat_of "$stats" writeback_conflicts)
    errors=$(stat_of "$stats" writeback_errors)
    gc=$(stat_of "$stats" gc_runs)
    around=$(stat_of "$stats" writes_around)
    wb=$(stat_of "$stats" writeback_bytes)
    if [ "${dirty:-0}" != 0 ]; then verdict=FAIL notes="$notes; dirty_data $dirty after flush"; fi
    if [ "${conflicts:-0}" != 0 ]; then verdict=FAIL notes="$notes; writeback_conflicts $conflicts"; fi
    # Past attr_timeout (1 s by default), so the kernel asks overcache again
    # rather than answering from attributes it cached during the suite.
    sleep 1.5
    manifest "$oc_mnt" >"$LOGS/$mode-$suite.mount.manifest"

    oc_umount || { verdict=FAIL notes="$notes; unmount or daemon exit failed"; }
    manifest "$dir" >"$LOGS/$mode-$suite.backing.manifest"
    if ! diff -u "$LOGS/$mode-$suite.mount.manifest" "$LOGS/$mode-$suite.backing.manifest" \
        >"$LOGS/$mode-$suite.manifest.diff"; then
        verdict=FAIL
        notes="$notes; backing differs from the mount ($(grep -c '^[-+][^-+]' "$LOGS/$mode-$suite.manifest.diff") lines, $LOGS/$mode-$suite.manifest.diff)"
    fi
    # A conflict copy means overcache took its own dirty file for one changed
    # behind its back: data not where it belongs, whatever the counters say.
    if [ -n "$(ls -A "$oc_cache/lost+found" 2>/dev/null)" ]; then
        verdict=FAIL notes="$notes; conflict copies in $oc_cache/lost+found"
    fi
    if [ "$suite" = fio ] && [ $rc = 0 ]; then
        backing_fio "$mode" "$dir" || { verdict=FAIL notes="$notes; fio --verify_only on the backing failed"; }
    fi
    local took=$((SECONDS - start))
    summary+=("$(printf '%-12s %-10s %-4s %4ss  gc_runs=%s writeback_bytes=%s writes_around=%s writeback_errors=%s  %s' \
        "$mode" "$suite" "$verdict" "$took" "${gc:--}" "${wb:--}" "${around:--}" "${errors:--}" "$notes")")
    [ "$verdict" = PASS ] || failures=$((failures + 1))
    echo "${summary[-1]}"
}

log "overcache $OVERCACHE_BIN ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')), work dir $WORK"
for mode in $MODES; do
    new_backing "$mode"
    for suite in $SUITES; do
        run_one "$mode" "$suite"
    done
    cleanup
done

echo
echo "conformance summary (cache_size=$CACHE_SIZE, logs in $LOGS):"
printf '%s\n' "${summary[@]}"
echo "$(( ${#summary[@]} - failures )) passed, $failures failed"
[ $failures = 0 ]
