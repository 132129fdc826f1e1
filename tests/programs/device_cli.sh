#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# --device on the command line of every program (experiment/cli.hpp): a bad value, and cuda on a program with no CUDA
# path, are usage errors (exit 2) naming the flag; on the training programs cuda says why it cannot run here (a build
# without CUDA, or no device), before any work and with nothing written; so do perplexity and generate. Where a GPU exists, finetune
# and rank_ablation train on it: exit 0, PEFT files written, the losses within 1e-3 of the CPU run's, an int8 base refused
# by name; perplexity scores there (mean NLL within 1e-5 of the CPU's) and generate writes the CPU's greedy text with
# the adapter just trained.
set -u
build="$1"; shared="$3"
. "$(dirname "$0")/lib.sh"
E="$build/experiments"; src="$(cd "$(dirname "$0")/../.." && pwd)"; M="$src/models"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
quotes="$shared/data/english_quotes.jsonl"
if [ ! -f "$quotes" ]; then  # a GPU machine with the repository only: quotes made of the README's lines
  quotes="$tmp/quotes.jsonl"
  python3 -c "import json,sys; [print(json.dumps({'quote': l.strip()[:200]})) for l in open(sys.argv[1]) if len(l.strip()) > 20]" \
    "$src/README.md" >"$quotes"
fi
data=(--data "$quotes" --format quotes)
ft=("$E/finetune" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --batch-size 4 "${data[@]}"
    --seq-len 64 --max-steps 6 --logging-steps 1 --threads 1)
px=("$E/perplexity" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --text-file "$src/README.md" --context 128)
gen=("$E/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --prompt "Once upon a time" --max-new-tokens 40
     --quant nf4 --double-quant --adapter "$tmp/gpu")

"$E/quant_ablation" --device gpu >"$tmp/bad.log" 2>&1
expect "--device gpu: exit 2" test $? -eq 2
expect "--device gpu: names the flag and its values" contains "$tmp/bad.log" "--device must be cpu or cuda, got 'gpu'"
"$E/quant_ablation" --device cuda >"$tmp/cpu_only.log" 2>&1
expect "a program with no CUDA path: exit 2" test $? -eq 2
expect "a program with no CUDA path says so and names those with one" \
  contains "$tmp/cpu_only.log" "--device cuda: this program runs on the CPU only; finetune, lora_vs_qlora and the ablations"
"$E/generate" --help | grep -q -- "--device" ; expect "every program lists --device in --help (generate)" test $? -eq 0

"$E/rank_ablation" --quick --device cuda "${data[@]}" --output-dir "$tmp/ra" >"$tmp/ra.log" 2>&1
rc=$?
if grep -qE "no CUDA device is usable here|this build has no CUDA" "$tmp/ra.log"; then
  expect "rank_ablation --device cuda without a GPU: exit 2" test $rc -eq 2
  expect "... and nothing written" test ! -e "$tmp/ra"
  "${ft[@]}" --device cuda --output-dir "$tmp/ft" >"$tmp/ft.log" 2>&1
  expect "finetune --device cuda without a GPU: exit 2" test $? -eq 2
  expect "... says why" grep -qE "finetune: --device cuda: (no CUDA device is usable here|this build has no CUDA)" "$tmp/ft.log"
  expect "... and nothing written" test ! -e "$tmp/ft"
  "${px[@]}" --device cuda >"$tmp/px.log" 2>&1
  expect "perplexity --device cuda without a GPU: exit 2" test $? -eq 2
  expect "... says why" grep -qE "perplexity: --device cuda: (no CUDA device is usable here|this build has no CUDA)" "$tmp/px.log"
  "$E/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --max-new-tokens 4 --device cuda >"$tmp/gen.log" 2>&1
  expect "generate --device cuda without a GPU: exit 2" test $? -eq 2
  expect "... says why" grep -qE "generate: --device cuda: (no CUDA device is usable here|this build has no CUDA)" "$tmp/gen.log"
  echo "note: no usable CUDA device here ($(grep -oE '(no CUDA device|this build has no CUDA)[^;]*' "$tmp/ra.log" | head -1)): the GPU runs are not checked"
else
  expect "rank_ablation --quick --device cuda exits 0 on the GPU" test $rc -eq 0
  "${ft[@]}" --device cuda --quant nf4 --double-quant --output-dir "$tmp/gpu" >"$tmp/gpu.log" 2>&1
  expect "finetune --device cuda (QLoRA nf4 + DQ) exits 0" test $? -eq 0
  expect "... writes the PEFT adapter" test -s "$tmp/gpu/adapter_model.safetensors"
  "${ft[@]}" --quant nf4 --double-quant --output-dir "$tmp/host" >"$tmp/host.log" 2>&1
  expect "... its losses are the CPU run's within 1e-3" python3 -c "
import json,sys; a=json.load(open('$tmp/gpu/run.json'))['step_losses']; b=json.load(open('$tmp/host/run.json'))['step_losses']
sys.exit(not (len(a) == len(b) == 6 and all(abs(x - y) <= 1e-3 * y for x, y in zip(a, b))))"
  "${px[@]}" --quant nf4 --double-quant --device cuda >"$tmp/px_gpu.out" 2>"$tmp/px_gpu.log"
  expect "perplexity --device cuda (nf4 + DQ) exits 0" test $? -eq 0
  "${px[@]}" --quant nf4 --double-quant >"$tmp/px_cpu.out" 2>&1
  expect "... its mean NLL is the CPU's within 1e-5" python3 -c "
import re,sys; f=lambda p: float(re.search(r'mean_nll=([0-9.]+)', open(p).read()).group(1)); a=f('$tmp/px_gpu.out'); b=f('$tmp/px_cpu.out')
sys.exit(not abs(a - b) <= 1e-5 * b)"
  "${gen[@]}" --device cuda >"$tmp/gen_gpu.out" 2>"$tmp/gen_gpu.log"
  expect "generate --device cuda (LoRA adapter over nf4) exits 0" test $? -eq 0
  "${gen[@]}" >"$tmp/gen_cpu.out" 2>"$tmp/gen_cpu.log"
  expect "... the same greedy text as the CPU" cmp -s "$tmp/gen_gpu.out" "$tmp/gen_cpu.out"
  "${ft[@]}" --device cuda --quant int8 --output-dir "$tmp/int8" >"$tmp/int8.log" 2>&1
  expect "an int8 base on CUDA: refused" test $? -ne 0
  expect "... naming what runs there" contains "$tmp/int8.log" "has no CUDA path; there: float32 (LoRA) and nf4 / fp4"
fi
finish
