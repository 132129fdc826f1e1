#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# quantize: round trips through bnb's 4-bit layout, --only/--skip, and clear failures with no partial output;
# directory mode: an HF model directory in, a pre-quantized one out (atomic, refuses an existing output).
set -u
build="$1"; fixtures="$2"; shared="$3"
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

# ---- directory mode ---------------------------------------------------------------------------------------
"$build/experiments/convert" --in "$shared/models/stories260K.bin" --out "$tmp/hf" >/dev/null 2>&1 || bad "convert stories260K to an HF directory"
sums() { (cd "$1" && cat ./* | cksum); }
expect "dir: quantize exits 0" "$q" --in "$tmp/hf" --out "$tmp/out/nf4" --scheme nf4 --double-quant >"$tmp/dir.log" 2>&1
expect "dir: the 35 linear weights quantized, 12 tensors kept" contains "$tmp/dir.log" "the 35 linear weights to nf4-b64-dq, the other 12 tensors kept in F32"
expect "dir: config.json asks for bitsandbytes nf4" contains "$tmp/out/nf4/config.json" '"bnb_4bit_quant_type": "nf4"'
expect "dir: ... with double quantization" contains "$tmp/out/nf4/config.json" '"bnb_4bit_use_double_quant": true'
expect "dir: one weight file, bnb's keys" contains "$tmp/out/nf4/model.safetensors" 'q_proj.weight.quant_state.bitsandbytes__nf4'
expect "dir: the embedding stays float" contains "$tmp/out/nf4/model.safetensors" '"model.embed_tokens.weight":{"dtype":"F32"'
expect "dir: reads back (convert dequantizes it)" "$build/experiments/convert" --in "$tmp/out/nf4" --out "$tmp/deq"
before=$(sums "$tmp/out/nf4")
"$q" --in "$tmp/hf" --out "$tmp/out/nf4" --scheme fp4 >"$tmp/f.out" 2>"$tmp/f.err"
expect "dir: an existing output is refused" test $? -ne 0
expect "dir: ... saying so and naming --overwrite" contains "$tmp/f.err" "out/nf4: already exists (pass --overwrite"
expect "dir: ... and left as it was" test "$(sums "$tmp/out/nf4")" = "$before"
expect "dir: --overwrite replaces it" "$q" --in "$tmp/hf" --out "$tmp/out/nf4" --scheme fp4 --overwrite >/dev/null 2>&1
expect "dir: ... with the fp4 model" contains "$tmp/out/nf4/config.json" '"bnb_4bit_quant_type": "fp4"'
expect "dir: ... without double quantization" contains "$tmp/out/nf4/config.json" '"bnb_4bit_use_double_quant": false'
expect "dir: no partial or old directory left" test -z "$(ls -a "$tmp/out" | grep -e partial -e old)"

dir_fails_cleanly() {  # name, expected text in stderr, args...
  local what="$1" text="$2"; shift 2
  "$q" "$@" >"$tmp/f.out" 2>"$tmp/f.err"; local rc=$?
  expect "$what: non-zero exit" test "$rc" -ne 0
  expect "$what: message names '$text'" contains "$tmp/f.err" "$text"
  expect "$what: no output directory" test ! -e "$tmp/out/bad"
  expect "$what: no partial directory left" test -z "$(ls -a "$tmp/out" | grep partial)"
}
cp -r "$tmp/hf" "$tmp/hf-trunc"; head -c 100000 "$tmp/hf/model.safetensors" >"$tmp/hf-trunc/model.safetensors"
dir_fails_cleanly "dir: truncated weights" "hf-trunc/model.safetensors" --in "$tmp/hf-trunc" --out "$tmp/out/bad"
cp -r "$tmp/hf" "$tmp/hf-noconfig"; rm "$tmp/hf-noconfig/config.json"
dir_fails_cleanly "dir: no config.json" "hf-noconfig/config.json" --in "$tmp/hf-noconfig" --out "$tmp/out/bad"
dir_fails_cleanly "dir: already quantized input" "already quantized (fp4)" --in "$tmp/out/nf4" --out "$tmp/out/bad"
dir_fails_cleanly "dir: --only is for files" "--only/--skip apply to a single file" --only q_proj --in "$tmp/hf" --out "$tmp/out/bad"
dir_fails_cleanly "dir: a block size other than bnb's 64" "quantized with block 64" --blocksize 128 --in "$tmp/hf" --out "$tmp/out/bad"
dir_fails_cleanly "dir: --dequantize of a directory" "convert --in DIR" --dequantize --in "$tmp/out/nf4" --out "$tmp/out/bad"

"$q" --help >"$tmp/help" 2>&1
expect "--help exits 0" test $? -eq 0
for flag in --scheme --blocksize --double-quant --only --skip --dequantize --overwrite --threads --seed; do
  expect "--help lists $flag" contains "$tmp/help" "$flag"
done
expect "--help shows the default block size" contains "$tmp/help" "blocksize arg (=64)"
finish
