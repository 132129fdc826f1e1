#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# quant_ablation: the table, the QLoRA claims it must show, CSV and plot, determinism per seed, real weights.
set -u
build="$1"; fixtures="$2"; shared="$3"
. "$(dirname "$0")/lib.sh"
a="$build/experiments/quant_ablation"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$a" --rows 512 --cols 1024 --seed 7 --out-dir "$tmp/r1" >"$tmp/r1.log" 2>&1
expect "exits 0" test $? -eq 0
expect "NF4 beats FP4 at every block size" contains "$tmp/r1.log" "NF4 beats FP4 at every block size: yes"
# 512x1024: the per-tensor DQ constants (offset + 256-entry map, 8224 bits) cost 0.0157 bits/param: 0.357 saved
expect "DQ saving printed" contains "$tmp/r1.log" "double quantization at block 64 saves 0.35"
expect "CSV has a header and 31 rows" test "$(wc -l <"$tmp/r1/quant_ablation.csv")" -eq 32
if command -v gnuplot >/dev/null; then expect "plot written" test -s "$tmp/r1/quant_ablation.png"; fi

"$a" --rows 4096 --cols 4096 --seed 7 --out-dir "$tmp/big" >"$tmp/big.log" 2>&1
expect "at 4096x4096 DQ saves 0.373 bits/param (QLoRA's number)" contains "$tmp/big.log" "saves 0.372[0-9] bits/param"

"$a" --rows 512 --cols 1024 --seed 7 --out-dir "$tmp/r2" >/dev/null 2>&1
expect "same seed, same CSV" cmp -s "$tmp/r1/quant_ablation.csv" "$tmp/r2/quant_ablation.csv"
"$a" --rows 512 --cols 1024 --seed 8 --out-dir "$tmp/r3" >/dev/null 2>&1
expect "other seed, other numbers" bash -c "! cmp -s '$tmp/r1/quant_ablation.csv' '$tmp/r3/quant_ablation.csv'"

"$fixtures" make "$tmp/fx"
"$a" --weights "$tmp/fx/model.safetensors" --out-dir "$tmp/w" >"$tmp/w.log" 2>&1
expect "--weights on a real file exits 0" test $? -eq 0
expect "--weights reports 4 tensors" contains "$tmp/w.log" "4 tensor(s)"
"$a" --weights "$tmp/fx/truncated.safetensors" --out-dir "$tmp/w2" >"$tmp/w2.log" 2>&1
expect "--weights on a truncated file fails" test $? -ne 0
expect "... naming the file" contains "$tmp/w2.log" "truncated.safetensors"
M="$shared/models"
head -c 3000 "$shared/data/tinystories_validation_100.txt" >"$tmp/text.txt"
"$a" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --text-file "$tmp/text.txt" --out-dir "$tmp/m" >"$tmp/m.log" 2>&1
expect "--model exits 0" test $? -eq 0
expect "--model ablates the 35 linear layers" contains "$tmp/m.log" "35 tensor(s), 226560 parameters"
expect "--model reports the float perplexity" contains "$tmp/m.log" "float32 perplexity"
expect "--model adds a perplexity column" contains "$tmp/m/quant_ablation.csv" "perplexity"
ppl() { grep "^| $1 " "$tmp/m.log" | awk -F'|' '{gsub(/ /,"",$10); print $10}'; }
expect "nf4-b64 perplexity ($(ppl nf4-b64)) below fp4-b64 ($(ppl fp4-b64))" python3 -c "import sys; sys.exit(not ($(ppl nf4-b64) < $(ppl fp4-b64)))"
"$a" --model "$M/stories260K.bin" >"$tmp/m2.log" 2>&1
expect "--model without --tokenizer is refused" test $? -ne 0
expect "... saying what is missing" contains "$tmp/m2.log" "needs --tokenizer and --text-file"
"$a" --rows 0 >"$tmp/z.log" 2>&1
expect "--rows 0 is refused" test $? -ne 0
finish
