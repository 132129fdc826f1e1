#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# generate / perplexity / convert on the real stories260K checkpoint: run.c's greedy text with both tokenizers
# and through the converted HF directory, quantized perplexity above float, seeded sampling, clear failures.
set -u
build="$1"; shared="$3"  # $2: the fixtures tool, unused here
. "$(dirname "$0")/lib.sh"
bin="$build/experiments"; M="$shared/models"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -c "import json,sys; sys.stdout.write(json.load(open('$M/stories260K.golden.json'))['run_c_stdout'])" >"$tmp/expected.txt"

for tok in tok512.model tok512.bin; do
  "$bin/generate" --model "$M/stories260K.bin" --tokenizer "$M/$tok" --prompt "Once upon a time" --max-new-tokens 60 >"$tmp/out.txt" 2>"$tmp/err.txt"
  expect "generate greedy with $tok reproduces run.c's text" cmp -s "$tmp/out.txt" "$tmp/expected.txt"
  expect "generate reports tokens/s" contains "$tmp/err.txt" "achieved tok/s"
done

expect "convert writes an HF directory" "$bin/convert" --in "$M/stories260K.bin" --out "$tmp/hf" >/dev/null
expect "config.json names LlamaForCausalLM" contains "$tmp/hf/config.json" "LlamaForCausalLM"
"$bin/generate" --model "$tmp/hf" --tokenizer "$M/tok512.model" --prompt "Once upon a time" --max-new-tokens 60 >"$tmp/out_hf.txt" 2>/dev/null
expect "the HF directory generates the same text" cmp -s "$tmp/out_hf.txt" "$tmp/expected.txt"

"$bin/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --prompt "" --max-new-tokens 8 --print-ids >"$tmp/ids.txt" 2>/dev/null
expect "an empty prompt starts from BOS; --print-ids prints 8 ids" test "$(tail -1 "$tmp/ids.txt" | wc -w)" -eq 8
for s in 1 1 2; do
  "$bin/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --prompt "The dog" --temperature 0.9 --top-k 40 --top-p 0.95 --repetition-penalty 1.1 --max-new-tokens 30 --seed $s --print-ids 2>/dev/null | tail -1 >"$tmp/s$s.$RANDOM"
done
set -- "$tmp"/s1.*; expect "same seed, same sample" cmp -s "$1" "$2"
expect "other seed, other sample" bash -c "! cmp -s '$1' $tmp/s2.*"

text="$shared/data/tinystories_validation_100.txt"
"$bin/perplexity" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --text-file "$text" >"$tmp/p_f.txt" 2>/dev/null
"$bin/perplexity" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --text-file "$text" --quant nf4 --double-quant >"$tmp/p_q.txt" 2>/dev/null
expect "perplexity prints tokens= mean_nll= perplexity=" grep -Eq '^tokens=[0-9]+ mean_nll=[0-9.]+ perplexity=[0-9.]+$' "$tmp/p_f.txt"
f=$(sed 's/.*mean_nll=\([0-9.]*\).*/\1/' "$tmp/p_f.txt"); q=$(sed 's/.*mean_nll=\([0-9.]*\).*/\1/' "$tmp/p_q.txt")
expect "nf4+DQ NLL ($q) is above float ($f), by less than 0.5 nats" python3 -c "import sys; sys.exit(not ($f < $q < $f + 0.5))"

fails() {  # what, expected text, command...
  local what="$1" text="$2"; shift 2
  "$@" >"$tmp/f.out" 2>"$tmp/f.err"; local rc=$?
  expect "$what: non-zero exit" test "$rc" -ne 0
  expect "$what: says '$text'" contains "$tmp/f.err" "$text"
}
head -c 5000 "$M/stories260K.bin" > "$tmp/trunc.bin"
fails "truncated checkpoint" "trunc.bin" "$bin/generate" --model "$tmp/trunc.bin" --tokenizer "$M/tok512.model"
fails "missing model" "nope.bin" "$bin/generate" --model "$tmp/nope.bin" --tokenizer "$M/tok512.model"
printf '\x00\x01' > "$tmp/bad.model"
fails "corrupt tokenizer" "bad.model" "$bin/generate" --model "$M/stories260K.bin" --tokenizer "$tmp/bad.model"
long=$(python3 -c "print('hello ' * 600)")
fails "prompt longer than the context" "context" "$bin/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --prompt "$long"
fails "bad --top-p" "top-p" "$bin/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --top-p 0
fails "bad --quant" "quant" "$bin/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --quant nf3
fails "--double-quant without a 4-bit scheme" "double-quant" "$bin/perplexity" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --text-file "$text" --double-quant
sed -i 's/"hidden_size": 64/"hidden_size": 65/' "$tmp/hf/config.json"
fails "config inconsistent with the tensors" "config.json" "$bin/convert" --in "$tmp/hf" --out "$tmp/hf2"
"$bin/generate" --help >"$tmp/help" 2>&1
for flag in --model --tokenizer --prompt --max-new-tokens --temperature --top-k --top-p --repetition-penalty --seed --quant --double-quant --print-ids --interactive --threads; do
  expect "generate --help lists $flag" contains "$tmp/help" "$flag"
done
printf 'Once upon a time\n/quit\n' | "$bin/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --interactive --max-new-tokens 60 >"$tmp/inter.txt" 2>/dev/null
expect "--interactive answers a prompt read from stdin" cmp -s "$tmp/inter.txt" "$tmp/expected.txt"
finish
