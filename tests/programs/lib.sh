# SPDX-License-Identifier: MIT
# Tiny assertion helpers for the program tests; each failure is counted and printed, the summary line is
# "N passed, N failed".
passed=0; failed=0
ok()   { passed=$((passed+1)); echo "ok: $*"; }
bad()  { failed=$((failed+1)); echo "FAIL: $*"; }
expect() { local what="$1"; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
contains() { grep -q -- "$2" "$1"; }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; }

# every checkpoint-N in $1 matches its manifest.json (sizes and CRC-32 of every file); prints the first mismatch
intact() { python3 - "$1" <<'EOF'
import json, os, re, sys, zlib
out = sys.argv[1]
if not os.path.isdir(out): sys.exit(0)
for d in sorted(os.listdir(out)):
    if not re.fullmatch(r"checkpoint-[0-9]+", d): continue
    p = os.path.join(out, d)
    try:
        m = json.load(open(os.path.join(p, "manifest.json")))
        for f in m["files"]:
            b = open(os.path.join(p, f["name"]), "rb").read()
            assert len(b) == f["bytes"] and "%08x" % zlib.crc32(b) == f["crc32"], f["name"]
    except Exception as e:
        print(f"{p}: not complete ({e!r})"); sys.exit(1)
EOF
}
# the newest checkpoint-N's N in $1 (empty when none)
newest() { ls "$1" 2>/dev/null | sed -n 's/^checkpoint-\([0-9]*\)$/\1/p' | sort -n | tail -1; }
