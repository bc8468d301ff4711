#!/usr/bin/env bash
# Every man page under man/ renders without a single warning from groff
# (-ww: all warnings; -z: format, print nothing). A missing groff is a
# failure, not a skip: contrib/install-deps.sh installs it (groff-base).
# Usage: man_render_test.sh MAN_DIR
set -euo pipefail
dir=$1
fail() { echo "man_render_test: $*" >&2; exit 1; }

command -v groff >/dev/null ||
    fail "groff is missing (Debian package groff-base; contrib/install-deps.sh installs it)"
shopt -s nullglob
pages=("$dir"/*.[578])
((${#pages[@]})) || fail "no man pages (*.5, *.7, *.8) in $dir"
bad=0
for page in "${pages[@]}"; do
    if ! out=$(groff -ww -z -man "$page" 2>&1) || [[ -n $out ]]; then
        echo "man_render_test: $page:" >&2
        echo "$out" >&2
        bad=1
    fi
done
((bad == 0)) || fail "groff warned about the pages above"
echo "man_render_test: ${#pages[@]} pages render without warnings"
