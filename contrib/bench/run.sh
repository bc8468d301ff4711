#!/usr/bin/env bash
# overcache benchmark (issues #3 and #7): one command, as root.
#
#   sudo contrib/bench/run.sh [--quick] [--repeat N] [--results DIR]
#                             [--reads] [--writes] [--walk]
#                             [--workdir DIR] [--oc-opts OPTS]
#                             [--oc-write-opts OPTS] [--hdd-write-iops N]
#                             [--standin] [--worktree] [--oc-bin PATH] [--keep]
#
# What it builds, all under --workdir (default /var/tmp/overcache-bench, which
# must be on a fast local disk) and all removed again on exit, Ctrl-C included:
#   hdd/    an emulated HDD: a sparse image on a loop device (direct I/O, so
#           the image is not cached twice), ext4, readahead raised, and I/O
#           throttled with the blkio cgroup to about 150 MiB/s and 150 IOPS
#           each way (--hdd-write-iops sets the write IOPS): for the read
#           jobs, the processes in the bench's cgroup; for the write jobs on
#           cgroup v1, the root group (where the kernel's flusher and jbd2
#           write from, and where the write jobs' HDD-side processes are
#           moved), so that the page-cache writeback cannot write the "HDD"
#           at SSD speed; on cgroup v2 (io.max) the bench's cgroup for both.
#           Writes reach this loop device split into pieces of at most 128
#           segments (512 KiB when the pages are not contiguous), and this
#           kernel charges each piece as an I/O: at 150 write IOPS the HDD
#           writes 70-130 MiB/s sequentially, measured in every run;
#   fast/   an unthrottled directory on the local disk holding the same files;
#   cache/  overcache's cache directory (on the fast disk).
# Then it runs the same fio / tree-walk jobs, each with the page cache dropped
# first. --reads runs only the read half, --writes only the write half,
# --walk only the tree walks; without any of them, all three run.
#
# Reads (issue #3), on:
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
#
# Tree walks (issue #10): `find` and `ls -lR` of a tree of 100 000 files
# (1 000 directories of 100, sizes set by truncate, no data), each with
# dentries and inodes dropped first (echo 3), on hdd, fast, pt, pt-x
# (passthrough_ll -o xattr), oc-first
# (overcache's first walk, which keeps the names and attributes in its
# index) and oc-hit (the walk again, cold).
#
# Writes (issue #7), all buffered, on:
#   hdd       the HDD directly (fio in the throttled group)
#   fast      the fast directory directly
#   pt        passthrough_ll over the fast directory (as for reads)
#   pt-wb     passthrough_ll -o writeback (the kernel's FUSE writeback
#             cache) over the fast directory
#   oc        overcache over the HDD, the daemon in the throttled group,
#             mounted for each job on an empty cache with cache_mode=writeback
#             and sequential_cutoff=0 (--oc-write-opts replaces the
#             cache_mode=writeback part, e.g. cache_mode=writethrough)
# Workloads:
#   randw  random 4 KiB writes with an fsync every 32 writes (fio fsync=32),
#          one job for 20 s, over an existing 1 GiB file (an overwrite);
#   seqw   a sequential 512 MiB write of a new file in 1 MiB writes, then
#          fsync (fio end_fsync=1; fio's time includes the fsync);
#   sust   sustained: a new file of 4x the cache size (cache_size=256M,
#          1 GiB written) in 1 MiB writes, then fsync, with fio's write
#          bandwidth logged every second and the HDD's own writes (loop
#          device stats), the file's size and overcache's dirty_data sampled
#          every second; on hdd (the reference: its write bandwidth, with an
#          fsync every 32 MiB so that the writes reach the disk as they go)
#          and oc only.
# If overcache refuses to mount (today it refuses cache_mode=writeback) or
# does not answer, or a job on it fails, the run goes on and the report shows
# that target as "refused" / "failed".
# --quick: one repeat and smaller sizes (256 MiB files, 5 s random jobs, 500
# small files, a walk of 10 000 files, a 128 MiB sequential write, 512 MiB
# written into a 128 MiB cache); a smoke test of the script, not a
# measurement.
#
# The results (fio JSON and bandwidth logs, tree-walk JSON, per-second
# samples, overcache stats, daemon RSS) go to --results;
# contrib/bench/report.py prints the tables and the goal ratios.
#
# It measures the committed HEAD, built in build-bench/ from `git archive`;
# --worktree builds the working tree instead; --oc-bin PATH runs that binary
# (a sanitizer build, say). --standin mounts passthrough_ll over the HDD in
# place of overcache (with -o writeback for the write jobs), to test the
# script itself. --oc-opts adds options to every overcache mount.
set -euo pipefail

orig_args="$*"
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

repeat=3
seq_mib=1024
rand_secs=20
tree_files=2000
walk_files=100000
quick=0
standin=0
worktree=0
oc_bin_given=""
keep=0
workdir=/var/tmp/overcache-bench
results=""
oc_opts=""
oc_write_opts="cache_mode=writeback"
hdd_bps=$((150 * 1024 * 1024))
hdd_iops=150
hdd_wiops=150 # write IOPS (--hdd-write-iops)
job_limit=900
do_reads=0
do_writes=0
do_walk=0
randw_mib=1024      # the file the random writes overwrite
seqw_mib=512        # the sequential write + fsync
sust_cache_mib=256  # overcache's cache_size for the sustained write...
sust_factor=4       # ...which writes this many times as much

usage() { sed -n '2,/^set -euo/p' "$0" | grep -v '^set' | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --quick) quick=1; repeat=1; seq_mib=256; rand_secs=5; tree_files=500; walk_files=10000
                 randw_mib=256; seqw_mib=128; sust_cache_mib=128 ;;
        --reads) do_reads=1 ;;
        --writes) do_writes=1 ;;
        --walk) do_walk=1 ;;
        --walk-files) walk_files=$2; shift ;;
        --oc-write-opts) oc_write_opts=$2; shift ;;
        --hdd-write-iops) hdd_wiops=$2; shift ;;
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

((do_reads || do_writes || do_walk)) || { do_reads=1; do_writes=1; do_walk=1; }
sust_mib=$((sust_factor * sust_cache_mib))
# passthrough_ll holds a descriptor for every inode the kernel knows (and
# the kernel forgets none without memory pressure): a walk of more files
# than the descriptor limit allows fails there (EMFILE), so the tree is cut
# to fit, and the report says so (meta.json walk_files).
fd_hard=$(ulimit -Hn)
if ((do_walk)) && [[ $fd_hard != unlimited ]] && ((walk_files > fd_hard - 4000)); then
    echo "run.sh: the descriptor limit ($fd_hard) cannot hold a walk of $walk_files files" \
        "through passthrough_ll; walking $((fd_hard - 4000 - (fd_hard - 4000) % 1000)) instead" >&2
    walk_files=$((fd_hard - 4000 - (fd_hard - 4000) % 1000))
fi

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
majmin=""
cgdir=""
root_cg="" # cgroup v1: the root group, throttled on the loop device too
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
    # The root group's rules must go before the loop device does: they are
    # kept by device number, and would throttle the next user of loopN.
    if [[ -n $root_cg ]]; then
        for f in read_bps_device read_iops_device write_bps_device write_iops_device; do
            echo "$majmin 0" > "$root_cg/blkio.throttle.$f" 2>/dev/null
        done
    fi
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
mkdir -p "$workdir"/{hdd,fast,cache,mnt-pt,mnt-ptwb,mnt-ptx,mnt-oc}
hdd=$workdir/hdd fast=$workdir/fast cache=$workdir/cache
mnt_pt=$workdir/mnt-pt mnt_ptwb=$workdir/mnt-ptwb mnt_ptx=$workdir/mnt-ptx mnt_oc=$workdir/mnt-oc

img_mib=1024
((do_reads)) && img_mib=$((img_mib + 2 * seq_mib))
((do_writes)) && img_mib=$((img_mib + randw_mib + seqw_mib + sust_mib))
truncate -s "${img_mib}M" "$workdir/hdd.img"
loopdev=$(losetup --direct-io=on --find --show "$workdir/hdd.img")
loopname=${loopdev#/dev/}
majmin=$(cat "/sys/block/$loopname/dev")
log "emulated HDD: $loopdev ($majmin), ${img_mib} MiB image"
# With the default 128 KiB readahead a 150-IOPS cap would make a 19 MiB/s
# "disk"; an HDD's sequential reads come in large requests.
echo 1280 > "/sys/block/$loopname/queue/max_sectors_kb" 2>/dev/null || true
echo 2560 > "/sys/block/$loopname/queue/read_ahead_kb"
# Inodes enough for the walk's tree as well.
mkfs.ext4 -q -F -N $((walk_files + 70000)) -E lazy_itable_init=0,lazy_journal_init=0 "$loopdev"
mount "$loopdev" "$hdd"
mounts+=("$hdd")

if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    cgdir=/sys/fs/cgroup/overcache-bench-$$
    grep -qw io /sys/fs/cgroup/cgroup.subtree_control || echo +io > /sys/fs/cgroup/cgroup.subtree_control
    mkdir "$cgdir"
    # v2 limits are hierarchical, and v2 charges the flusher's writeback of
    # a cgroup's dirty pages to that cgroup: the bench's group is the disk.
    echo "$majmin rbps=$hdd_bps riops=$hdd_iops wbps=$hdd_bps wiops=$hdd_wiops" > "$cgdir/io.max"
    cgtype=v2
    wcg=$cgdir
else
    cgdir=/sys/fs/cgroup/blkio/overcache-bench-$$
    mkdir "$cgdir"
    echo "$majmin $hdd_bps" > "$cgdir/blkio.throttle.read_bps_device"
    echo "$majmin $hdd_iops" > "$cgdir/blkio.throttle.read_iops_device"
    cgtype=v1
    # v1 throttles only the I/O a process issues itself, and each group
    # alone (limits are flat): the kernel's flusher (page-cache writeback,
    # also of what overcache's daemon writes to its backing) and ext4's jbd2
    # write from the root group. So the write jobs run their HDD-side
    # processes (fio on the HDD, overcache's daemon) in the root group, and
    # the root group's I/O to this loop device is throttled (below, once the
    # test data is written): one bucket each way for everything that writes
    # the "HDD", as with a real disk. Nothing else uses this loop device.
    root_cg=$(dirname "$cgdir")
    wcg=$root_cg
fi
log "throttle ($cgtype): reads $((hdd_bps >> 20)) MiB/s, $hdd_iops IOPS on $majmin for $cgdir"

# Runs "$@" inside the throttled cgroup (the subshell joins it, then execs):
# $run_cg, which is $cgdir for the read jobs and $wcg for the write jobs.
run_cg=$cgdir
in_cg() { ( echo "$BASHPID" > "$run_cg/cgroup.procs"; exec "$@" ); }
# The same in the background; BG_PID is the command's own pid.
bg_in_cg() {
    local out=$1; shift
    ( echo "$BASHPID" > "$run_cg/cgroup.procs"; exec "$@" ) >"$out" 2>&1 &
    BG_PID=$!
}

# 3: page cache, dentries and inodes (the default: a cold run); 1: the page
# cache only, so the kernel still knows the HDD's directories and inodes.
drop_level=3
drop_caches() { sync; echo "${1:-3}" > /proc/sys/vm/drop_caches; }

# ------------------------------------------------------------------ data --
tree_bytes=0
if ((do_reads)); then
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
fi
if ((do_walk)); then
    log "writing test data: a tree of $walk_files files for the walks"
    python3 - "$fast/walk" "$walk_files" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(20261204)
per_dir, dirs_per_top = 100, 10
for i in range(n):
    d = os.path.join(root, "t%03d" % (i // (per_dir * dirs_per_top)), "d%02d" % (i // per_dir % dirs_per_top))
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "f%06d.c" % i)
    with open(path, "wb"):
        pass
    os.truncate(path, rng.randint(0, 64 * 1024))
EOF
    cp -a "$fast/walk" "$hdd/"
fi
if ((do_writes)); then
    # The random writes overwrite an existing, allocated file, as a database
    # would; the sequential and sustained writes create their files anew.
    log "writing test data: randw.dat (${randw_mib} MiB)"
    dd if=/dev/urandom of="$fast/randw.dat" bs=1M count="$randw_mib" status=none
    cp -a "$fast/randw.dat" "$hdd/"
fi
sync
if [[ $cgtype == v1 ]] && ((do_writes)); then
    # The root group, for the write jobs (see above); reset on exit, since
    # the rules stay with the device number, not with this loop device.
    echo "$majmin $hdd_bps" > "$root_cg/blkio.throttle.read_bps_device"
    echo "$majmin $hdd_iops" > "$root_cg/blkio.throttle.read_iops_device"
    echo "$majmin $hdd_bps" > "$root_cg/blkio.throttle.write_bps_device"
    echo "$majmin $hdd_wiops" > "$root_cg/blkio.throttle.write_iops_device"
    log "throttle (v1 root group): $((hdd_bps >> 20)) MiB/s, $hdd_iops read / $hdd_wiops write IOPS on $majmin"
elif [[ $cgtype == v1 ]]; then
    root_cg="" # nothing to reset
fi

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

# A passthrough keeps a descriptor per inode the kernel holds: the walk's
# tree needs more than the default 1024 (overcache raises its own limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

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

# passthrough_ll with the kernel's FUSE writeback cache (its `-o writeback`
# option, which asks for FUSE_CAP_WRITEBACK_CACHE), over the same fast
# directory: the reference the write goals name.
ptwb_pid=""
if ((do_writes)); then
    "$ptll" -f -o writeback -o source="$fast" "$mnt_ptwb" >"$results/passthrough_ll-wb.log" 2>&1 &
    ptwb_pid=$!
    pids+=("$ptwb_pid"); mounts+=("$mnt_ptwb")
    wait_mounted "$mnt_ptwb" "$ptwb_pid" "$results/passthrough_ll-wb.log"
    check_answers "$mnt_ptwb"
fi

# passthrough_ll -o xattr over the fast directory, for the walks: without
# it, passthrough_ll answers the first getxattr with ENOSYS and the kernel
# never asks again, while ls -l asks every file of a filesystem that has
# extended attributes (overcache, the backing) for its security label and
# its ACL: two round trips a file.
if ((do_walk)); then
    "$ptll" -f -o xattr -o source="$fast" "$mnt_ptx" >"$results/passthrough_ll-xattr.log" 2>&1 &
    ptx_pid=$!
    pids+=("$ptx_pid"); mounts+=("$mnt_ptx")
    wait_mounted "$mnt_ptx" "$ptx_pid" "$results/passthrough_ll-xattr.log"
    check_answers "$mnt_ptx"
fi

# overcache for one write job (NAME, e.g. randw-oc-r1) on an empty cache of
# CACHE_MIB. sequential_cutoff=0: the sequential write jobs are there to
# measure writing into the cache, not the bypass of long streams. Returns 1,
# leaving NAME.refused or NAME.failed in the results for the report, if the
# daemon exits without mounting (an option it refuses: today that is
# cache_mode=writeback), does not mount within 10 s, or does not answer; the
# bench then goes on with the other targets.
oc_write_options() { # CACHE_MIB
    echo "cache=$cache,cache_size=${1}M,sequential_cutoff=0${oc_opts:+,$oc_opts}${oc_write_opts:+,$oc_write_opts}"
}
oc_mount_w() { # NAME CACHE_MIB
    local name=$1 logf=$results/overcache-$1.log rc=0
    rm -rf "$cache"; mkdir -p "$cache"
    if ((standin)); then
        bg_in_cg "$logf" "$ptll" -f -o writeback -o source="$hdd" "$mnt_oc"
    else
        bg_in_cg "$logf" "$oc_bin" "$hdd" "$mnt_oc" -f -o "$(oc_write_options "$2")"
    fi
    oc_pid=$BG_PID
    pids+=("$oc_pid"); mounts+=("$mnt_oc")
    for _ in $(seq 200); do
        is_mounted "$mnt_oc" && break
        if ! kill -0 "$oc_pid" 2>/dev/null; then
            wait "$oc_pid" || rc=$?
            { echo "refused: the daemon exited with status $rc without mounting; its log ends:"
              tail -n 5 "$logf"; } > "$results/$name.refused"
            log "  overcache refused to mount for $name (exit $rc): $(tail -n 1 "$logf")"
            return 1
        fi
        sleep 0.05
    done
    if ! is_mounted "$mnt_oc"; then
        echo "failed: the daemon did not mount within 10 s" > "$results/$name.failed"
        log "  overcache did not mount within 10 s for $name"
        unmount_daemon "$mnt_oc" "$oc_pid"
        return 1
    fi
    if ! check_answers "$mnt_oc"; then
        echo "failed: mounted, but a stat of its root did not answer within 10 s" > "$results/$name.failed"
        unmount_daemon "$mnt_oc" "$oc_pid"
        return 1
    fi
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
        find|lsR) "${run[@]}" timeout -k 10 "$job_limit" walk_cmd "$w" "$d/walk" "$walk_files" > "$out" ;;
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
# walk_cmd find|lsR DIR FILES: one walk, its output thrown away, timed.
cat > "$tools/walk_cmd" <<'EOF'
#!/usr/bin/env python3
import json, subprocess, sys, time
kind, root, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
cmd = ["find", root] if kind == "find" else ["ls", "-lR", root]
t0 = time.monotonic()
subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
print(json.dumps({"files": files, "seconds": time.monotonic() - t0}))
EOF
chmod +x "$tools/fio_seq_cmd" "$tools/fio_rand_cmd" "$tools/walk_cmd"
PATH=$tools:$PATH

# measure_oc WORKLOAD PHASE REPEAT: a run on the overcache mount, with the
# control file copied before and after so the report can show hits/misses.
expect_used=0
measure_oc() {
    local w=$1 ph=$2 r=$3
    settle "$expect_used"
    stats "$results/stats-$w-$ph-r$r-before.txt"
    cat "/proc/$oc_pid/io" > "$results/io-$w-$ph-r$r-before.txt" 2>/dev/null || true
    local hdd_reads0
    hdd_reads0=$(awk '{print $1}' "/sys/block/$loopname/stat")
    measure "$w" "$ph" "$mnt_oc" "$r"
    # Read requests the HDD completed during the job (the daemon's, and
    # the kernel's for it): each one is a seek on a real disk.
    echo "$(( $(awk '{print $1}' "/sys/block/$loopname/stat") - hdd_reads0 ))" \
        > "$results/hddreads-$w-$ph-r$r.txt"
    settle "$expect_used"
    stats "$results/stats-$w-$ph-r$r-after.txt"
    # The daemon's own storage reads (cache device and HDD): against the
    # bytes the job asked for, they show read amplification.
    cat "/proc/$oc_pid/io" > "$results/io-$w-$ph-r$r-after.txt" 2>/dev/null || true
}

# --------------------------------------------------------------- writes --
cat > "$tools/fio_randw_cmd" <<EOF
#!/bin/sh
exec fio --name=randw --filename="\$1/randw.dat" --rw=randwrite --bs=4k --size=${randw_mib}M \
    --fsync=32 --time_based --runtime=$rand_secs \
    --ioengine=psync --direct=0 --allow_file_create=0 --randrepeat=0 \
    --output-format=json --output="\$2" >/dev/null
EOF
# fallocate=none: the file grows by its writes alone, as with cp, on every
# target alike (fio would otherwise preallocate it first).
cat > "$tools/fio_seqw_cmd" <<EOF
#!/bin/sh
exec fio --name=seqw --filename="\$1/seqw.dat" --rw=write --bs=1M --size=${seqw_mib}M \
    --end_fsync=1 --ioengine=psync --direct=0 --fallocate=none \
    --output-format=json --output="\$2" >/dev/null
EOF
# DIR OUT LOGPREFIX FSYNC: writes LOGPREFIX_bw.1.log, the write bandwidth
# averaged over each second (fio leaves out the seconds without progress);
# FSYNC: an fsync every that many writes (0: only the final one).
cat > "$tools/fio_sust_cmd" <<EOF
#!/bin/sh
exec fio --name=sust --filename="\$1/sust.dat" --rw=write --bs=1M --size=${sust_mib}M \
    --end_fsync=1 --fsync="\$4" --ioengine=psync --direct=0 --fallocate=none \
    --write_bw_log="\$3" --log_avg_msec=1000 \
    --output-format=json --output="\$2" >/dev/null
EOF
chmod +x "$tools/fio_randw_cmd" "$tools/fio_seqw_cmd" "$tools/fio_sust_cmd"

# sampler OUT FILE MOUNT|-: every second a line "unix-time sectors-written-
# to-the-HDD size-of-FILE dirty_data" (FILE's size as its writer's mount
# shows it: the application's progress, also while fio logs nothing; the
# dirty_data of MOUNT's control file; "-" for what is not there).
sampler() {
    local f=$2 m=$3 dirty size
    while :; do
        dirty=- size=-
        if [[ $m != - ]]; then
            dirty=$(timeout 2 awk '$1 == "dirty_data" {print $2}' "$m/.overcache" 2>/dev/null || true)
        fi
        size=$(timeout 2 stat -c %s "$f" 2>/dev/null || true)
        echo "$(date +%s.%N) $(awk '{print $7}' "/sys/block/$loopname/stat") ${size:--} ${dirty:--}"
        sleep 1
    done > "$1"
}

# measure_w WORKLOAD TARGET DIR REPEAT [cg]: one run of a write job, the page
# cache dropped first (its sync also writes out what earlier jobs left
# dirty). The new files of seqw and sust are deleted first, through the
# target itself. Returns fio's status.
measure_w() {
    local w=$1 t=$2 d=$3 r=$4 cg=${5:-}
    local name=$w-$t-r$r run=() rc=0 fsync_every=0 samp_pid m=-
    [[ -n $cg ]] && run=(in_cg)
    [[ $w != randw ]] && { timeout 60 rm -f "$d/$w.dat" || true; }
    drop_caches 3
    log "  $w on $t"
    case "$w" in
        randw) "${run[@]}" timeout -k 10 "$job_limit" fio_randw_cmd "$d" "$results/$name.json" || rc=$? ;;
        seqw) "${run[@]}" timeout -k 10 "$job_limit" fio_seqw_cmd "$d" "$results/$name.json" || rc=$? ;;
        sust)
            # The HDD's reference bandwidth: buffered writes with an fsync
            # every 32 MiB, so that they reach the disk as they go (not all
            # at the end from the page cache), as a writeback through the
            # page cache would.
            [[ $t == hdd ]] && fsync_every=32
            [[ $t == oc ]] && ! ((standin)) && m=$mnt_oc
            sampler "$results/$name.samples" "$d/$w.dat" "$m" &
            samp_pid=$!
            pids+=("$samp_pid")
            "${run[@]}" timeout -k 10 "$job_limit" fio_sust_cmd "$d" "$results/$name.json" \
                "$results/$name" "$fsync_every" || rc=$?
            kill "$samp_pid" 2>/dev/null || true
            wait "$samp_pid" 2>/dev/null || true ;;
    esac
    return "$rc"
}

# measure_oc_w WORKLOAD REPEAT CACHE_MIB: mounts overcache for the job on an
# empty cache, runs it (fio outside the cgroup, the daemon inside), copies
# the control file and the daemon's I/O counters around it, unmounts. A
# refused mount or a failed job is noted for the report; the bench goes on.
measure_oc_w() {
    local w=$1 r=$2 name=$1-oc-r$2 rc=0
    oc_mount_w "$name" "$3" || return 0
    stats "$results/stats-$name-before.txt"
    cat "/proc/$oc_pid/io" > "$results/io-$name-before.txt" 2>/dev/null || true
    measure_w "$w" oc "$mnt_oc" "$r" || rc=$?
    if ((rc)); then
        echo "failed: fio exited with status $rc (124: it hit the ${job_limit} s limit)" > "$results/$name.failed"
        log "  $w on overcache failed (fio status $rc)"
    fi
    stats "$results/stats-$name-after.txt"
    cat "/proc/$oc_pid/io" > "$results/io-$name-after.txt" 2>/dev/null || true
    grep -E '^(VmRSS|VmHWM)' "/proc/$oc_pid/status" > "$results/rssw-$name.txt" 2>/dev/null || true
    unmount_daemon "$mnt_oc" "$oc_pid"
}
cache_w_mib=$((randw_mib + seqw_mib + 512))

OC_READ_OPTS=$oc_options OC_WRITE_OPTS=$(oc_write_options "$cache_w_mib") \
OC_SUST_OPTS=$(oc_write_options "$sust_cache_mib") \
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
  "hdd_bps": $hdd_bps, "hdd_iops": $hdd_iops, "hdd_write_iops": $hdd_wiops, "cgroup": "$cgtype",
  "overcache_options": os.environ["OC_READ_OPTS"], "standin": bool($standin),
  "reads": bool($do_reads), "writes": bool($do_writes), "walk": bool($do_walk),
  "walk_files": $walk_files,
  "randw_mib": $randw_mib, "seqw_mib": $seqw_mib, "sust_mib": $sust_mib,
  "sust_cache_mib": $sust_cache_mib,
  "overcache_write_options": os.environ["OC_WRITE_OPTS"],
  "overcache_sust_options": os.environ["OC_SUST_OPTS"],
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF

for r in $(seq 1 "$repeat"); do
    log "repeat $r/$repeat"
    if ((do_reads)); then
        run_cg=$cgdir
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
                    # 20 s of random misses fill only part of rand.dat: read
                    # the rest in so that the hit run below measures hits only.
                    log "  warming rand.dat through overcache"
                    timeout -k 10 "$job_limit" cat "$mnt_oc/rand.dat" > /dev/null
                    expect_used=$((2 * seq_mib << 20)) ;;
                tree) expect_used=$((expect_used + tree_bytes * 99 / 100)) ;;
            esac
            measure_oc "$w" oc-hit "$r"
            if [[ $w == tree ]]; then
                # The same with only the page cache dropped: names and inodes
                # of the HDD stay in the kernel, so this isolates the data
                # path from metadata reads of the slow disk, which overcache
                # does not cache.
                drop_level=1
                measure tree pt-pc "$mnt_pt" "$r"
                measure_oc tree oc-hit-pc "$r"
                drop_level=3
            fi
        done
        grep -E '^(VmRSS|VmHWM)' "/proc/$oc_pid/status" > "$results/rss-r$r.txt" || true
        unmount_daemon "$mnt_oc" "$oc_pid"
    fi
    if ((do_walk)); then
        run_cg=$cgdir
        oc_mount "walk-r$r"
        expect_used=0
        for w in find lsR; do
            measure "$w" hdd "$hdd" "$r" cg
            measure "$w" fast "$fast" "$r"
            measure "$w" pt "$mnt_pt" "$r"
            measure "$w" pt-x "$mnt_ptx" "$r"
            measure_oc "$w" oc-first "$r"
            measure_oc "$w" oc-hit "$r"
        done
        grep -E '^(VmRSS|VmHWM)' "/proc/$oc_pid/status" > "$results/rss-walk-r$r.txt" || true
        unmount_daemon "$mnt_oc" "$oc_pid"
    fi
    if ((do_writes)); then
        run_cg=$wcg
        # overcache is mounted afresh for each job and unmounted after it, so
        # that its writeback of one job's dirty data cannot slow the HDD
        # runs of the next.
        for w in randw seqw; do
            measure_w "$w" hdd "$hdd" "$r" cg
            measure_w "$w" fast "$fast" "$r"
            measure_w "$w" pt "$mnt_pt" "$r"
            measure_w "$w" pt-wb "$mnt_ptwb" "$r"
            measure_oc_w "$w" "$r" "$cache_w_mib"
        done
        measure_w sust hdd "$hdd" "$r" cg
        measure_oc_w sust "$r" "$sust_cache_mib"
    fi
done

log "results in $results"
python3 "$here/report.py" "$results" | tee "$results/report.txt"
