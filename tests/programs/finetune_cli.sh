#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# finetune on stories260K: LoRA and QLoRA runs write PEFT files and HF-style logs; --resume continues the loss
# curve bit for bit; bad flags and bad data are refused before any work starts.
set -u
build="$1"; shared="$3"
. "$(dirname "$0")/lib.sh"
ft="$build/experiments/finetune"; M="$shared/models"; D="$shared/data"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
model=(--model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --batch-size 4)
quotes=(--data "$D/english_quotes.jsonl" --format quotes --seq-len 64)
base=("${model[@]}" "${quotes[@]}")

"$ft" "${base[@]}" --output-dir "$tmp/lora" --max-steps 8 --logging-steps 2 --val-size 20 >"$tmp/lora.log" 2>&1
expect "LoRA run exits 0" test $? -eq 0
expect "prints PEFT's trainable line" contains "$tmp/lora.log" "trainable params: 8,960 || all params: 268,992 || trainable%: 3.3310"
expect "prints the memory report before training" contains "$tmp/lora.log" "memory: weights"
expect "logs like HF Trainer" grep -Eq "^\{'loss': [0-9.]+, 'grad_norm': [0-9.e-]+, 'learning_rate': [0-9.e-]+, 'epoch': [0-9.e-]+\}$" "$tmp/lora.log"
expect "closing summary" contains "$tmp/lora.log" "'train_runtime'"
for f in adapter_config.json adapter_model.safetensors metrics.jsonl run.json; do expect "writes $f" test -s "$tmp/lora/$f"; done
expect "metrics.jsonl has 4 log lines and an eval line" test "$(wc -l <"$tmp/lora/metrics.jsonl")" -eq 5

"$ft" "${base[@]}" --output-dir "$tmp/q" --max-steps 6 --quant nf4 --double-quant --save-steps 3 --logging-steps 1 >"$tmp/q.log" 2>&1
expect "QLoRA run exits 0" test $? -eq 0
expect "QLoRA turns gradient checkpointing on" contains "$tmp/q.log" "gradient checkpointing on"
expect "checkpoint-3 holds adapter, optimizer and trainer state" test -s "$tmp/q/checkpoint-3/optimizer.safetensors" -a -s "$tmp/q/checkpoint-3/trainer_state.json" -a -s "$tmp/q/checkpoint-3/adapter_model.safetensors"
cp -r "$tmp/q" "$tmp/q2"; rm -rf "$tmp/q2/checkpoint-6" "$tmp/q2/adapter_model.safetensors"
"$ft" "${base[@]}" --output-dir "$tmp/q2" --max-steps 6 --quant nf4 --double-quant --save-steps 3 --logging-steps 1 --resume >"$tmp/q2.log" 2>&1
expect "--resume continues from checkpoint-3" contains "$tmp/q2.log" "checkpoint-3"
expect "the resumed loss curve is the uninterrupted one, bit for bit" python3 -c "
import json,sys; a=json.load(open('$tmp/q/run.json'))['step_losses']; b=json.load(open('$tmp/q2/run.json'))['step_losses']; sys.exit(a!=b)"

refused() {  # what, expected text, extra args...
  local what="$1" text="$2"; shift 2
  "$ft" "${model[@]}" --output-dir "$tmp/bad" --max-steps 2 "$@" >"$tmp/f.out" 2>"$tmp/f.err"; local rc=$?
  expect "$what: non-zero exit" test "$rc" -ne 0
  expect "$what: says '$text'" grep -qF -- "$text" "$tmp/f.err"
  expect "$what: nothing written" test ! -e "$tmp/bad/run.json"
}
refused "r = 0" "--r (LoRA rank) must be > 0" --r 0 "${quotes[@]}"
refused "alpha < 0" "--alpha" --alpha -2 "${quotes[@]}"
refused "dropout = 1" "--dropout must be in [0, 1)" --dropout 1 "${quotes[@]}"
refused "unknown target" "unknown target module 'qkv_proj'" --targets qkv_proj "${quotes[@]}"
refused "unknown optimizer" "adamw8bit" --optim lion "${quotes[@]}"
refused "unknown scheduler" "cosine" --scheduler wavy "${quotes[@]}"
refused "unknown format" "alpaca" --data "$D/english_quotes.jsonl" --format csv
refused "unknown flag" "--frobnicate" --frobnicate "${quotes[@]}"
refused "sequence longer than the context" "context" --seq-len 4096 --data "$D/english_quotes.jsonl" --format quotes
printf '{"quote": "a"}\n{"quote": \n' > "$tmp/broken.jsonl"
refused "malformed record" "broken.jsonl:2" --data "$tmp/broken.jsonl" --format quotes
: > "$tmp/empty.jsonl"
refused "empty dataset" "empty.jsonl" --data "$tmp/empty.jsonl" --format quotes
printf '[{"instruction": "%s", "input": "", "output": "yes"}]\n' "$(python3 -c "print('word ' * 300)")" > "$tmp/long.json"
refused "no trainable tokens after truncation" "no trainable tokens" --data "$tmp/long.json" --format alpaca
finish
