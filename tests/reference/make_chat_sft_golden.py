#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Golden for finetune's chat-template rendering of alpaca records (tests/data/chat_sft_golden.json).

Each record becomes messages = [user: instruction ("\\n\\n" + input when not empty), assistant: output], rendered by
transformers' apply_chat_template with SmolLM2's real template string (tokenizer.chat_template of
SmolLM2-135M-Instruct.Q4_1.gguf, jinja2), split as TRL's SFTTrainer does a prompt-completion conversation with
completion-only loss (trl/trainer/sft_trainer.py, tokenize_fn):

    prompt_ids = apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    ids        = apply_chat_template(prompt + completion, tokenize=True)
    completion_mask = [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))

Run by hand (needs the GGUF and ${LORALAB_CACHE:-~/.cache/loralab}/smollm2-tokenizer/, see make_bpe_golden.py):
    /work/venv/bin/python tests/reference/make_chat_sft_golden.py
"""
import json
import os

import gguf
from transformers import PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("LORALAB_CACHE", os.path.expanduser("~/.cache/loralab"))
GGUF = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")

reader = gguf.GGUFReader(GGUF)
field = reader.fields["tokenizer.chat_template"]
template = bytes(field.parts[field.data[0]]).decode("utf-8")
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(CACHE, "smollm2-tokenizer/tokenizer.json"))

records = [  # alpaca_en_demo.json records 362, 554 (with input), 343 (with input), and one multi-line output
    {"instruction": "Calculate 15% of 500.", "input": "", "output": "15% of 500 is 75."},
    {"instruction": "Sum up the numbers.", "input": "3, 2, 5", "output": "The sum of the numbers is 10."},
    {"instruction": "Classify this as either an object or an action.", "input": "running", "output": "Action."},
    {"instruction": "List two colours.", "input": "", "output": "1. Red\n2. Blue"},
]
cases = []
for r in records:
    user = r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")
    prompt = [{"role": "user", "content": user}]
    conv = prompt + [{"role": "assistant", "content": r["output"]}]
    prompt_text = tok.apply_chat_template(prompt, chat_template=template, add_generation_prompt=True, tokenize=False)
    text = tok.apply_chat_template(conv, chat_template=template, tokenize=False)
    prompt_ids = tok.apply_chat_template(prompt, chat_template=template, add_generation_prompt=True, tokenize=True)
    ids = tok.apply_chat_template(conv, chat_template=template, tokenize=True)
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):  # transformers 5 returns a BatchEncoding
        prompt_ids, ids = prompt_ids["input_ids"], ids["input_ids"]
    assert text.startswith(prompt_text) and ids[: len(prompt_ids)] == prompt_ids
    cases.append({"record": r, "prompt": prompt_text, "completion": text[len(prompt_text):], "input_ids": ids,
                  "completion_mask": [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))})

out = {"template": template, "source": "SmolLM2-135M-Instruct.Q4_1.gguf tokenizer.chat_template", "cases": cases}
with open(os.path.join(ROOT, "tests/data/chat_sft_golden.json"), "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
print(f"wrote {len(cases)} cases")

# ---- GSM8K question/answer and multi-turn chat records (tests/data/chat_turns_golden.json) ----------------------
# gsm8k: {question, answer} is an instruction record (user = question, assistant = answer), split as above.
# chat: TRL's conversational records {messages: [...]}, with the loss on every assistant turn. For each assistant
# message i: prompt_i = render(messages[:i], add_generation_prompt=True), full_i = render(messages[:i+1]); the text of
# prompt_i after full_{i-1} is masked, the text of full_i after prompt_i is trained, anything after the last assistant
# turn is masked. ids are the whole conversation tokenized at once (apply_chat_template(tokenize=True)); the mask per
# id comes from the character offsets of the trained spans, so a test that tokenizes piece by piece must also
# reproduce the whole-conversation ids.
gsm8k = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                     "How many clips did Natalia sell altogether in April and May?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
                   "in April and May.\n#### 72"}
chats = [
    {"messages": [{"role": "user", "content": "Hi! What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."},
                  {"role": "user", "content": "And times 3?"}, {"role": "assistant", "content": "4 × 3 = 12 🙂"}]},
    {"messages": [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Capital of France?"},
                  {"role": "assistant", "content": "Paris"}, {"role": "user", "content": "Thanks"}]},
]


def render(msgs, gen):
    return tok.apply_chat_template(msgs, chat_template=template, add_generation_prompt=gen, tokenize=False)


def turns_case(msgs):
    pieces, done = [], ""
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        for text, trained in ((render(msgs[:i], True), False), (render(msgs[:i + 1], False), True)):
            assert text.startswith(done)
            if len(text) > len(done):
                pieces.append({"text": text[len(done):], "trained": trained})
            done = text
    full = render(msgs, False)
    assert full.startswith(done)
    if len(full) > len(done):
        pieces.append({"text": full[len(done):], "trained": False})
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    spans, at = [], 0
    for p in pieces:
        if p["trained"]:
            spans.append((at, at + len(p["text"])))
        at += len(p["text"])
    mask = [int(any(a <= s and e <= b for a, b in spans)) for s, e in enc["offset_mapping"]]
    return {"text": full, "pieces": pieces, "input_ids": enc["input_ids"], "trained_mask": mask}


turns = {"template": template, "gsm8k": {"record": gsm8k, **turns_case(
    [{"role": "user", "content": gsm8k["question"]}, {"role": "assistant", "content": gsm8k["answer"]}])},
         "chats": [{"record": c, **turns_case(c["messages"])} for c in chats]}
with open(os.path.join(ROOT, "tests/data/chat_turns_golden.json"), "w") as f:
    json.dump(turns, f, ensure_ascii=False, indent=1)
print(f"wrote 1 gsm8k and {len(chats)} chat cases")
