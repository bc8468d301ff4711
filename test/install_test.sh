#!/usr/bin/env bash
# `meson install` into a DESTDIR puts everything where it belongs under the
# prefix: the binary, the man pages, the systemd unit (which
# `systemd-analyze verify` accepts without a word), the bash completion
# (which completes commands and -o option names from the installed binary)
# and the examples. Usage: install_test.sh BUILD_DIR
set -euo pipefail
build=$1
dest=$(mktemp -d "${TMPDIR:-/tmp}/overcache-install.XXXXXX")
trap 'rm -rf "$dest"' EXIT
fail() { echo "install_test: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$dest" --no-rebuild --quiet
option() {
    meson introspect "$build" --buildoptions |
        python3 -c "import json,sys; print(next(o['value'] for o in json.load(sys.stdin) if o['name'] == '$1'))"
}
prefix=$(option prefix)
root=$dest$prefix
unit_dir=$(option systemd_unit_dir)
[[ -n $unit_dir ]] || unit_dir=$prefix/lib/systemd/system

bin=$root/$(option sbindir)/overcache
[[ -x $bin ]] || fail "no executable at $bin"
for f in "$root/$(option mandir)/man8/overcache.8" \
         "$root/$(option mandir)/man5/overcache.conf.5" \
         "$dest$unit_dir/overcache@.service" \
         "$root/$(option datadir)/bash-completion/completions/overcache" \
         "$root/$(option datadir)/doc/overcache/examples/overcache.conf.example" \
         "$root/$(option datadir)/doc/overcache/examples/fstab.example" \
         "$root/$(option datadir)/doc/overcache/examples/mnt-fast.mount"; do
    [[ -f $f ]] || fail "not installed: ${f#"$dest"}"
done
"$bin" --version >/dev/null || fail "the installed binary does not run"

# The unit, as an instance, with its commands pointing at the installed
# binary (systemd would find it on its own search path once installed for
# real).
command -v systemd-analyze >/dev/null ||
    fail "systemd-analyze is missing (contrib/install-deps.sh installs the systemd package)"
mkdir "$dest/verify"
grep -q '^ExecStart=overcache ' "$dest$unit_dir/overcache@.service" ||
    fail "the unit's ExecStart does not run overcache"
sed -E "s#^(Exec[A-Za-z]*=-?)overcache #\1$bin #" "$dest$unit_dir/overcache@.service" \
    > "$dest/verify/overcache@check.service"
grep -n 'overcache ' "$dest/verify/overcache@check.service" | grep '^[0-9]*:Exec' |
    grep -v "$bin" && fail "a command of the unit was not pointed at $bin"
out=$(systemd-analyze verify --man=no "$dest/verify/overcache@check.service" 2>&1) ||
    fail "systemd-analyze verify failed: $out"
[[ -z $out ]] || fail "systemd-analyze verify warns: $out"

# The completion, run as bash would, with the installed binary on PATH.
completion=$root/$(option datadir)/bash-completion/completions/overcache
complete_words() { # WORDS...: the completions of the last word
    PATH=$(dirname "$bin"):$PATH bash -c '
        source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        _overcache
        printf "%s\n" "${COMPREPLY[@]}"' _ "$completion" "$@"
}
got=$(complete_words overcache -o writeback_de)
[[ $got == "writeback_delay=" ]] || fail "-o writeback_de completes to '$got'"
got=$(complete_words overcache -o cache=/x,fsync_to)
[[ $got == "cache=/x,fsync_to_backing" ]] || fail "-o cache=/x,fsync_to completes to '$got'"
got=$(complete_words overcache fl)
grep -qx flush <<<"$got" || fail "'fl' does not complete to flush: '$got'"
echo "install_test: installed under $prefix and checked"
