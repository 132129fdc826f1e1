#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Faults during training and saving, with finetune on stories260K:
#   - kill -9 at random moments of a run with --save-steps (FAULT_KILLS kills, default 6 in CTest; the README's
#     local loop runs this script 20+ times): every visible checkpoint-N is complete (its manifest.json matches),
#     --resume continues from the newest one, and the final adapter equals an uninterrupted run's byte for byte;
#   - a full disk while saving (RLIMIT_FSIZE via ulimit -f, SIGXFSZ ignored): the run stops naming the checkpoint
#     and the reason, the previous checkpoint stays complete, no partial directory is left, and resuming once there
#     is space again gives the uninterrupted run's adapter;
#   - a checkpoint damaged afterwards (truncated tensor file, edited JSON): --resume names the file and refuses;
#     --resume-from the older checkpoint continues, and only then;
#   - NaN/Inf in the base weights, in an adapter's weights (the step and tensor named, nothing saved) and in a
#     checkpoint's optimizer state or adapter: refused by name.
# FAULT_SEED=N replays one sequence of kill delays (the seed is printed).
set -u
build="$1"; shared="$3"
. "$(dirname "$0")/lib.sh"
ft="$build/experiments/finetune"; M="$shared/models"; D="$shared/data"
bg=""
tmp=$(mktemp -d); trap 'if [ -n "$bg" ]; then kill -KILL "$bg" 2>/dev/null; wait "$bg" 2>/dev/null; fi; rm -rf "$tmp"' EXIT
seed=${FAULT_SEED:-$((RANDOM * 32768 + RANDOM))}; RANDOM=$seed
kills=${FAULT_KILLS:-6}
echo "kill delays: FAULT_SEED=$seed, $kills kills"
rest=(--tokenizer "$M/tok512.model" --batch-size 4 --data "$D/english_quotes.jsonl" --format quotes --seq-len 64
      --export-base none --threads 1 --logging-steps 1)
base=(--model "$M/stories260K.bin" "${rest[@]}")
run=("${base[@]}" --max-steps 16 --save-steps 2)

steps_once() { python3 -c "
import json,sys; s=[json.loads(l)['step'] for l in open('$1/metrics.jsonl')]; sys.exit(s != list(range(1, $2 + 1)))"; }

# ---- the uninterrupted reference
"$ft" "${run[@]}" --output-dir "$tmp/ref" >"$tmp/ref.log" 2>&1
expect "reference run exits 0" test $? -eq 0

# ---- kill -9 at random moments; --resume after each
out="$tmp/k"; resumed=0
for ((i = 1; i <= kills; ++i)); do
  want=$(newest "$out")
  flag=(); [ -d "$out" ] && flag=(--resume)
  "$ft" "${run[@]}" --output-dir "$out" "${flag[@]}" >"$tmp/k$i.log" 2>&1 & bg=$!
  # the moment: after a random number of logged steps (from the checkpoint it resumes at to the end), then a random
  # 0-99 ms more, so kills fall in start-up, steps, saves and the final write alike
  k=$(( ${want:-0} + RANDOM % (17 - ${want:-0}) )); d=$((RANDOM % 100))
  for ((w = 0; w < 6000; ++w)); do  # up to 60 s
    # a resumed run counts once it has said where it resumes (metrics.jsonl is cut back to that step right after)
    { { [ ${#flag[@]} -eq 0 ] || grep -q '^resume: ' "$tmp/k$i.log"; } &&
      [ "$(cat "$out/metrics.jsonl" 2>/dev/null | wc -l)" -ge "$k" ]; } || ! kill -0 "$bg" 2>/dev/null && break
    sleep 0.01
  done
  sleep "0.0$((d / 10))$((d % 10))"
  kill -KILL "$bg" 2>/dev/null; wait "$bg" 2>/dev/null; bg=""
  d="step $k + $d ms"
  got=$(sed -n 's/^resume: continuing from ".*checkpoint-\([0-9]*\)" (step [0-9]*)$/\1/p' "$tmp/k$i.log" 2>/dev/null)
  if [ -n "$got" ]; then
    resumed=$((resumed + 1))
    expect "kill $i (at $d): --resume took the newest checkpoint (checkpoint-$got, newest was ${want:-none})" test "$got" = "$want"
  fi
  msg=$(intact "$out")
  expect "kill $i: every visible checkpoint is complete ${msg}" test -z "$msg"
  echo "  after kill $i: checkpoints $(ls "$out" 2>/dev/null | grep -c '^checkpoint-'), newest ${want:-none} -> $(newest "$out"), leftovers: $(ls -A "$out" 2>/dev/null | grep -cE 'partial|\.tmp\.')"
done
want=$(newest "$out")
"$ft" "${run[@]}" --output-dir "$out" --resume >"$tmp/kfinal.log" 2>&1
expect "after $kills kills ($resumed resumed from a checkpoint): the last --resume exits 0" test $? -eq 0
if [ -n "$want" ]; then
  expect "the last --resume continues from the newest checkpoint-$want" grep -qF "checkpoint-$want\" (step $want)" "$tmp/kfinal.log"
fi
expect "the final adapter equals the uninterrupted run's, byte for byte" cmp "$tmp/ref/adapter_model.safetensors" "$out/adapter_model.safetensors"
expect "the loss curve equals the uninterrupted run's" python3 -c "
import json,sys; a=json.load(open('$tmp/ref/run.json'))['step_losses']; b=json.load(open('$out/run.json'))['step_losses']; sys.exit(a != b)"
expect "metrics.jsonl logs steps 1..16 once each" steps_once "$out" 16
expect "no partial directory or temp file is left" test -z "$(ls -A "$out" | grep -E 'partial|\.tmp\.')"

# ---- a full disk while saving: ulimit -f 20 (20 KiB per file) fits metrics.jsonl, not the 38 KB adapter file
six=("${base[@]}" --max-steps 6 --save-steps 3 --scheduler constant)  # constant: step s's rate does not depend on --max-steps
"$ft" "${six[@]}" --output-dir "$tmp/six" >/dev/null 2>&1
"$ft" "${base[@]}" --max-steps 3 --save-steps 3 --scheduler constant --output-dir "$tmp/full" >/dev/null 2>&1
expect "disk full: checkpoint-3 saved first" test -s "$tmp/full/checkpoint-3/manifest.json"
bash -c 'trap "" XFSZ; ulimit -f 20; exec "$@"' _ "$ft" "${six[@]}" --output-dir "$tmp/full" --resume >"$tmp/full.log" 2>"$tmp/full.err"
rc=$?
expect "disk full: exits 1 (got $rc)" test "$rc" -eq 1
expect "disk full: names the checkpoint and the reason" grep -qE "step 6: checkpoint-6 could not be saved: .*adapter_model.safetensors: write failed: File too large" "$tmp/full.err"
expect "disk full: names the newest complete checkpoint" grep -qF "The newest complete checkpoint is $tmp/full/checkpoint-3 (--resume continues from it)" "$tmp/full.err"
expect "disk full: no checkpoint-6, no partial directory, no temp file" test -z "$(ls -A "$tmp/full" | grep -E 'checkpoint-6|partial|\.tmp\.')"
msg=$(intact "$tmp/full")
expect "disk full: checkpoint-3 is still complete ${msg}" test -z "$msg"
"$ft" "${six[@]}" --output-dir "$tmp/full" --resume >"$tmp/full2.log" 2>&1
expect "disk full: with space again, --resume continues from checkpoint-3 and exits 0" grep -qF "checkpoint-3\" (step 3)" "$tmp/full2.log"
expect "disk full: ... to the uninterrupted run's adapter" cmp "$tmp/six/adapter_model.safetensors" "$tmp/full/adapter_model.safetensors"

# ---- a checkpoint damaged afterwards
cp -r "$tmp/six" "$tmp/dmg"; rm "$tmp/dmg/adapter_model.safetensors"
c6="$tmp/dmg/checkpoint-6"; c3="$tmp/dmg/checkpoint-3"
cp "$c6/adapter_model.safetensors" "$tmp/a6"; head -c 30000 "$tmp/a6" >"$c6/adapter_model.safetensors"
"$ft" "${six[@]}" --output-dir "$tmp/dmg" --resume >"$tmp/d.log" 2>"$tmp/d.err"; rc=$?
expect "truncated tensor file: --resume exits 1 (got $rc)" test "$rc" -eq 1
expect "truncated tensor file: named, with its size" grep -qF "$c6/adapter_model.safetensors: 30000 bytes, but $c6/manifest.json records" "$tmp/d.err"
expect "truncated tensor file: the older checkpoint is offered, not taken" grep -qF "The newest intact checkpoint is $c3: pass --resume-from $c3" "$tmp/d.err"
expect "truncated tensor file: nothing trained, nothing written" test ! -e "$tmp/dmg/adapter_model.safetensors" -a -z "$(grep -F 'resume: continuing' "$tmp/d.log")"
cp "$tmp/a6" "$c6/adapter_model.safetensors"
sed -i 's/"seed": 42/"seed": 43/' "$c6/trainer_state.json"
"$ft" "${six[@]}" --output-dir "$tmp/dmg" --resume >"$tmp/d.log" 2>"$tmp/d.err"; rc=$?
expect "edited trainer_state.json: --resume exits 1 (got $rc)" test "$rc" -eq 1
expect "edited trainer_state.json: named" grep -qF "$c6/trainer_state.json: CRC-32 " "$tmp/d.err"
"$ft" "${six[@]}" --output-dir "$tmp/dmg" --resume-from "$c3" >"$tmp/d.log" 2>&1
expect "--resume-from the older checkpoint continues from it" grep -qF "checkpoint-3\" (step 3)" "$tmp/d.log"
expect "--resume-from: the uninterrupted run's adapter" cmp "$tmp/six/adapter_model.safetensors" "$tmp/dmg/adapter_model.safetensors"
expect "--resume-from: the damaged checkpoint-6 is replaced by a complete one" test -z "$(intact "$tmp/dmg")"
"$ft" "${six[@]}" --output-dir "$tmp/dmg" --resume --resume-from "$c3" >/dev/null 2>"$tmp/d.err"
expect "--resume with --resume-from is refused" grep -qF -- "--resume takes the newest checkpoint, --resume-from $c3 a named one: use one" "$tmp/d.err"

# ---- NaN / Inf
python3 - "$M/stories260K.bin" "$tmp/nan.bin" <<'EOF'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
b[28 + 4 * 100:28 + 4 * 101] = struct.pack("<f", float("nan"))  # 7 int32 of header, then token embeddings
open(sys.argv[2], "wb").write(b)
EOF
"$ft" --model "$tmp/nan.bin" "${rest[@]}" --max-steps 6 --output-dir "$tmp/nanbase" >/dev/null 2>"$tmp/n.err"; rc=$?
expect "NaN base weight: exits 1 (got $rc), names the file and tensor" \
  grep -qF "$tmp/nan.bin: base weight 'model.embed_tokens.weight' holds NaN at element 100" "$tmp/n.err"
expect "NaN base weight: nothing written" test ! -e "$tmp/nanbase/adapter_model.safetensors" -a -z "$(ls "$tmp/nanbase" 2>/dev/null | grep checkpoint)"
# rewrite one float of a safetensors file and, for a checkpoint, its manifest: a NaN saved with a valid record
poke() { python3 - "$@" <<'EOF'
import json, os, struct, sys, zlib
path, key, index, value = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
b = bytearray(open(path, "rb").read()); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
o = 8 + n + h[key]["data_offsets"][0] + 4 * index
b[o:o + 4] = struct.pack("<f", value); open(path, "wb").write(b)
m = os.path.join(os.path.dirname(path), "manifest.json")
if os.path.exists(m):
    j = json.load(open(m))
    for f in j["files"]:
        d = open(os.path.join(os.path.dirname(path), f["name"]), "rb").read()
        f["bytes"], f["crc32"] = len(d), "%08x" % zlib.crc32(d)
    json.dump(j, open(m, "w"), indent=2)
EOF
}
A=base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
cp -r "$tmp/six" "$tmp/nanopt"
poke "$tmp/nanopt/checkpoint-6/optimizer.safetensors" "$A.exp_avg" 5 inf
"$ft" "${six[@]}" --output-dir "$tmp/nanopt" --resume >/dev/null 2>"$tmp/n.err"; rc=$?
expect "Inf in the optimizer state: --resume exits 1 (got $rc), names the file and entry" \
  grep -qF "$tmp/nanopt/checkpoint-6/optimizer.safetensors: adamw: state entry '$A.exp_avg' holds Inf at element 5" "$tmp/n.err"
cp -r "$tmp/six/checkpoint-6" "$tmp/nanad"
poke "$tmp/nanad/adapter_model.safetensors" "$A" 2 nan
"$ft" "${six[@]}" --output-dir "$tmp/nanad2" --resume-from "$tmp/nanad" >/dev/null 2>"$tmp/n.err"; rc=$?
expect "NaN in a checkpoint's adapter: --resume-from exits 1 (got $rc), names the file and tensor" \
  grep -qF "$tmp/nanad/adapter_model.safetensors: tensor '$A' holds NaN at element 2" "$tmp/n.err"
# a NaN adapter weight read with --adapter (a new run): step 1 stops, naming the tensor; nothing is saved
mkdir "$tmp/nanpeft"; cp "$tmp/six/adapter_config.json" "$tmp/six/adapter_model.safetensors" "$tmp/nanpeft/"
poke "$tmp/nanpeft/adapter_model.safetensors" "$A" 0 nan
"$ft" "${base[@]}" --max-steps 6 --save-steps 1 --output-dir "$tmp/nanrun" --adapter "$tmp/nanpeft" >/dev/null 2>"$tmp/n.err"; rc=$?
expect "NaN adapter weight in training: exits 1 (got $rc), names the step and tensor" \
  grep -qF "step 1: loss is NaN (micro-batch 0 of epoch 0); first non-finite tensor: weight '$A' is NaN at element 0: training stopped; the last good checkpoint is kept (none saved yet)" "$tmp/n.err"
expect "NaN adapter weight in training: no checkpoint, no adapter written" \
  test -z "$(ls "$tmp/nanrun" | grep -E 'checkpoint|adapter_model')"
finish
