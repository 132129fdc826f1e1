# SPDX-License-Identifier: MIT
# Tiny assertion helpers for the program tests; each failure is counted and printed, the summary line is
# "N passed, N failed".
passed=0; failed=0
ok()   { passed=$((passed+1)); echo "ok: $*"; }
bad()  { failed=$((failed+1)); echo "FAIL: $*"; }
expect() { local what="$1"; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
contains() { grep -q -- "$2" "$1"; }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; }
