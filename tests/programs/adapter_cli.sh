#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# After training, on stories260K: generate / perplexity / finetune take --adapter (loralab's and PEFT's own
# adapters, dense and 4-bit bases); adapter_config.json names an HF base directory; merge writes HF (f32, bf16,
# sharded), Meta and requantized bnb 4-bit directories whose models give the unmerged model's perplexity and
# greedy text; merge refuses bad adapters and existing outputs, and a killed merge never leaves a directory that
# looks complete; merge_compare runs end to end.
set -u
build="$(cd "$1" && pwd)"; src="$(cd "$(dirname "$0")/../.." && pwd)"
. "$(dirname "$0")/lib.sh"
E="$build/experiments"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
M=(--model "$src/models/stories260K.bin" --tokenizer "$src/models/tok512.model")
peft="$src/tests/data/peft_adapter"
fortunes=/usr/share/games/fortunes/fortunes
ppl() { "$E/perplexity" --tokenizer "$src/models/tok512.model" --text-file "$tmp/val.txt" --context 256 --threads 1 "$@" 2>"$tmp/ppl.err" |
        sed -n 's/.*perplexity=\([0-9.]*\).*/\1/p'; }
ids() { "$E/generate" --tokenizer "$src/models/tok512.model" --prompt "Once upon a time" --max-new-tokens 60 --print-ids --threads 1 "$@" 2>/dev/null | tail -1; }
both_contain() { grep -qF -- "$2" "$1" && grep -qF -- "$3" "$1"; }
close() { python3 -c "import sys; a,b,t=map(float,sys.argv[1:]); sys.exit(not (a>0 and abs(a-b)<=t*abs(b)))" "$@"; }
# max |a - b| over every tensor of two safetensors files (same names), with the standard library only
maxdiff() { python3 - "$@" <<'EOF'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); d = b[8+n:]
    return {k: struct.unpack('<%df' % ((v['data_offsets'][1]-v['data_offsets'][0])//4), d[v['data_offsets'][0]:v['data_offsets'][1]])
            for k, v in h.items() if k != '__metadata__'}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), (sorted(a), sorted(b))
print(max(max(abs(x - y) for x, y in zip(a[k], b[k])) for k in a))
EOF
}
head -c 6000 "$src/../shared/data/tinystories_validation_100.txt" >"$tmp/val.txt" 2>/dev/null ||
  printf 'Once upon a time, there was a little girl named Lily. She loved to play outside.\n%.0s' {1..40} >"$tmp/val.txt"

# ---- --adapter on generate and perplexity: PEFT's own adapter, dense and nf4+DQ bases
base_ppl=$(ppl "${M[0]}" "${M[1]}")
peft_ppl=$(ppl "${M[0]}" "${M[1]}" --adapter "$peft")
expect "perplexity --adapter (PEFT's adapter) prints the adapter" contains "$tmp/ppl.err" "adapter $peft: r 4, alpha 8, 15 modules"
expect "the adapter changes perplexity ($base_ppl -> $peft_ppl)" test -n "$peft_ppl" -a "$peft_ppl" != "$base_ppl"
q_ppl=$(ppl "${M[0]}" "${M[1]}" --adapter "$peft" --quant nf4 --double-quant)
expect "--adapter over an nf4+DQ base ($q_ppl)" close "$q_ppl" "$peft_ppl" 0.3
"$E/generate" "${M[@]}" --adapter "$peft" --prompt "Tell me a story." --template alpaca --max-new-tokens 5 >"$tmp/gen.out" 2>"$tmp/gen.err"
expect "generate --adapter --template alpaca exits 0" test $? -eq 0
expect "generate --template alpaca wraps the prompt" contains "$tmp/gen.out" "### Instruction:"
expect "generate --template names the template" contains "$tmp/gen.err" "template: alpaca"
printf 'Say hi.\n/quit\n' | "$E/generate" "${M[@]}" --adapter "$peft" --template chatml --interactive --max-new-tokens 4 >"$tmp/inter.out" 2>/dev/null
expect "--interactive keeps the template" contains "$tmp/inter.out" "<|im_start|>user"
# one scheme registry: canonical names and the aliases give the same model; an unknown name lists the known ones
q_canon=$(ppl "${M[0]}" "${M[1]}" --adapter "$peft" --quant nf4-b64-dq)
expect "--quant nf4-b64-dq = --quant nf4 --double-quant ($q_canon)" test -n "$q_canon" -a "$q_canon" = "$q_ppl"
"$E/generate" "${M[@]}" --quant nf8 --max-new-tokens 2 >/dev/null 2>"$tmp/err"
expect "an unknown scheme lists the known ones" contains "$tmp/err" "unknown scheme 'nf8'; known: float32, bfloat16, nf4-b64, nf4-b64-dq, fp4-b64, fp4-b64-dq, int8-row"
"$E/finetune" "${M[@]}" --data "$fortunes" --format text --output-dir "$tmp/never" --quant int8 --double-quant >/dev/null 2>"$tmp/err"
expect "finetune refuses --double-quant on int8 before any work" eval 'contains "$tmp/err" "--double-quant applies to a 4-bit scheme" && test ! -e "$tmp/never"'
"$E/generate" "${M[@]}" --adapter "$tmp/none" --max-new-tokens 2 >/dev/null 2>"$tmp/err"
expect "a missing adapter directory is refused, named" contains "$tmp/err" "$tmp/none/adapter_config.json"
"$E/generate" "${M[@]}" --input x --max-new-tokens 2 >/dev/null 2>"$tmp/err"
expect "--input without --template is refused" contains "$tmp/err" "--input needs --template"

# ---- finetune: the base is recorded as an HF directory; --adapter starts a new run from an adapter's values
ft=("$E/finetune" "${M[@]}" --data "$fortunes" --format text --seq-len 64 --batch-size 4 --threads 1 --logging-steps 1)
"${ft[@]}" --output-dir "$tmp/a" --max-steps 3 --lr 3e-3 --targets all-linear --dropout 0 >"$tmp/a.log" 2>&1
expect "finetune LoRA exits 0" test $? -eq 0
rec=$(python3 -c "import json; print(json.load(open('$tmp/a/adapter_config.json'))['base_model_name_or_path'])")
expect "adapter_config.json names an HF directory ($rec)" test -s "$rec/config.json" -a -s "$rec/model.safetensors" -a "$rec" = "$tmp/a/base_model"
"${ft[@]}" --output-dir "$tmp/a2" --max-steps 1 --lr 1e-12 --adapter "$tmp/a" --dropout 0 >"$tmp/a2.log" 2>&1
expect "finetune --adapter exits 0" test $? -eq 0
expect "finetune --adapter says where it starts" contains "$tmp/a2.log" "adapter: starting from $tmp/a"
d=$(maxdiff "$tmp/a/adapter_model.safetensors" "$tmp/a2/adapter_model.safetensors")
expect "finetune --adapter starts from the adapter's values (max |Δ| after one 1e-12 step: $d)" python3 -c "import sys; sys.exit(not $d < 1e-9)"
expect "finetune --adapter keeps the adapter's rank and targets" python3 -c "
import json,sys; a=json.load(open('$tmp/a/adapter_config.json')); b=json.load(open('$tmp/a2/adapter_config.json'))
sys.exit(not (a['r']==b['r'] and sorted(a['target_modules'])==sorted(b['target_modules'])))"
"${ft[@]}" --output-dir "$tmp/a3" --max-steps 1 --adapter "$tmp/a" --r 16 >/dev/null 2>"$tmp/err"
expect "finetune --adapter with a different --r is refused" contains "$tmp/err" "--r 16 differs from the adapter's r 8"
"${ft[@]}" --output-dir "$tmp/a" --max-steps 1 --adapter "$tmp/a" --resume >/dev/null 2>"$tmp/err"
expect "finetune --adapter with --resume is refused" contains "$tmp/err" "--resume / --resume-from continue a run"
"${ft[@]}" --output-dir "$tmp/n" --max-steps 1 --export-base none >"$tmp/n.log" 2>&1
expect "--export-base none records --model and says PEFT cannot use it" contains "$tmp/n.log" "PEFT cannot load"
"${ft[@]}" --output-dir "$tmp/q" --max-steps 3 --lr 3e-3 --targets all-linear --quant nf4 --double-quant >/dev/null 2>&1
expect "finetune QLoRA exits 0" test $? -eq 0

# ---- merge: HF and Meta layouts give the unmerged model's perplexity and greedy text
mg() { "$E/merge" --model "$src/models/stories260K.bin" --threads 1 "$@"; }
mg --adapter "$tmp/a" --out "$tmp/m_hf" >"$tmp/m.log" 2>&1
expect "merge --format hf exits 0" test $? -eq 0
expect "merge reports the merged modules" contains "$tmp/m.log" "merged 35 adapted linears"
expect "merged hf directory" test -s "$tmp/m_hf/config.json" -a -s "$tmp/m_hf/model.safetensors"
mg --adapter "$tmp/a" --out "$tmp/m_meta" --format meta --tokenizer "$src/models/tok512.model" >/dev/null 2>&1
expect "merge --format meta writes params.json, consolidated.00.pth, tokenizer.model" \
  test -s "$tmp/m_meta/params.json" -a -s "$tmp/m_meta/consolidated.00.pth" -a -s "$tmp/m_meta/tokenizer.model"
un=$(ppl "${M[0]}" "${M[1]}" --adapter "$tmp/a"); hf=$(ppl --model "$tmp/m_hf"); meta=$(ppl --model "$tmp/m_meta")
expect "merged hf perplexity = unmerged within 1e-5 ($hf vs $un)" close "$hf" "$un" 1e-5
expect "merged meta perplexity = unmerged within 1e-5 ($meta vs $un)" close "$meta" "$un" 1e-5
expect "the adapter moved perplexity from the base ($un vs $base_ppl)" test "$un" != "$base_ppl"
g_un=$(ids "${M[0]}" "${M[1]}" --adapter "$tmp/a"); g_hf=$(ids --model "$tmp/m_hf"); g_meta=$(ids --model "$tmp/m_meta")
expect "merged hf: same greedy text as unmerged" test -n "$g_un" -a "$g_un" = "$g_hf"
expect "merged meta: same greedy text as unmerged" test "$g_un" = "$g_meta"
mg --adapter "$peft" --out "$tmp/p_hf" >/dev/null 2>&1; mg --adapter "$peft" --out "$tmp/p_meta" --format meta >/dev/null 2>&1
p_hf=$(ppl --model "$tmp/p_hf"); p_meta=$(ppl --model "$tmp/p_meta")
expect "PEFT's adapter merged (hf, meta) = unmerged within 1e-5 ($p_hf, $p_meta vs $peft_ppl)" close "$p_hf" "$peft_ppl" 1e-5
expect "PEFT's adapter merged meta = unmerged within 1e-5" close "$p_meta" "$peft_ppl" 1e-5
expect "PEFT's adapter merged: same greedy text" test "$(ids "${M[0]}" "${M[1]}" --adapter "$peft")" = "$(ids --model "$tmp/p_meta")"
mg --adapter "$tmp/a" --out "$tmp/m_bf16" --dtype bf16 --max-shard-size 200KB >/dev/null 2>&1
expect "merge --dtype bf16 --max-shard-size shards with an index" test -s "$tmp/m_bf16/model.safetensors.index.json" -a -s "$tmp/m_bf16/model-00001-of-00003.safetensors"
bf=$(ppl --model "$tmp/m_bf16")
expect "bf16 merge loads, perplexity within 1% ($bf)" close "$bf" "$un" 1e-2

# ---- QLoRA: merged into the dequantized base (float) equals unmerged; requantized prints its cost
q_un=$(ppl "${M[0]}" "${M[1]}" --adapter "$tmp/q" --quant nf4 --double-quant)
mg --adapter "$tmp/q" --quant nf4 --double-quant --out "$tmp/q_f32" >/dev/null 2>&1
q_f=$(ppl --model "$tmp/q_f32")
expect "QLoRA merged into deq(Q(W)) = unmerged within 1e-5 ($q_f vs $q_un)" close "$q_f" "$q_un" 1e-5
mg --adapter "$tmp/q" --quant nf4 --double-quant --requantize nf4 --out "$tmp/q_nf4" >"$tmp/rq.log" 2>&1
expect "merge --requantize exits 0" test $? -eq 0
expect "merge --requantize prints the requantization error" grep -qE "requantization error vs the exact merged weights: max \|Δw\| [0-9.e+-]+, relative RMS [0-9.e+-]+" "$tmp/rq.log"
expect "requantized config.json has bnb's quantization_config" python3 -c "
import json,sys; q=json.load(open('$tmp/q_nf4/config.json'))['quantization_config']
sys.exit(not (q['quant_method']=='bitsandbytes' and q['bnb_4bit_quant_type']=='nf4' and q['bnb_4bit_use_double_quant'] and q['load_in_4bit']))"
q_r=$(ppl --model "$tmp/q_nf4")
expect "the requantized merge loads in loralab, perplexity within 20% ($q_r vs $q_un)" close "$q_r" "$q_un" 0.2

# ---- bad input: nothing half-written, every error names what is wrong
mg --adapter "$tmp/a" --out "$tmp/m_hf" >/dev/null 2>"$tmp/err"
expect "an existing --out is refused" contains "$tmp/err" "already exists (pass --overwrite"
mg --adapter "$tmp/a" --out "$tmp/m_hf" --overwrite >/dev/null 2>&1
expect "--overwrite replaces it" test $? -eq 0 -a -s "$tmp/m_hf/model.safetensors"
bad_adapter() {  # $1: tag, $2: python edit of the config dict c; expects merge to fail naming the file and $3
  cp -r "$tmp/a" "$tmp/bad_$1"; python3 -c "
import json; p='$tmp/bad_$1/adapter_config.json'; c=json.load(open(p)); $2; json.dump(c, open(p,'w'))"
  mg --adapter "$tmp/bad_$1" --out "$tmp/out_$1" >/dev/null 2>"$tmp/err"
  expect "bad adapter ($1) refused naming the file and '$3'" both_contain "$tmp/err" "$tmp/bad_$1" "$3"
  expect "bad adapter ($1): no output directory, no leftover" test ! -e "$tmp/out_$1" -a -z "$(ls -A "$tmp" | grep "out_$1.partial")"
}
bad_adapter missing_module "c['target_modules']=['q_proj','k_proj','v_proj','o_proj','gate_proj','up_proj','down_proj','lm_head']" "lm_head"
bad_adapter rank "c['r']=4" "expected [4,"
bad_adapter peft_type "c['peft_type']='PREFIX_TUNING'" "PREFIX_TUNING"
cp -r "$tmp/a" "$tmp/bad_json"; echo '{"r": 8,' >"$tmp/bad_json/adapter_config.json"
mg --adapter "$tmp/bad_json" --out "$tmp/out_json" >/dev/null 2>"$tmp/err"
expect "malformed adapter_config.json refused, named" contains "$tmp/err" "$tmp/bad_json/adapter_config.json"
mg --adapter "$tmp/a" --out "$tmp/x" --format meta --requantize nf4 >/dev/null 2>"$tmp/err"
expect "--requantize with --format meta is refused" contains "$tmp/err" "only --format hf holds"
touch "$tmp/file"; mg --adapter "$tmp/a" --out "$tmp/file/sub" >/dev/null 2>"$tmp/err"
expect "an unwritable --out is refused, named" contains "$tmp/err" "$tmp/file"
head -c 3000 "$tmp/m_meta/consolidated.00.pth" >"$tmp/trunc.pth"; mkdir "$tmp/trunc_meta"; cp "$tmp/m_meta/params.json" "$tmp/trunc_meta/"
mv "$tmp/trunc.pth" "$tmp/trunc_meta/consolidated.00.pth"
"$E/perplexity" --model "$tmp/trunc_meta" --tokenizer "$src/models/tok512.model" --text-file "$tmp/val.txt" >/dev/null 2>"$tmp/err"
expect "a truncated consolidated.00.pth is refused, named" contains "$tmp/err" "$tmp/trunc_meta/consolidated.00.pth"
for i in 1 2 3 4 5 6; do  # SIGKILL at a random moment: the output is either absent or complete
  mg --adapter "$tmp/a" --out "$tmp/k$i" --format meta >/dev/null 2>&1 & pid=$!
  sleep "0.0$((RANDOM % 9))"; kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  if [ -e "$tmp/k$i" ]; then k=$(ppl --model "$tmp/k$i"); expect "killed merge $i: the output is complete ($k)" close "$k" "$un" 1e-5
  else ok "killed merge $i: no output directory"; fi
done

# ---- merge_compare end to end (a short adapter trained first)
(cd "$tmp" && "$E/merge_compare" "${M[@]}" --quick --threads 1 --output-dir mc >mc.log 2>&1)
expect "merge_compare exits 0" test $? -eq 0
expect "merge_compare: the merges agree with the unmerged model" contains "$tmp/mc.log" "merges agree with the unmerged model"
expect "merge_compare: requantization cost stated" contains "$tmp/mc.log" "requantizing the merge to nf4+dq"
for f in merge_compare.csv merge_compare.json merge_compare.png adapter/adapter_config.json merged_meta/params.json; do
  expect "merge_compare writes $f" test -s "$tmp/mc/$f"
done
expect "merge_compare.json has 5 variants" python3 -c "import json,sys; sys.exit(len(json.load(open('$tmp/mc/merge_compare.json'))['variants'])!=5)"
finish
