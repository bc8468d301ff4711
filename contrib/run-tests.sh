#!/usr/bin/env bash
# Builds overcache and runs the whole test suite: unit tests, then the mount
# tests (real FUSE mounts over temporary directories; they need root and
# /dev/fuse, and are skipped without them).
#   contrib/run-tests.sh            # normal build in build-test/
#   contrib/run-tests.sh --asan     # the same with ASan+UBSan in build-asan/
#   contrib/run-tests.sh --tsan     # the executor and unit tests with TSan in build-tsan/
#   contrib/run-tests.sh --writeback  # the mount tests again, every mount in
#                                     # cache_mode=writeback,backing_calls=gated
#   contrib/run-tests.sh --unit     # everything built (build-test/), the unit tests run
# Tests are built with -Dtests=enabled: a missing test dependency (doctest)
# fails the setup instead of leaving nothing to run, and a run of 0 tests
# fails. With OVERCACHE_TESTS_NO_SKIP=1 (CI sets it) a skipped test fails
# the run too, so mount tests cannot quietly stop running.
set -euo pipefail
cd "$(dirname "$0")/.."
"$PWD/contrib/install-deps.sh"

dir=build-test
# -g1: line tables only, enough for backtraces and sanitizer reports; full
# debug info doubles what a sanitizer build takes to compile (caching_path.cpp
# with ASan+UBSan: 50 s at -O2 -g, 23 s at -O1 -g1).
args=(-Dtests=enabled -Dwerror=true -Dcpp_args=-g1)
suites=()
timeout_mult=1
case "${1:-}" in
    # -O1, as the sanitizers' manuals suggest: reports stay precise, the
    # build takes half the time.
    # The crash test's kill -9 rounds stop starting after 60 s instead of
    # 90 (at least 8 run either way): the plain build runs the rest, and
    # all of CI must stay under 90 minutes.
    # ASan runs the unit tests 2-3x slower than plain builds, whose
    # timeouts they were set for (cache_fsck: 25 s on 2 idle cores, past its
    # 60 s with a compile running beside it).
    --asan) dir=build-asan; args+=(-Db_sanitize=address,undefined -Db_lundef=false
                                   -Doptimization=1)
            timeout_mult=2
            export OVERCACHE_CRASH_SECONDS=${OVERCACHE_CRASH_SECONDS:-60} ;;
    # Boost.Asio's atomic_thread_fence trips g++'s -Wtsan, hence no -Werror here.
    --tsan) dir=build-tsan; args=(-Dtests=enabled -Dwerror=false "-Dcpp_args=-Wno-tsan -g1"
                                 -Db_sanitize=thread -Db_lundef=false -Doptimization=1)
            # TSan runs this code 10-20x slower (cache_fsck: 3 s plain, 50 s
            # under TSan on 2 idle cores); the timeouts are set for plain builds.
            # Only what the unit tests run is built: most of a TSan build's
            # time would go to mount tests it does not run.
            suites=(--suite unit); timeout_mult=4; build_only_tested=1 ;;
    # Tests that choose a cache mode keep it; every other mount is writeback,
    # with the backing calls through the gate (a local backing's are inline
    # by default, so the other runs take that way).
    --writeback) suites=(--suite mount)
                 export OVERCACHE_TEST_EXTRA_OPTIONS=cache_mode=writeback,backing_calls=gated ;;
    --unit) suites=(--suite unit) ;;
    "") ;;
    *) echo "usage: $0 [--asan|--tsan|--writeback|--unit]" >&2; exit 2 ;;
esac

start=$SECONDS
if [[ -d $dir ]]; then
    meson setup --reconfigure "$dir" "${args[@]}"
else
    meson setup "$dir" "${args[@]}"
fi
targets=()
rebuild=()
if [[ ${build_only_tested:-0} == 1 ]]; then
    mapfile -t targets < <(meson introspect "$dir" --tests | python3 -c '
import json, os, sys
for t in json.load(sys.stdin):
    exe = os.path.relpath(t["cmd"][0], sys.argv[1])
    if "overcache:unit" in t["suite"] and not exe.startswith(".."):  # scripts: sources
        print(exe)' "$dir")
    if ((${#targets[@]} == 0)); then
        echo "run-tests: no unit test executables found in $dir" >&2
        exit 1
    fi
    targets+=(src/overcache) # cli_show_super runs it
    rebuild=(--no-rebuild)
fi
ninja -C "$dir" -j"$(nproc)" "${targets[@]}"

ntests=$(meson test -C "$dir" --list "${suites[@]}" 2>/dev/null | grep -cE '^[^ ]+ / [^ ]+$' || true)
if ((ntests == 0)); then
    echo "run-tests: no tests are defined in $dir: refusing to pass with nothing run" >&2
    exit 1
fi
rc=0
meson test -C "$dir" --print-errorlogs --num-processes "$(nproc)" "${rebuild[@]}" \
    --timeout-multiplier "$timeout_mult" "${suites[@]}" || rc=$?

# meson test prints its own summary above; one line more for logs and CI.
log=$dir/meson-logs/testlog.json
ran=$(grep -c '"name"' "$log" || true)
skipped=$(grep -c '"result": "SKIP"' "$log" || true)
# --print-errorlogs shows only the last 100 lines of a failed test, which a
# test that mounts many times fills with the daemons' routine lines: print
# each failed test's own findings (doctest's, the seed, the watchdog) too.
if ((rc != 0)); then
    python3 - "$log" <<'PY' || true
import json, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    if t.get("result") in ("OK", "SKIP", "EXPECTEDFAIL"):
        continue
    out = (t.get("stdout") or "") + "\n" + (t.get("stderr") or "")
    keep = [l for l in out.splitlines() if "overcache: info:" not in l]
    print(f"run-tests: findings of {t.get('name')} ({t.get('result')}), last 200 lines "
          "without the daemons' info lines:")
    print("\n".join(keep[-200:]))
PY
fi
echo "run-tests: $dir: $ran tests ran, $skipped of them skipped, exit $rc, $((SECONDS - start)) s"
if ((rc == 0 && ran == 0)); then
    echo "run-tests: 0 tests ran" >&2
    exit 1
fi
if ((rc == 0 && skipped > 0)) && [[ ${OVERCACHE_TESTS_NO_SKIP:-0} == 1 ]]; then
    echo "run-tests: OVERCACHE_TESTS_NO_SKIP=1 and $skipped tests skipped" >&2
    exit 1
fi
exit "$rc"
