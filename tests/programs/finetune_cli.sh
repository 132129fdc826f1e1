#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# finetune on stories260K: LoRA and QLoRA runs write PEFT files and HF-style logs; --resume continues the loss
# curve bit for bit (also after a real SIGINT); a terminal gets a progress bar, a file does not; early stopping
# stops at the first evaluation without improvement; adamw8bit's planned state is bnb's blockwise size; the
# storage census tells float32 from packed 4-bit; bad flags and bad data are refused before any work starts.
set -u
build="$1"; shared="$3"
. "$(dirname "$0")/lib.sh"
ft="$build/experiments/finetune"; M="$shared/models"; D="$shared/data"
bg=""  # a finetune running in the background (the SIGINT check): killed if the script stops before it is reaped
tmp=$(mktemp -d); trap 'if [ -n "$bg" ]; then kill -KILL "$bg" 2>/dev/null; wait "$bg" 2>/dev/null; fi; rm -rf "$tmp"' EXIT
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
expect "LoRA storage census: all float32, 32 bits per frozen weight" grep -qxF \
  "storage: float32 268,992 (1.0000); frozen linears: 226,560 weights in 0.864 MiB = 32.000 bits/weight" "$tmp/lora.log"

"$ft" "${base[@]}" --output-dir "$tmp/q" --max-steps 6 --quant nf4 --double-quant --save-steps 3 --logging-steps 1 >"$tmp/q.log" 2>&1
expect "QLoRA run exits 0" test $? -eq 0
expect "QLoRA turns gradient checkpointing on" contains "$tmp/q.log" "gradient checkpointing on"
expect "QLoRA storage census: float32 and uint8 (packed nf4), bits per frozen weight" \
  grep -qE '^storage: float32 [0-9,]+ \([0-9.]+\) \| uint8 [0-9,]+ \([0-9.]+\); frozen linears: .* = [0-9.]+ bits/weight$' "$tmp/q.log"
expect "checkpoint-3 holds adapter, optimizer and trainer state" test -s "$tmp/q/checkpoint-3/optimizer.safetensors" -a -s "$tmp/q/checkpoint-3/trainer_state.json" -a -s "$tmp/q/checkpoint-3/adapter_model.safetensors"
cp -r "$tmp/q" "$tmp/q2"; rm -rf "$tmp/q2/checkpoint-6" "$tmp/q2/adapter_model.safetensors"
"$ft" "${base[@]}" --output-dir "$tmp/q2" --max-steps 6 --quant nf4 --double-quant --save-steps 3 --logging-steps 1 --resume >"$tmp/q2.log" 2>&1
expect "--resume continues from checkpoint-3" contains "$tmp/q2.log" "checkpoint-3"
expect "the resumed loss curve is the uninterrupted one, bit for bit" python3 -c "
import json,sys; a=json.load(open('$tmp/q/run.json'))['step_losses']; b=json.load(open('$tmp/q2/run.json'))['step_losses']; sys.exit(a!=b)"
for f in lora q q2; do
  expect "no progress bar when stdout is a file ($f.log)" test -z "$(grep -E '\[[0-9]+/[0-9]+\] loss|'$'\r' "$tmp/$f.log")"
done

# A progress bar when stdout is a terminal: util-linux script(1) gives the run a pseudo-terminal.
if command -v script >/dev/null; then
  script -qec "$(printf '%q ' "$ft" "${base[@]}" --output-dir "$tmp/tty" --max-steps 3 --logging-steps 1)" /dev/null \
    </dev/null >"$tmp/tty.log" 2>&1
  expect "run under a pseudo-terminal exits 0" test $? -eq 0
  expect "progress bar on a terminal" grep -qF $'\r[3/3] loss ' "$tmp/tty.log"
else
  echo "skip: progress bar on a terminal (no script(1))"
fi

# A real SIGINT: the step in flight finishes, checkpoint-N is saved, no final adapter, exit 130; --resume goes on bit for
# bit. The constant schedule keeps the learning rate of step s independent of --max-steps (400 here, N + 5 below).
sig=(--logging-steps 1 --save-steps 1000 --scheduler constant)
"$ft" "${base[@]}" --output-dir "$tmp/int" --max-steps 400 "${sig[@]}" >"$tmp/int.log" 2>&1 &
bg=$!
for ((i = 0; i < 1200; ++i)); do  # up to 120 s: until 3 steps are logged (or the run is gone)
  [ "$(cat "$tmp/int/metrics.jsonl" 2>/dev/null | wc -l)" -ge 3 ] || ! kill -0 "$bg" 2>/dev/null && break
  sleep 0.1
done
kill -INT "$bg" 2>/dev/null; wait "$bg"; rc=$?; bg=""
expect "SIGINT: finetune exits 130, as a shell reports an interrupt (got $rc)" test "$rc" -eq 130
n=$(sed -n 's/^interrupted at step \([0-9][0-9]*\): checkpoint saved$/\1/p' "$tmp/int.log")
expect "SIGINT: says 'interrupted at step N: checkpoint saved' (N = ${n:-none}, >= 3, < 400)" test "${n:-0}" -ge 3 -a "${n:-0}" -lt 400
expect "SIGINT: checkpoint-N is complete and the only one" test -s "$tmp/int/checkpoint-$n/trainer_state.json" -a -s \
  "$tmp/int/checkpoint-$n/optimizer.safetensors" -a "$(ls -d "$tmp"/int/checkpoint-* | wc -l)" -eq 1
expect "SIGINT: no final adapter in OUTPUT" test ! -e "$tmp/int/adapter_model.safetensors"
expect "SIGINT: run.json says interrupted after N steps" python3 -c "
import json,sys; j=json.load(open('$tmp/int/run.json')); sys.exit(not (j['interrupted'] is True and len(j['step_losses']) == $n))"
m=$((n + 5))
"$ft" "${base[@]}" --output-dir "$tmp/int" --max-steps "$m" "${sig[@]}" --resume >"$tmp/int2.log" 2>&1
expect "SIGINT: --resume exits 0" test $? -eq 0
expect "SIGINT: --resume continues from checkpoint-N" grep -qF "checkpoint-$n\" (step $n)" "$tmp/int2.log"
"$ft" "${base[@]}" --output-dir "$tmp/ref" --max-steps "$m" "${sig[@]}" >"$tmp/ref.log" 2>&1
expect "SIGINT: the interrupted + resumed loss curve is the uninterrupted one, bit for bit" python3 -c "
import json,sys; a=json.load(open('$tmp/ref/run.json'))['step_losses']; b=json.load(open('$tmp/int/run.json'))['step_losses']
sys.exit(not (a == b and len(a) == $m))"
expect "SIGINT: metrics.jsonl after --resume logs steps 1..N+5 once each" python3 -c "
import json,sys; s=[json.loads(l)['step'] for l in open('$tmp/int/metrics.jsonl')]; sys.exit(s != list(range(1, $m + 1)))"

# Early stopping: patience 1 stops at the first evaluation without improvement. --lr must be > 0, so 1e-20
# stands for 0: B moves to ~1e-20 and no activation notices, the eval loss stays the same and step 4 stops.
"$ft" "${base[@]}" --output-dir "$tmp/es" --lr 1e-20 --scheduler constant --val-size 20 --eval-steps 2 \
  --early-stopping-patience 1 --max-steps 20 >"$tmp/es.log" 2>&1
expect "early stopping: exits 0" test $? -eq 0
expect "early stopping: run.json has stopped_early and 4 step losses" python3 -c "
import json,sys; j=json.load(open('$tmp/es/run.json')); sys.exit(not (j['stopped_early'] is True and len(j['step_losses']) == 4))"
expect "early stopping: one eval at step 2 and one at step 4, same loss, nothing after step 4" python3 -c "
import json,sys; rows=[json.loads(l) for l in open('$tmp/es/metrics.jsonl')]; ev=[(r['step'], r['eval_loss']) for r in rows if 'eval_loss' in r]
sys.exit(not ([s for s, _ in ev] == [2, 4] and ev[0][1] == ev[1][1] and max(r['step'] for r in rows) == 4))"
expect "early stopping: checkpoint-4 and the final adapter" test -s "$tmp/es/checkpoint-4/trainer_state.json" -a -s "$tmp/es/adapter_model.safetensors"
# HF's early stopping requires load_best_model_at_end: the final adapter is step 2's (the best), not step 4's
expect "early stopping: the final adapter is the best one (OUTPUT/best, step 2)" cmp -s "$tmp/es/best/adapter_model.safetensors" "$tmp/es/adapter_model.safetensors"
expect "early stopping: ... which is not step 4's" test -n "$(cmp "$tmp/es/checkpoint-4/adapter_model.safetensors" "$tmp/es/adapter_model.safetensors" 2>&1)"
expect "early stopping: says so" grep -qF "early stopping: the final adapter is the best one" "$tmp/es.log"

# adamw8bit: bnb's blockwise state, 2 bytes per element + 2 float32 absmax per 256-block, for tensors of at least
# 4096 elements (smaller ones keep 2 float32, like adamw's 8 bytes). r 64 on all-linear: the k/v lora_B (32 x 64)
# stay 32-bit, everything else is 8-bit.
for o in adamw adamw8bit; do
  "$ft" "${base[@]}" --output-dir "$tmp/$o" --targets all-linear --r 64 --max-steps 2 --logging-steps 1 --optim "$o" >"$tmp/$o.log" 2>&1
  expect "$o run exits 0" test $? -eq 0
done
read -r n_params n_commas opt32 want32 opt8 want8 mib32 mib8 < <(python3 -c "
import json,math,struct
f=open('$tmp/adamw8bit/adapter_model.safetensors','rb'); h=json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
sizes=[math.prod(v['shape']) for k,v in h.items() if k != '__metadata__']
a=json.load(open('$tmp/adamw/run.json'))['memory']['optimizer']; b=json.load(open('$tmp/adamw8bit/run.json'))['memory']['optimizer']
print(sum(sizes), f'{sum(sizes):,}', a, 8*sum(sizes), b, sum(2*n + 8*((n+255)//256) if n >= 4096 else 8*n for n in sizes), f'{a/2**20:.3f}', f'{b/2**20:.3f}')")
expect "adamw8bit: the adapter's elements are the trainable params (${n_params:-?})" \
  grep -qF "trainable params: ${n_commas:-none} ||" "$tmp/adamw8bit.log"
expect "adamw: optimizer state = 8 bytes per parameter (${opt32:-?} = ${want32:-?})" test "${opt32:-x}" = "${want32:-y}"
expect "adamw8bit: optimizer state = bnb blockwise size (${opt8:-?} = ${want8:-?})" test "${opt8:-x}" = "${want8:-y}"
expect "adamw8bit: optimizer state < 0.3 x adamw's" python3 -c "import sys; sys.exit(not ${opt8:-1} < 0.3 * ${opt32:-0})"
expect "memory report lines show both optimizer sizes (${mib32:-?} vs ${mib8:-?} MiB)" \
  test "${mib32:-x}" != "${mib8:-x}" -a -n "$(grep -F "optimizer $mib32 MiB" "$tmp/adamw.log")" -a -n "$(grep -F "optimizer $mib8 MiB" "$tmp/adamw8bit.log")"

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
refused "lr = 0" "--lr must be a finite value > 0" --lr 0 "${quotes[@]}"
refused "negative warmup" "--warmup-steps must be >= 0" --warmup-steps -1 "${quotes[@]}"
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
