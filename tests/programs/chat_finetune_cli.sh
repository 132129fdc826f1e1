#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# finetune over a GGUF model with a chat template (issue 11): alpaca records rendered with the model's ChatML template
# (TRL's prompt-completion split, loss on the assistant's reply), for LoRA (float base), QLoRA nf4 + double quant and
# QLoRA over the file's own Q4_1 blocks, 2 steps each. Always on a tiny GGUF that convert writes from the repository's
# stories260K with SmolLM2's template (tests/data/chat_sft_golden.json; float and nf4 + DQ only: its FFN width 172 is
# not a whole number of ggml's 32-weight blocks, so it has no Q4_1 form); on SmolLM2-135M-Instruct itself (--model
# smollm2, all three bases) when it is in ${LORALAB_CACHE:-~/.cache/loralab}, else those checks are skipped with the
# reason. tok512 spells the ChatML markers and SmolLM2's system turn out in pieces, so the tiny runs use T 256. Also: the
# alias's error without the file, --template chat refused for a model without a template, --template alpaca still wins;
# --format gsm8k and --format chat (multi-turn, TRL's messages) over the chat template or ChatML, and their refusals.
set -u
build="$1"; shared="$3"
. "$(dirname "$0")/lib.sh"
ft="$build/experiments/finetune"; conv="$build/experiments/convert"
R="$(cd "$(dirname "$0")/../.." && pwd)"; M="$R/models"; alpaca="$shared/data/alpaca_en_demo.json"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ ! -f "$alpaca" ]; then bad "$alpaca is missing"; finish; exit; fi
python3 -c "import json; open('$tmp/smollm2.jinja','w').write(json.load(open('$R/tests/data/chat_sft_golden.json'))['template'])"
"$conv" --in "$M/stories260K.bin" --out "$tmp/tiny.gguf" --chat-template "$tmp/smollm2.jinja" >"$tmp/conv.log" 2>&1
expect "convert writes a tiny GGUF with a chat template" test $? -eq 0 -a -s "$tmp/tiny.gguf"
"$conv" --in "$M/stories260K.bin" --out "$tmp/plain.gguf" >"$tmp/conv.log" 2>&1
run=(--tokenizer "$M/tok512.model" --data "$alpaca" --max-steps 2 --batch-size 2 --seq-len 256 --val-size 4 --logging-steps 1)

# name quant... : one tiny run; its log shows the model's template and the adapter is written.
tiny() {
  local name="$1" model="$2"; shift 2
  "$ft" --model "$model" "${run[@]}" --output-dir "$tmp/$name" "$@" >"$tmp/$name.log" 2>&1
  expect "tiny $name: exits 0" test $? -eq 0
  expect "tiny $name: the model's chat template, loss on the reply" \
    contains "$tmp/$name.log" "^template: the model's chat template (chatml, with its default system turn), loss on the assistant's reply only"
  expect "tiny $name: dataset line says chat(chatml)" contains "$tmp/$name.log" "template=chat(chatml)"
  expect "tiny $name: 2 steps and a PEFT adapter" test -s "$tmp/$name/adapter_model.safetensors" -a \
    "$(grep -c "^{'loss'" "$tmp/$name.log")" -eq 2
}
tiny lora "$tmp/tiny.gguf"
tiny qlora_nf4 "$tmp/tiny.gguf" --quant nf4 --double-quant

"$ft" --model "$tmp/tiny.gguf" "${run[@]}" --output-dir "$tmp/alp" --template alpaca >"$tmp/alp.log" 2>&1
expect "--template alpaca overrides the model's chat template" test $? -eq 0 -a -n "$(grep '^template: alpaca$' "$tmp/alp.log")"
"$ft" --model "$tmp/plain.gguf" "${run[@]}" --output-dir "$tmp/plain" >"$tmp/plain.log" 2>&1
expect "no chat template: the format's (alpaca)" test $? -eq 0 -a -n "$(grep '^template: alpaca$' "$tmp/plain.log")"
"$ft" --model "$tmp/plain.gguf" "${run[@]}" --output-dir "$tmp/nochat" --template chat >"$tmp/nochat.log" 2>&1
expect "--template chat without a chat template: exit 1, names the files" test $? -eq 1 -a \
  -n "$(grep -F "has a chat template (tokenizer.chat_template of a GGUF file)" "$tmp/nochat.log")"
expect "... and writes nothing" test ! -e "$tmp/nochat/adapter_model.safetensors"

# GSM8K and multi-turn chat records (tests/data/chat_turns_golden.json's), over the tiny GGUF's chat template
python3 - "$R/tests/data/chat_turns_golden.json" "$tmp" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))
with open(sys.argv[2] + "/gsm8k.jsonl", "w") as f: f.write("".join(json.dumps(g["gsm8k"]["record"]) + "\n" for _ in range(6)))
with open(sys.argv[2] + "/chat.jsonl", "w") as f: f.write("".join(json.dumps(c["record"]) + "\n" for c in g["chats"] * 3))
with open(sys.argv[2] + "/noassistant.jsonl", "w") as f: f.write(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
PY
recs=(--tokenizer "$M/tok512.model" --max-steps 2 --batch-size 2 --seq-len 256 --logging-steps 1)  # run without --data, --val-size
for fmt in gsm8k chat; do
  "$ft" --model "$tmp/tiny.gguf" "${recs[@]}" --data "$tmp/$fmt.jsonl" --format "$fmt" --val-size 0 --output-dir "$tmp/$fmt" >"$tmp/$fmt.log" 2>&1
  expect "--format $fmt: exits 0 with the model's chat template and writes an adapter" test $? -eq 0 -a \
    -s "$tmp/$fmt/adapter_model.safetensors" -a -n "$(grep -F 'template=chat(chatml)' "$tmp/$fmt.log")"
done
"$ft" --model "$M/stories260K.bin" "${recs[@]}" --data "$tmp/chat.jsonl" --format chat --val-size 0 --output-dir "$tmp/chatml" >"$tmp/chatml.log" 2>&1
expect "--format chat over a model without a chat template: ChatML" test $? -eq 0 -a -n "$(grep '^template: chatml$' "$tmp/chatml.log")"
"$ft" --model "$M/stories260K.bin" "${recs[@]}" --data "$tmp/chat.jsonl" --format chat --template alpaca --val-size 0 --output-dir "$tmp/chatalp" >"$tmp/chatalp.log" 2>&1
expect "--format chat --template alpaca: exit 1, asks for a chat template" test $? -eq 1 -a \
  -n "$(grep -F 'needs a chat template' "$tmp/chatalp.log")"
"$ft" --model "$tmp/tiny.gguf" "${recs[@]}" --data "$tmp/noassistant.jsonl" --format chat --val-size 0 --output-dir "$tmp/noas" >"$tmp/noas.log" 2>&1
expect "a chat record without an assistant turn: exit 1, names the line" test $? -eq 1 -a \
  -n "$(grep -F 'record at line 1: no assistant message' "$tmp/noas.log")"

mkdir -p "$tmp/emptycache"
LORALAB_CACHE="$tmp/emptycache" "$ft" --model smollm2 "${run[@]}" --output-dir "$tmp/x" >"$tmp/alias.log" 2>&1
expect "--model smollm2 without the file: exit 1, says to run scripts/get_model.sh smollm2" test $? -eq 1 -a \
  -n "$(grep -F "fetch it with scripts/get_model.sh smollm2" "$tmp/alias.log")"

# SmolLM2-135M-Instruct itself: 2 steps of batch 2, T 64 per base (~1 min on 2 cores in all).
cache="${LORALAB_CACHE:-$HOME/.cache/loralab}"
if [ -f "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  smol=(--model smollm2 --data "$alpaca" --max-steps 2 --batch-size 2 --seq-len 64 --val-size 2 --logging-steps 1 --export-base none)
  for q in "none" "nf4 --double-quant" "q4_1"; do
    name="smol_${q%% *}"
    # shellcheck disable=SC2086
    "$ft" "${smol[@]}" --quant $q --output-dir "$tmp/$name" >"$tmp/$name.log" 2>&1
    expect "SmolLM2 --quant $q: exits 0 with the model's ChatML template" test $? -eq 0 -a \
      -n "$(grep -F "template=chat(chatml)" "$tmp/$name.log")"
    expect "SmolLM2 --quant $q: 2 finite losses and an adapter" python3 -c "
import ast,math,sys; l=[ast.literal_eval(x)['loss'] for x in open('$tmp/$name.log') if x.startswith(\"{'loss'\")]
sys.exit(not (len(l) == 2 and all(math.isfinite(v) and 0 < v < 20 for v in l)))"
  done
  expect "SmolLM2 q4_1: the GGUF's own blocks (5 bits/weight)" contains "$tmp/smol_q4_1.log" "= 5.000 bits/weight"
else
  echo "skip: SmolLM2 runs ($cache/SmolLM2-135M-Instruct.Q4_1.gguf is absent; scripts/get_model.sh smollm2 fetches it)"
fi
finish
