#!/usr/bin/env bash
# Builds overcache and runs the whole test suite: unit tests, then the mount
# tests (real FUSE mounts over temporary directories; they need root and
# /dev/fuse, and are skipped without them).
#   contrib/run-tests.sh            # normal build in build-test/
#   contrib/run-tests.sh --asan     # the same with ASan+UBSan in build-asan/
#   contrib/run-tests.sh --tsan     # the executor and unit tests with TSan in build-tsan/
set -euo pipefail
cd "$(dirname "$0")/.."
"$PWD/contrib/install-deps.sh"

dir=build-test
args=(-Dwerror=true)
suites=()
case "${1:-}" in
    --asan) dir=build-asan; args+=(-Db_sanitize=address,undefined -Db_lundef=false) ;;
    # Boost.Asio's atomic_thread_fence trips g++'s -Wtsan, hence no -Werror here.
    --tsan) dir=build-tsan; args=(-Dwerror=false -Dcpp_args=-Wno-tsan -Db_sanitize=thread -Db_lundef=false)
            suites=(--suite unit) ;;
    "") ;;
    *) echo "usage: $0 [--asan|--tsan]" >&2; exit 2 ;;
esac

if [[ -d $dir ]]; then
    meson setup --reconfigure "$dir" "${args[@]}" >/dev/null
else
    meson setup "$dir" "${args[@]}" >/dev/null
fi
ninja -C "$dir" -j"$(nproc)"
meson test -C "$dir" --print-errorlogs --num-processes "$(nproc)" "${suites[@]}"
