#!/usr/bin/env bash
# overcache benchmark (issue #3): one command, as root.
#
#   sudo contrib/bench/run.sh [--quick] [--repeat N] [--results DIR]
#                             [--workdir DIR] [--oc-opts OPTS] [--standin]
#                             [--worktree] [--keep]
#
# What it builds, all under --workdir (default /var/tmp/overcache-bench, which
# must be on a fast local disk) and all removed again on exit, Ctrl-C included:
#   hdd/    an emulated HDD: a sparse image on a loop device (direct I/O, so
#           the image is not cached twice), ext4, readahead raised, and reads
#           throttled with the blkio cgroup to about 150 MiB/s and 150 IOPS
#           (io.max on cgroup v2) for the processes in the bench's cgroup;
#   fast/   an unthrottled directory on the local disk holding the same files;
#   cache/  overcache's cache directory (on the fast disk).
# Then it runs the same fio / tree-walk jobs, each with the page cache dropped
# first, on:
#   hdd       the HDD directly (the benchmark process in the throttled cgroup)
#   fast      the fast directory directly
#   pt        libfuse's passthrough_ll example over the fast directory
#   oc-first  overcache over the HDD with an empty cache (the daemon in the
#             throttled cgroup): the first read, filling the cache
#   oc-hit    the same mount again after `sync; echo 3 > drop_caches`
# Workloads: sequential 1 MiB reads of a 1 GiB file; random 4 KiB O_DIRECT
# reads by 4 jobs for 20 s; reading a tree of 2000 small files (1-32 KiB).
# Each repeat remounts overcache on an empty cache; targets are interleaved
# within a repeat, so the ratios compare runs taken moments apart.
# The results (fio JSON, tree-walk JSON, overcache stats, daemon RSS) go to
# --results; contrib/bench/report.py prints the table and the goal ratios.
#
# It measures the committed HEAD, built in build-bench/ from `git archive`;
# --worktree builds the working tree instead; --oc-bin PATH runs that binary
# (a sanitizer build, say). --standin mounts passthrough_ll over the HDD in
# place of overcache, to test the script itself.
set -euo pipefail

orig_args="$*"
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

repeat=3
seq_mib=1024
rand_secs=20
tree_files=2000
quick=0
standin=0
worktree=0
oc_bin_given=""
keep=0
workdir=/var/tmp/overcache-bench
results=""
oc_opts=""
hdd_bps=$((150 * 1024 * 1024))
hdd_iops=150
job_limit=900

usage() { sed -n '2,/^set -euo/p' "$0" | grep -v '^set' | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --quick) quick=1; repeat=1; seq_mib=256; rand_secs=5; tree_files=500 ;;
        --repeat) repeat=$2; shift ;;
        --results) results=$2; shift ;;
        --workdir) workdir=$2; shift ;;
        --oc-opts) oc_opts=$2; shift ;;
        --standin) standin=1 ;;
        --worktree) worktree=1 ;;
        --oc-bin) oc_bin_given=$2; shift ;;
        --keep) keep=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh: must run as root (loop devices, cgroups, drop_caches, mounts)" >&2
    exit 1
fi
[[ -z $results ]] && results=/var/tmp/overcache-bench-results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$results"
results=$(cd "$results" && pwd)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- cleanup --
loopdev=""
cgdir=""
pids=()
mounts=()

# From the mount table, not stat(): a stat of a stuck FUSE mount would hang.
is_mounted() { awk -v m="$1" '$5 == m {f = 1} END {exit !f}' /proc/self/mountinfo; }

# Unmounts, and if a FUSE daemon does not answer, aborts its connection
# (through fusectl) so that nothing is left hanging in the kernel.
force_unmount() {
    local m=$1 dev
    timeout 20 umount "$m" 2>/dev/null && return 0
    dev=$(awk -v m="$m" '$5 == m {print $3}' /proc/self/mountinfo | tail -1)
    if [[ -n $dev && ${dev%%:*} == 0 ]]; then
        [[ -d /sys/fs/fuse/connections ]] && ! mountpoint -q /sys/fs/fuse/connections &&
            mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null
        echo 1 > "/sys/fs/fuse/connections/${dev#*:}/abort" 2>/dev/null &&
            log "aborted the FUSE connection of $m"
    fi
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do # the FUSE mounts before the HDD
        is_mounted "${mounts[i]}" && force_unmount "${mounts[i]}"
    done
    for p in "${pids[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$p" 2>/dev/null
        fi
        wait "$p" 2>/dev/null
    done
    [[ -n $loopdev ]] && losetup -d "$loopdev" 2>/dev/null
    if [[ -n $cgdir && -d $cgdir ]]; then
        # Anything still in the cgroup goes back to the root before rmdir.
        if [[ -f $cgdir/cgroup.procs ]]; then
            while read -r p; do echo "$p" > "$(dirname "$cgdir")/cgroup.procs" 2>/dev/null; done \
                < "$cgdir/cgroup.procs"
        fi
        rmdir "$cgdir" 2>/dev/null
    fi
    if ((keep)); then
        log "kept $workdir"
    else
        rm -rf "$workdir"
    fi
    ((rc)) && log "failed (exit $rc); partial results in $results"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ build --
"$src/contrib/install-deps.sh" --bench >/dev/null
command -v python3 >/dev/null || { echo "run.sh: python3 is needed for the report" >&2; exit 1; }

# What is measured is the committed HEAD (exported from git, so that edits in
# progress in the working tree cannot leak into the numbers and the commit
# in the results is exact); --worktree builds the working tree as it is.
bench_root=$src/build-bench
if ((worktree)) || ! git -C "$src" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    build_src=$src
    bdir=$bench_root/worktree-build
    commit="$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo none)+worktree"
else
    commit=$(git -C "$src" rev-parse --short HEAD)
    build_src=$bench_root/head-src
    bdir=$bench_root/head-build
    if [[ $(cat "$build_src/.commit" 2>/dev/null) != "$commit" ]]; then
        rm -rf "$build_src"
        mkdir -p "$build_src"
        git -C "$src" archive HEAD | tar -x -C "$build_src"
        echo "$commit" > "$build_src/.commit"
    fi
fi
log "building overcache $commit (release) in $bdir"
if [[ -f $bdir/build.ninja ]]; then
    meson setup --reconfigure "$bdir" "$build_src" --buildtype=release -Dtests=disabled >/dev/null
else
    meson setup "$bdir" "$build_src" --buildtype=release -Dtests=disabled >/dev/null
fi
ninja -C "$bdir" -j"$(nproc)" src/overcache >/dev/null
oc_bin=$bdir/src/overcache
if [[ -n $oc_bin_given ]]; then # e.g. a sanitizer build, to chase a crash
    oc_bin=$(realpath "$oc_bin_given")
    commit="$commit (binary $oc_bin)"
fi

tools=$results/tools
mkdir -p "$tools"
ex=/usr/share/doc/libfuse3-dev/examples
log "compiling passthrough_ll and treeread"
# passthrough_ll refuses fallocate etc. unless told the platform has them.
gcc -O2 -Wall -o "$tools/passthrough_ll" "$ex/passthrough_ll.c" -I"$ex" \
    -DHAVE_FALLOCATE -DHAVE_SETXATTR -DHAVE_UTIMENSAT -DHAVE_COPY_FILE_RANGE \
    $(pkg-config --cflags --libs fuse3)
gcc -O2 -Wall -o "$tools/treeread" "$here/treeread.c"
ptll=$tools/passthrough_ll
treeread=$tools/treeread

# ----------------------------------------------------------- the devices --
if is_mounted "$workdir/hdd"; then
    echo "run.sh: $workdir/hdd is mounted; another bench running?" >&2
    trap - EXIT; exit 1
fi
rm -rf "$workdir"
mkdir -p "$workdir"/{hdd,fast,cache,mnt-pt,mnt-oc}
hdd=$workdir/hdd fast=$workdir/fast cache=$workdir/cache
mnt_pt=$workdir/mnt-pt mnt_oc=$workdir/mnt-oc

img_mib=$((2 * seq_mib + 1024))
truncate -s "${img_mib}M" "$workdir/hdd.img"
loopdev=$(losetup --direct-io=on --find --show "$workdir/hdd.img")
loopname=${loopdev#/dev/}
majmin=$(cat "/sys/block/$loopname/dev")
log "emulated HDD: $loopdev ($majmin), ${img_mib} MiB image"
# With the default 128 KiB readahead a 150-IOPS cap would make a 19 MiB/s
# "disk"; an HDD's sequential reads come in large requests.
echo 1280 > "/sys/block/$loopname/queue/max_sectors_kb" 2>/dev/null || true
echo 2560 > "/sys/block/$loopname/queue/read_ahead_kb"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$loopdev"
mount "$loopdev" "$hdd"
mounts+=("$hdd")

if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    cgdir=/sys/fs/cgroup/overcache-bench-$$
    grep -qw io /sys/fs/cgroup/cgroup.subtree_control || echo +io > /sys/fs/cgroup/cgroup.subtree_control
    mkdir "$cgdir"
    echo "$majmin rbps=$hdd_bps riops=$hdd_iops" > "$cgdir/io.max"
    cgtype=v2
else
    cgdir=/sys/fs/cgroup/blkio/overcache-bench-$$
    mkdir "$cgdir"
    echo "$majmin $hdd_bps" > "$cgdir/blkio.throttle.read_bps_device"
    echo "$majmin $hdd_iops" > "$cgdir/blkio.throttle.read_iops_device"
    cgtype=v1
fi
log "throttle ($cgtype): $((hdd_bps >> 20)) MiB/s, $hdd_iops IOPS read on $majmin for $cgdir"

# Runs "$@" inside the throttled cgroup (the subshell joins it, then execs).
in_cg() { ( echo "$BASHPID" > "$cgdir/cgroup.procs"; exec "$@" ); }
# The same in the background; BG_PID is the command's own pid.
bg_in_cg() {
    local out=$1; shift
    ( echo "$BASHPID" > "$cgdir/cgroup.procs"; exec "$@" ) >"$out" 2>&1 &
    BG_PID=$!
}

# 3: page cache, dentries and inodes (the default: a cold run); 1: the page
# cache only, so the kernel still knows the HDD's directories and inodes.
drop_level=3
drop_caches() { sync; echo "${1:-3}" > /proc/sys/vm/drop_caches; }

# ------------------------------------------------------------------ data --
log "writing test data: seq.dat and rand.dat (${seq_mib} MiB each), $tree_files small files"
dd if=/dev/urandom of="$fast/seq.dat" bs=1M count="$seq_mib" status=none
dd if=/dev/urandom of="$fast/rand.dat" bs=1M count="$seq_mib" status=none
python3 - "$fast/tree" "$tree_files" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(20240923)
per_dir = 100
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // per_dir))
    os.makedirs(d, exist_ok=True)
    size = rng.randint(1024, 32 * 1024)
    with open(os.path.join(d, "f%05d.txt" % i), "wb") as f:
        f.write(rng.randbytes(size))
EOF
cp -a "$fast/seq.dat" "$fast/rand.dat" "$fast/tree" "$hdd/"
tree_bytes=$(du -sb --apparent-size "$fast/tree" | cut -f1)
sync

# ---------------------------------------------------------------- mounts --
wait_mounted() { # MOUNTPOINT PID LOG
    for _ in $(seq 200); do
        is_mounted "$1" && return 0
        if ! kill -0 "$2" 2>/dev/null; then
            echo "run.sh: the daemon for $1 exited; its log:" >&2; cat "$3" >&2; return 1
        fi
        sleep 0.05
    done
    echo "run.sh: $1 did not mount within 10 s" >&2; return 1
}
# A mount that does not answer would leave every job below hanging.
check_answers() { # MOUNTPOINT
    if ! timeout -k 5 10 stat "$1/." >/dev/null; then
        echo "run.sh: $1 is mounted but does not answer a stat within 10 s" >&2
        return 1
    fi
}

unmount_daemon() { # MOUNTPOINT PID
    force_unmount "$1"
    for _ in $(seq 100); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$2" 2>/dev/null || true
    wait "$2" 2>/dev/null || true
}

# passthrough_ll over the fast directory: mounted once. Its daemon reads the
# unthrottled disk, so the cgroup would not matter; keep it out of it anyway.
"$ptll" -f -o source="$fast" "$mnt_pt" >"$results/passthrough_ll.log" 2>&1 &
pt_pid=$!
pids+=("$pt_pid"); mounts+=("$mnt_pt")
wait_mounted "$mnt_pt" "$pt_pid" "$results/passthrough_ll.log"
check_answers "$mnt_pt"

cache_mib=$((2 * seq_mib + 512))
# sequential_cutoff=0: the sequential workload is there to measure filling
# and hitting the cache, so the bcache-style bypass of long sequential
# streams is switched off.
oc_options="cache=$cache,cache_size=${cache_mib}M,sequential_cutoff=0${oc_opts:+,$oc_opts}"
oc_pid=""
oc_mount() {
    rm -rf "$cache"; mkdir -p "$cache"
    local logf=$results/overcache-r$1.log
    if ((standin)); then
        bg_in_cg "$logf" "$ptll" -f -o source="$hdd" "$mnt_oc"
    else
        bg_in_cg "$logf" "$oc_bin" "$hdd" "$mnt_oc" -f -o "$oc_options"
    fi
    oc_pid=$BG_PID
    pids+=("$oc_pid"); mounts+=("$mnt_oc")
    wait_mounted "$mnt_oc" "$oc_pid" "$logf"
    check_answers "$mnt_oc"
}

stats() { # OUTFILE: a copy of the control file, if there is one
    if [[ -r $mnt_oc/.overcache ]]; then timeout 10 cat "$mnt_oc/.overcache" > "$1" || true; fi
}

# Waits until overcache's background fills are done, so that a "hit" run is
# not racing the fill of the run before it: the fill counters and the bytes
# in use must stay the same for 2 s. (A short pause is not enough: writing a
# GiB into the cache file can stall the fill thread in dirty-page throttling
# for a while, hence also the sync.)
# MIN_USED: the cache_used_bytes the fills so far should reach (a stall of
# the fill thread longer than 2 s has been seen); waiting stops after 120 s
# with a warning either way.
settle() { # [MIN_USED]
    ((standin)) && return 0
    [[ -r $mnt_oc/.overcache ]] || return 0
    local min=${1:-0} prev="" cur used same=0
    sync
    for _ in $(seq 240); do
        cur=$(timeout 10 awk '$1 ~ /^(cache_used_bytes|fills|fills_skipped_full|fills_raced|fill_errors)$/ {printf "%s ", $2}' \
            "$mnt_oc/.overcache" 2>/dev/null || true)
        used=$(timeout 10 awk '$1 == "cache_used_bytes" {print $2}' "$mnt_oc/.overcache" 2>/dev/null || true)
        if [[ -n $cur && $cur == "$prev" && ${used:-0} -ge $min ]]; then
            ((++same >= 4)) && return 0
        else
            same=0
        fi
        prev=$cur
        sleep 0.5
    done
    log "warning: overcache's fills still moving, or cache_used_bytes ${used:-?} below $min, after 120 s"
}

# ------------------------------------------------------------------ jobs --
# measure WORKLOAD TARGET DIR REPEAT [cg]: one cold run, page cache dropped;
# with "cg" the benchmark process itself runs in the throttled cgroup.
measure() {
    local w=$1 t=$2 d=$3 r=$4 cg=${5:-}
    local out=$results/$w-$t-r$r.json
    local run=()
    [[ -n $cg ]] && run=(in_cg)
    drop_caches "$drop_level"
    log "  $w on $t"
    # No job may hang the bench: a stuck mount fails it after job_limit.
    case "$w" in
        seq) "${run[@]}" timeout -k 10 "$job_limit" fio_seq_cmd "$d" "$out" ;;
        rand) "${run[@]}" timeout -k 10 "$job_limit" fio_rand_cmd "$d" "$out" ;;
        tree) "${run[@]}" timeout -k 10 "$job_limit" "$treeread" "$d/tree" > "$out" ;;
    esac
}
# The fio jobs as tiny scripts, since in_cg execs a program, not a function.
cat > "$tools/fio_seq_cmd" <<EOF
#!/bin/sh
exec fio --name=seq --filename="\$1/seq.dat" --rw=read --bs=1M --size=${seq_mib}M \
    --ioengine=psync --direct=0 --allow_file_create=0 \
    --output-format=json --output="\$2" >/dev/null
EOF
cat > "$tools/fio_rand_cmd" <<EOF
#!/bin/sh
exec fio --name=rand --filename="\$1/rand.dat" --rw=randread --bs=4k --size=${seq_mib}M \
    --numjobs=4 --group_reporting --time_based --runtime=$rand_secs \
    --ioengine=psync --direct=1 --allow_file_create=0 --randrepeat=0 \
    --output-format=json --output="\$2" >/dev/null
EOF
chmod +x "$tools/fio_seq_cmd" "$tools/fio_rand_cmd"
PATH=$tools:$PATH

# measure_oc WORKLOAD PHASE REPEAT: a run on the overcache mount, with the
# control file copied before and after so the report can show hits/misses.
expect_used=0
measure_oc() {
    local w=$1 ph=$2 r=$3
    settle "$expect_used"
    stats "$results/stats-$w-$ph-r$r-before.txt"
    cat "/proc/$oc_pid/io" > "$results/io-$w-$ph-r$r-before.txt" 2>/dev/null || true
    measure "$w" "$ph" "$mnt_oc" "$r"
    settle "$expect_used"
    stats "$results/stats-$w-$ph-r$r-after.txt"
    # The daemon's own storage reads (cache device and HDD): against the
    # bytes the job asked for, they show read amplification.
    cat "/proc/$oc_pid/io" > "$results/io-$w-$ph-r$r-after.txt" 2>/dev/null || true
}

python3 - "$results/meta.json" <<EOF
import json, os, platform, subprocess, sys, time
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return ""
meta = {
  "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
  "command": "contrib/bench/run.sh $orig_args",
  "host": platform.node(), "kernel": platform.release(),
  "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
  "cpus": os.cpu_count(),
  "mem": sh("free -h | awk '/Mem:/{print \$2}'"),
  "fio": sh("fio --version"),
  "commit": "$commit",
  "repeat": $repeat, "seq_mib": $seq_mib, "rand_secs": $rand_secs, "tree_files": $tree_files,
  "hdd_bps": $hdd_bps, "hdd_iops": $hdd_iops, "cgroup": "$cgtype",
  "overcache_options": "$oc_options", "standin": bool($standin),
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF

for r in $(seq 1 "$repeat"); do
    log "repeat $r/$repeat"
    oc_mount "$r"
    expect_used=0
    for w in seq rand tree; do
        measure "$w" hdd "$hdd" "$r" cg
        measure "$w" fast "$fast" "$r"
        measure "$w" pt "$mnt_pt" "$r"
        measure_oc "$w" oc-first "$r"
        case "$w" in
            seq) expect_used=$((seq_mib << 20)) ;;
            rand)
                # 20 s of random misses fill only part of rand.dat: read the
                # rest in so that the hit run below measures hits only.
                log "  warming rand.dat through overcache"
                timeout -k 10 "$job_limit" cat "$mnt_oc/rand.dat" > /dev/null
                expect_used=$((2 * seq_mib << 20)) ;;
            tree) expect_used=$((expect_used + tree_bytes * 99 / 100)) ;;
        esac
        measure_oc "$w" oc-hit "$r"
        if [[ $w == tree ]]; then
            # The same with only the page cache dropped: names and inodes of
            # the HDD stay in the kernel, so this isolates the data path
            # from metadata reads of the slow disk, which overcache does not
            # cache.
            drop_level=1
            measure tree pt-pc "$mnt_pt" "$r"
            measure_oc tree oc-hit-pc "$r"
            drop_level=3
        fi
    done
    grep -E '^(VmRSS|VmHWM)' "/proc/$oc_pid/status" > "$results/rss-r$r.txt" || true
    unmount_daemon "$mnt_oc" "$oc_pid"
done

log "results in $results"
python3 "$here/report.py" "$results" | tee "$results/report.txt"
