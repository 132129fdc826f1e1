#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# lora_vs_qlora on its embedded default (stories260K from the repository's models/, Debian's fortunes), at two
# small sizes: run from a folder without models/, it finds them next to the program; the table, CSV, JSON and
# figure hold one LoRA and one QLoRA row per size; both methods lower the eval loss; the same seed gives the same
# losses; bad flags and missing files are refused before any work, with messages that name the flag or the file.
set -u
build="$(cd "$1" && pwd)"  # absolute: the runs below start in other folders
. "$(dirname "$0")/lib.sh"
prog="$build/experiments/lora_vs_qlora"; M="$(cd "$(dirname "$0")/../.." && pwd)/models"
fortunes=/usr/share/games/fortunes/fortunes
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ ! -f "$fortunes" ]; then bad "the default data $fortunes is missing (scripts/setup.sh installs fortunes-min)"; finish; exit; fi
small=(--sizes 16,32 --epochs 1 --val-size 16 --threads 2)
quick=(--epochs 1 --val-size 16)  # for the refusals, which set one of --sizes/--epochs/--val-size themselves

# The default model, found through the program's location: the current folder has no models/.
mkdir -p "$tmp/a" "$tmp/b"
(cd "$tmp/a" && "$prog" "${small[@]}" --output-dir out >run.log 2>&1)
expect "default run exits 0" test $? -eq 0
expect "finds models/stories260K.bin next to the program" python3 -c "
import json,os,sys; j=json.load(open('$tmp/a/out/lora_vs_qlora.json'))['config']
sys.exit(os.path.realpath(j['model']) != os.path.realpath('$M/stories260K.bin'))"
expect "prints the dataset and model configs" test -n "$(grep "^dataset_config{" "$tmp/a/run.log")" -a \
  -n "$(grep "^llama_config{" "$tmp/a/run.log")"
expect "prints PEFT's trainable-parameter line" contains "$tmp/a/run.log" "^trainable params: [0-9,]* || all params"
expect "table header" contains "$tmp/a/run.log" "^| size | method | steps | time s |"
expect "table has 4 rows: LoRA and QLoRA at 16 and 32" \
  test "$(grep -cE '^\| (16|32) +\| (LoRA|QLoRA) +\|' "$tmp/a/run.log")" -eq 4
expect "closing sentence at the largest size" contains "$tmp/a/run.log" "^At N=32, QLoRA's eval loss is"
expect "CSV: header + 4 rows" test "$(wc -l <"$tmp/a/out/lora_vs_qlora.csv")" -eq 5 -a \
  "$(head -c 12 "$tmp/a/out/lora_vs_qlora.csv")" = "size,method,"
expect "JSON: both methods at each size, with step losses, checkpointing only for QLoRA" python3 -c "
import json,sys; j=json.load(open('$tmp/a/out/lora_vs_qlora.json')); r=j['runs']
ok = sorted((x['size'], x['method']) for x in r) == [(16,'LoRA'),(16,'QLoRA'),(32,'LoRA'),(32,'QLoRA')]
ok &= all(len(x['step_losses']) == x['steps'] > 0 and x['gradient_checkpointing'] == (x['method'] == 'QLoRA') for x in r)
sys.exit(not (ok and 'config' in j))"
expect "each run keeps its adapter and run.json" test -s "$tmp/a/out/N32/lora/adapter_model.safetensors" -a \
  -s "$tmp/a/out/N32/qlora/run.json" -a -s "$tmp/a/out/N16/qlora/adapter_config.json"
if command -v gnuplot >/dev/null; then
  expect "PNG written" test -s "$tmp/a/out/lora_vs_qlora.png"
else
  echo "skip: PNG (no gnuplot)"
fi
expect "both methods lower the eval loss at N=32; QLoRA's base starts higher, its linears take fewer bits" python3 -c "
import json,sys; r={x['method']: x for x in json.load(open('$tmp/a/out/lora_vs_qlora.json'))['runs'] if x['size'] == 32}
sys.exit(not (all(x['eval_loss_after'] < x['eval_loss_before'] for x in r.values())
              and r['QLoRA']['eval_loss_before'] > r['LoRA']['eval_loss_before']
              and r['QLoRA']['linear_bits_per_weight'] < 6 < 32 == r['LoRA']['linear_bits_per_weight']))"

# The same seed again, with the model named: the same losses (times differ, so only the loss columns count).
(cd "$tmp/b" && "$prog" "${small[@]}" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --output-dir out >run.log 2>&1)
expect "second run exits 0" test $? -eq 0
expect "same seed: identical CSV loss columns and JSON step losses" python3 -c "
import csv,json,sys
cols = ['size', 'method', 'steps', 'eval loss before', 'eval loss after', 'gap vs LoRA %']
a, b = ([[row[c] for c in cols] for row in csv.DictReader(open(d + '/out/lora_vs_qlora.csv'))] for d in ('$tmp/a', '$tmp/b'))
la, lb = ([x['step_losses'] for x in json.load(open(d + '/out/lora_vs_qlora.json'))['runs']] for d in ('$tmp/a', '$tmp/b'))
sys.exit(not (a == b and len(a) == 4 and la == lb))"

refused() {  # what, expected text, extra args...
  local what="$1" text="$2"; shift 2
  (cd "$tmp/a" && "$prog" "$@" --output-dir bad >f.out 2>f.err); local rc=$?
  expect "$what: non-zero exit" test "$rc" -ne 0
  expect "$what: says '$text'" grep -qF -- "$text" "$tmp/a/f.err"
  expect "$what: nothing written" test ! -e "$tmp/a/bad"
}
refused "--sizes 0" "--sizes: a training set needs at least 1 record" "${quick[@]}" --sizes 0
refused "--sizes larger than the train split" "--sizes 100000 is larger than the train split: 415" "${quick[@]}" --sizes 16,100000
refused "--sizes abc" "--sizes must be a comma list of record counts > 0 or 'all', got 'abc'" "${quick[@]}" --sizes abc
refused "--epochs 0" "--epochs must be > 0" --sizes 16 --epochs 0
refused "--val-size 0" "--val-size must be > 0" --sizes 16 --val-size 0
refused "--lr 0" "--lr must be a finite value > 0" "${small[@]}" --lr 0
refused "unknown flag" "--frobnicate" "${small[@]}" --frobnicate
refused "missing data file" "$tmp/nope.txt: no such file or directory (--data)" "${small[@]}" --data "$tmp/nope.txt"
refused "missing model file" "$tmp/none.bin: no such file or directory (--model)" "${small[@]}" --model "$tmp/none.bin"
# A copy of the program in a folder with no ../../models/: the error names both places it looked.
mkdir -p "$tmp/x/y/z" && cp "$prog" "$tmp/x/y/z/"
(cd "$tmp/a" && "$tmp/x/y/z/lora_vs_qlora" "${small[@]}" --output-dir bad >f.out 2>f.err); rc=$?
expect "no default model: non-zero exit" test "$rc" -ne 0
expect "no default model: names both tried paths" grep -qF \
  "the default stories260K.bin is in neither $tmp/a/models/stories260K.bin (from the current directory) nor $tmp/x/models/stories260K.bin (from the program)" "$tmp/a/f.err"
finish
