#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# quantize: round trips through bnb's 4-bit layout, --only/--skip, and clear failures with no partial output.
set -u
build="$1"; fixtures="$2"
. "$(dirname "$0")/lib.sh"
q="$build/experiments/quantize"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$fixtures" make "$tmp" || { echo "cannot make fixtures"; exit 1; }

for cfg in "nf4 64" "nf4 64 --double-quant" "fp4 128" "fp4 32 --double-quant"; do
  set -- $cfg
  name="$1-$2${3:+-dq}"
  expect "$name: quantize exits 0" "$q" --scheme "$1" --blocksize "$2" ${3:-} --in "$tmp/model.safetensors" --out "$tmp/$name.safetensors" >"$tmp/$name.log" 2>&1
  expect "$name: the four 2-D float weights quantized" test "$(grep -c "$1-b$2" "$tmp/$name.log")" -eq 4
  expect "$name: dequantize exits 0" "$q" --dequantize --in "$tmp/$name.safetensors" --out "$tmp/$name-f32.safetensors" >"$tmp/$name-deq.log" 2>&1
  # 4-bit on Gaussian data gives ~18-21 dB; 15 dB fails a wrong scale, code or nibble order
  expect "$name: round trip keeps every tensor (SQNR >= 15 dB, others byte-identical)" "$fixtures" check-roundtrip "$tmp/model.safetensors" "$tmp/$name-f32.safetensors" 15
done
expect "nf4 bits/param printed as 4.5 for the 64x96 weight" contains "$tmp/nf4-64.log" "q_proj.weight.*4.5000"

"$q" --scheme nf4 --only 'q_proj' --in "$tmp/model.safetensors" --out "$tmp/only.safetensors" >"$tmp/only.log" 2>&1
expect "--only quantizes just the match" test "$(grep -c 'nf4-b64' "$tmp/only.log")" -eq 1
"$q" --scheme nf4 --skip 'mlp' --in "$tmp/model.safetensors" --out "$tmp/skip.safetensors" >"$tmp/skip.log" 2>&1
expect "--skip leaves the matches alone" test "$(grep -c 'nf4-b64' "$tmp/skip.log")" -eq 2

fails_cleanly() {  # name, expected text in stderr, output path, args...
  local what="$1" text="$2" out="$3"; shift 3
  "$q" "$@" >"$tmp/f.out" 2>"$tmp/f.err"; local rc=$?
  expect "$what: non-zero exit" test "$rc" -ne 0
  expect "$what: message names '$text'" contains "$tmp/f.err" "$text"
  expect "$what: no output file" test ! -e "$out"
  expect "$what: no temp file left" test -z "$(ls "$tmp" | grep '\.tmp\.')"
}
fails_cleanly "empty tensor" "empty2d.safetensors: tensor 'w'" "$tmp/o1.safetensors" --in "$tmp/empty2d.safetensors" --out "$tmp/o1.safetensors"
fails_cleanly "truncated file" "truncated.safetensors" "$tmp/o2.safetensors" --in "$tmp/truncated.safetensors" --out "$tmp/o2.safetensors"
fails_cleanly "header past EOF" "bad_header.safetensors" "$tmp/o3.safetensors" --in "$tmp/bad_header.safetensors" --out "$tmp/o3.safetensors"
fails_cleanly "missing input" "nope.safetensors" "$tmp/o4.safetensors" --in "$tmp/nope.safetensors" --out "$tmp/o4.safetensors"
fails_cleanly "unknown scheme" "nf3" "$tmp/o5.safetensors" --scheme nf3 --in "$tmp/model.safetensors" --out "$tmp/o5.safetensors"
fails_cleanly "bad block size" "48" "$tmp/o6.safetensors" --blocksize 48 --in "$tmp/model.safetensors" --out "$tmp/o6.safetensors"
fails_cleanly "unknown flag" "--frobnicate" "$tmp/o7.safetensors" --frobnicate --in "$tmp/model.safetensors" --out "$tmp/o7.safetensors"
fails_cleanly "dequantize a plain file" "no bitsandbytes 4-bit weight" "$tmp/o8.safetensors" --dequantize --in "$tmp/model.safetensors" --out "$tmp/o8.safetensors"
fails_cleanly "--only names an integer tensor" "tensor 'ids' matches --only but is I32" "$tmp/o10.safetensors" --only '^ids$' --in "$tmp/model.safetensors" --out "$tmp/o10.safetensors"
fails_cleanly "bad regex" "regex" "$tmp/o9.safetensors" --only '(' --in "$tmp/model.safetensors" --out "$tmp/o9.safetensors"

"$q" --help >"$tmp/help" 2>&1
expect "--help exits 0" test $? -eq 0
for flag in --scheme --blocksize --double-quant --only --skip --dequantize --threads --seed; do
  expect "--help lists $flag" contains "$tmp/help" "$flag"
done
expect "--help shows the default block size" contains "$tmp/help" "blocksize arg (=64)"
finish
