#!/usr/bin/env bash
# Installs the Debian packages overcache needs to build, test and benchmark.
# Safe to run again: apt-get skips what is installed.
set -euo pipefail
pkgs=(g++ meson ninja-build pkg-config libfuse3-dev fuse3 librocksdb-dev libboost-dev
      doctest-dev libxxhash-dev gdb
      systemd     # systemd-analyze, for the installed unit (test/install_test.sh)
      mount util-linux   # mount(8), umount, findmnt, unshare: test/mount/system_mount_test.cpp
                         # losetup: test/support/slow_disk.cpp
      e2fsprogs          # mkfs.ext4: test/support/slow_disk.cpp
      groff-base         # groff, for test/man_render_test.sh
      attr               # getfattr, setfattr: test/mount/settings_test.cpp
      prometheus python3)  # promtool and json: test/mount/stats_test.cpp checks the formats
# CI keeps a compiler cache between its runs (.ci/run): ccache, which meson
# uses on its own once it is installed. Never needed to build or test.
if [[ -n ${OVERCACHE_CCACHE:-} ]]; then
    pkgs+=(ccache)
fi
if [[ "${1:-}" == "--bench" ]]; then
    pkgs+=(fio e2fsprogs util-linux gcc python3)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "overcache: need root to install: ${missing[*]}" >&2
        command -v sudo >/dev/null && exec sudo "$0" "$@"
        echo "overcache: no sudo here; as root, run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Only promtool of the prometheus package is wanted: the Prometheus server
# that Debian starts with it is stopped and disabled again, if this run
# installed it on a machine running systemd.
if [[ " ${missing[*]:-} " == *" prometheus "* ]] && [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    echo "overcache: installed prometheus for promtool; its server is disabled" >&2
fi
