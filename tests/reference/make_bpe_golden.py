#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Golden data for include/nn/bpe_tokenizer.hpp and include/data/chat_template.hpp (tests/nn/bpe_tokenizer_test.cpp,
tests/nn/chat_template_test.cpp). Run by hand, from the repository root:
    /work/venv/bin/python tests/reference/make_bpe_golden.py
Needs tokenizers (PyPI, 0.23), gguf, jinja2; Debian's fortunes (apt-get install fortunes) for the training text.

Writes (committed):
  tests/data/bpe_small/tokenizer.json   a 1000-token byte-level BPE trained by `tokenizers` on a slice of Debian's
                                        fortunes, with SmolLM2's pre-tokenizer (Sequence[Digits(individual_digits=
                                        True), ByteLevel(add_prefix_space=False)]) and three special tokens
  tests/data/bpe_golden.json            the corpus below, its ids under the small vocab and under SmolLM2's, and
                                        its decodes
  tests/data/chat_template_golden.json  conversations rendered by jinja2 (as transformers' apply_chat_template
                                        does: trim_blocks, lstrip_blocks) over SmolLM2's template (read from the
                                        GGUF), plain ChatML, Llama-2 and Zephyr templates
And, not committed (48,900 merges, 2 MB): ${LORALAB_CACHE:-~/.cache/loralab}/smollm2-tokenizer/{tokenizer.json,
tokenizer_config.json}: SmolLM2-135M-Instruct's tokenizer rebuilt from the GGUF's tokens, merges and token types
with the pre-tokenizer the model's own tokenizer.json has (transformers' GGUF loader gets it wrong for `smollm`:
it gives "x  12" as [104, 216, 216, 33, 34] where llama.cpp and the original give [104, 256, 33, 34]).
"""
import glob, json, os, random, sys
import jinja2, jinja2.sandbox
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers, AddedToken
from gguf import GGUFReader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("LORALAB_CACHE", os.path.expanduser("~/.cache/loralab"))
GGUF = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def pre_tokenizer():
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def fortunes_text(limit):
    parts = []
    for f in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if f.endswith((".dat", ".u8")) or os.path.islink(f) or not os.path.isfile(f):
            continue
        parts.append(open(f, encoding="utf-8", errors="replace").read())
    text = "".join(parts)
    assert len(text) > limit, "install Debian's fortunes (apt-get install fortunes)"
    return text[:limit]


def train_small():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = fortunes_text(400_000)
    tok.train_from_iterator([text[i:i + 4000] for i in range(0, len(text), 4000)], trainer)
    return tok


def smollm2():
    r = GGUFReader(GGUF)
    f = r.fields
    def strings(k):
        return [bytes(f[k].parts[i]).decode("utf-8") for i in f[k].data]
    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    scalar = lambda k: f[k].parts[f[k].data[0]]
    assert bytes(scalar("tokenizer.ggml.model")).decode() == "gpt2" and bytes(scalar("tokenizer.ggml.pre")).decode() == "smollm"
    bos, eos = int(scalar("tokenizer.ggml.bos_token_id")[0]), int(scalar("tokenizer.ggml.eos_token_id")[0])
    template = bytes(scalar("tokenizer.chat_template")).decode()
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    assert tok.get_vocab_size() == len(tokens) == 49152 and len(merges) == 48900
    out = os.path.join(CACHE, "smollm2-tokenizer")
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    json.dump({"bos_token": tokens[bos], "eos_token": tokens[eos], "add_bos_token": False, "add_eos_token": False,
               "chat_template": template}, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=1)
    return tok, template


def corpus():
    fixed = [
        "", "Hello, world!", "Hello world", " Hello", "  Hello  world  ", "x  12", "a 1234 b", "  \n\n 42",
        "x\t\t12", "3.14159 and 2,718", "Année 2024: 12€ / $3.50", "He said: \"don't\" — it's, we're, I've, I'll, I'd.",
        "'s 't 're 've 'm 'll 'd 'S 'RE '' 'x", "CAPS'LL 'Ll", "line one\nline two\r\nline three\n", "\n", "\n\n\n",
        "  ", " ", "\t", "tab\there\tand\t\tthere", "trailing spaces   ", "   leading", "a\u00a0b\u3000c\u2009d",
        "\x1c\x1d\x1e\x1f ctrl \x0b\x0c \x85 next", "\x1c!x\x1f?", "a\x85!", "\x00\x01 nul", "?!?!... ;-) <<<>>> ===== ----------", "    def f(x):\n        return x**2\n",
        "Привет, мир! Как дела? Ёжик 42.", "你好，世界！今天是2024年10月1日。", "مرحبا بالعالم ١٢٣ ٤٥", "नमस्ते दुनिया १२३",
        "emoji 😀😃 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷", "Ⅻ ① ½ ²³ ٣ 𝟙𝟚", "ĠĊ Ġ Ċ ĉ", "café naïve ﬁ Æsir ß İ",
        "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
        "text<|endoftext|>more<|endoftext|><|endoftext|>", "<|im_start <|im_end|x <|im_start|><|im_end|>",
        "a<|im_start|>", "<|endoftext|>",
    ]
    rng = random.Random(20241011)
    pool = list("aZ09 '\t\n!.,-_") + ["  ", "\r\n", "'s", "'ll", "é", "ж", "中", "٣", "१", "😀", "\u200d", "\ufe0f",
                                        "\u00a0", "ß", "<|im_end|>", "<|endoftext|>", "ﬁ", "Ⅻ", "€"]
    rand = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 30))) for _ in range(60)]
    text = fortunes_text(600_000)[500_000:503_000]  # not in the training slice
    return fixed + rand + [text]


def render_chats(smollm2_template):
    chatml = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
              "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    llama2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
              "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
              "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) "
              "%}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
              "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
              "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
              "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
              "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
    zephyr = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] "
              "+ eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}"
              "\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
              "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
    templates = {"smollm2": (smollm2_template, "chatml"), "chatml": (chatml, "chatml"), "llama2": (llama2, "llama2"),
                 "zephyr": (zephyr, "zephyr")}
    conversations = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "  Tell me a joke. "}, {"role": "assistant", "content": " Why? \n"},
         {"role": "user", "content": "Another, в Юникоде 😀"}],
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello"},
         {"role": "assistant", "content": "Hi! How can I help?"}],
    ]
    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    out = {"templates": {name: {"source": src, "format": fmt} for name, (src, fmt) in templates.items()},
           "bos_token": "<s>", "eos_token": "</s>", "cases": []}
    for name, (src, _) in templates.items():
        for i, conv in enumerate(conversations):
            for gen in (False, True):
                text = env.from_string(src).render(messages=conv, add_generation_prompt=gen, bos_token="<s>",
                                                   eos_token="</s>")
                out["cases"].append({"template": name, "messages": conv, "add_generation_prompt": gen,
                                     "rendered": text})
    return out


def main():
    small = train_small()
    small.save(os.path.join(ROOT, "tests/data/bpe_small/tokenizer.json"))
    smol, template = smollm2()
    # Known ids (llama.cpp's tokenizer on the same GGUF) before trusting the rebuilt tokenizer.
    assert smol.encode("x  12").ids == [104, 256, 33, 34], smol.encode("x  12").ids
    assert smol.encode("<|im_start|>user\nHi<|im_end|>").ids[:2] == [1, 4093]
    cases = []
    for text in corpus():
        a, b = small.encode(text).ids, smol.encode(text).ids
        cases.append({"text": text, "small": a, "smollm2": b,
                      "small_decoded": small.decode(a, skip_special_tokens=False),
                      "smollm2_decoded": smol.decode(b, skip_special_tokens=False)})
    golden = {"generator": "tests/reference/make_bpe_golden.py", "tokenizers": tokenizers.__version__,
              "smollm2_vocab_size": smol.get_vocab_size(), "cases": cases}
    json.dump(golden, open(os.path.join(ROOT, "tests/data/bpe_golden.json"), "w"), ensure_ascii=False, indent=0)
    chats = render_chats(template)
    chats["jinja2"] = jinja2.__version__
    json.dump(chats, open(os.path.join(ROOT, "tests/data/chat_template_golden.json"), "w"), ensure_ascii=False, indent=1)
    print("small vocab", small.get_vocab_size(), "corpus", len(cases), "chat cases", len(chats["cases"]))


if __name__ == "__main__":
    main()
