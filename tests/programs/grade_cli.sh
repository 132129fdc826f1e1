#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The labs' grader (docs/labs/grade.cpp) on real program outputs: merge_compare --quick and lora_vs_qlora at three
# small sizes, each with a reference answers.json computed here from the JSON the program wrote. The reference gets
# full marks; broken copies of it (a missing file, malformed JSON, a wrong claim, a ratio off by 50%, a CSV that
# disagrees with the JSON, a NaN, a missing size or variant, a wrong type, a missing key, an empty list) are graded
# (exit 0) below full marks, each fault named on a FAIL line; usage errors exit 2.
set -u
build="$(cd "$1" && pwd)"
. "$(dirname "$0")/lib.sh"
grade="$build/labs/grade"
fortunes=/usr/share/games/fortunes/fortunes
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ ! -f "$fortunes" ]; then bad "the default data $fortunes is missing (scripts/setup.sh installs fortunes-min)"; finish; exit; fi
if ! command -v gnuplot >/dev/null; then bad "gnuplot is missing: the labs hand in the programs' PNGs (scripts/setup.sh installs gnuplot-nox)"; finish; exit; fi

# Python helpers for the reference answers and the faults; they run in the folder being edited.
cat >"$tmp/edit.py" <<'EOF'
import json, sys
def load(f): return json.load(open(f))
def save(f, j): open(f, 'w').write(json.dumps(j, indent=2))
def csv_set(f, match, col, value):  # sets column `col` of the rows whose cells satisfy `match`
    lines = open(f).read().splitlines()
    c = lines[0].split(',').index(col)
    for i in range(1, len(lines)):
        cells = lines[i].split(',')
        if match(cells): cells[c] = value; lines[i] = ','.join(cells)
    open(f, 'w').write('\n'.join(lines) + '\n')

def merge_answers():
    j = load('merge_compare.json'); v = {x['name']: x for x in j['variants']}
    rq = 'requantized ' + j['config']['base']; ppl = lambda n: v[n]['perplexity']
    dl = max(v['merged hf']['max_abs_dlogit_vs_unmerged'], v['merged meta']['max_abs_dlogit_vs_unmerged'])
    return {'lab': 'merge', 'merged_equals_unmerged': dl <= 1e-3, 'max_abs_dlogit': dl,
            'adapter_perplexity_change_percent': 100 * (ppl('unmerged') / ppl('base') - 1),
            'requantized_perplexity_increase_percent': 100 * (ppl(rq) / ppl('unmerged') - 1),
            'fraction_of_gain_kept': (ppl('base') - ppl(rq)) / (ppl('base') - ppl('unmerged')),
            'smallest_merged_layout': min(['merged hf', 'merged meta', rq], key=lambda n: v[n]['bytes']),
            'requantized_greedy_matches': sum(a == b for a, b in zip(v[rq]['completions'], v['unmerged']['completions'])),
            'merged_speedup_over_unmerged': v['merged hf']['tokens_per_second'] / v['unmerged']['tokens_per_second']}

def speedup_answers():
    j = load('lora_vs_qlora.json'); r = {(x['size'], x['method']): x for x in j['runs']}
    sizes = j['config']['sizes']; lo, hi = min(sizes), max(sizes)
    ratio = lambda n, k: r[(n, 'QLoRA')][k] / r[(n, 'LoRA')][k]
    gap = 100 * (ratio(hi, 'eval_loss_after') - 1)
    return {'lab': 'speedup', 'qlora_over_lora_time': {str(n): ratio(n, 'train_runtime') for n in sizes},
            'qlora_over_lora_time_grows_with_size': ratio(hi, 'train_runtime') > ratio(lo, 'train_runtime'),
            'qlora_frozen_memory_below_lora': all(ratio(n, 'frozen_linears_bytes') < 1 for n in sizes),
            'frozen_memory_ratio': 1 / ratio(hi, 'frozen_linears_bytes'),
            'qlora_bits_per_weight': r[(hi, 'QLoRA')]['linear_bits_per_weight'],
            'planned_memory_ratio': ratio(hi, 'planned_memory_bytes'),
            'both_methods_lower_eval_loss': all(x['eval_loss_after'] < x['eval_loss_before'] for x in j['runs']),
            'loss_gap_percent': gap, 'qlora_matches_lora': abs(gap) <= 1.0}

exec(sys.argv[1])
EOF
py() { python3 "$tmp/edit.py" "$1"; }
full_score() { grep -qE '^score: ([0-9]+)/\1$' "$1"; }
not_full_score() { grep -qE '^score: [0-9]+/[0-9]+$' "$1" && ! full_score "$1"; }
fail_line() { grep '^FAIL ' "$2" | grep -qF -- "$1"; }
only_check_lines() { ! grep -vqE '^(grading the (merge|speedup) lab in |ok   |FAIL |score: [0-9]+/[0-9]+$)' "$1"; }

# The programs, at CI sizes, on one thread (a few seconds together; two OpenMP threads on a busy 2-core machine
# take ten times longer).
"$build/experiments/merge_compare" --quick --threads 1 --output-dir "$tmp/merge" >"$tmp/merge.log" 2>&1
expect "merge_compare --quick exits 0" test $? -eq 0
"$build/experiments/lora_vs_qlora" --sizes 16,32,64 --epochs 1 --val-size 16 --threads 1 --output-dir "$tmp/speedup" >"$tmp/speedup.log" 2>&1
expect "lora_vs_qlora at sizes 16,32,64 exits 0" test $? -eq 0
(cd "$tmp/merge" && py "save('answers.json', merge_answers())") && (cd "$tmp/speedup" && py "save('answers.json', speedup_answers())")
expect "reference answers written" test $? -eq 0

# The reference solutions: full marks, exit 0, nothing but check lines.
for lab in merge speedup; do
  "$grade" --lab $lab "$tmp/$lab" >"$tmp/$lab.out" 2>&1
  expect "$lab reference: exit 0" test $? -eq 0
  expect "$lab reference: full score" full_score "$tmp/$lab.out"
  expect "$lab reference: every line is a check line" only_check_lines "$tmp/$lab.out"
  full_score "$tmp/$lab.out" || cat "$tmp/$lab.out"
done
expect "merge reference: 30 checks or more" test "$(grep -cE '^(ok|FAIL) ' "$tmp/merge.out")" -ge 30
expect "speedup reference: a claim per size" test "$(grep -c '^ok   answers.json: qlora_over_lora_time\["' "$tmp/speedup.out")" -eq 3

# fault NAME LAB TEXT PYTHON: a copy of the reference's files, edited by PYTHON run in it, is graded: exit 0, less than
# full marks, and a FAIL line containing TEXT.
fault() {
  local name="$1" lab="$2" text="$3" code="$4" d="$tmp/faults/$1"
  mkdir -p "$d" && cp "$tmp/$lab"/*.json "$tmp/$lab"/*.csv "$tmp/$lab"/*.png "$d"/
  (cd "$d" && py "$code") || { bad "$name: could not make the broken copy"; return; }
  "$grade" --lab "$lab" "$d" >"$d.out" 2>&1; local rc=$?
  expect "$name: graded (exit 0)" test $rc -eq 0
  expect "$name: less than full score" not_full_score "$d.out"
  expect "$name: FAIL names it: $text" fail_line "$text" "$d.out"
  fail_line "$text" "$d.out" || grep '^FAIL\|^score' "$d.out"
}

# Lab 1: merge methods.
fault "merge: missing PNG" merge "merge_compare.png is missing" "import os; os.remove('merge_compare.png')"
fault "merge: missing answers.json" merge "answers.json is missing" "import os; os.remove('answers.json')"
fault "merge: PNG that is not one" merge "merge_compare.png does not start with the PNG signature" "open('merge_compare.png', 'w').write('plot')"
fault "merge: truncated JSON" merge "merge_compare.json is not valid JSON" "t = open('merge_compare.json').read(); open('merge_compare.json', 'w').write(t[:len(t) // 2])"
fault "merge: NaN literal in answers.json" merge "answers.json is not valid JSON" \
  "a = merge_answers(); a['max_abs_dlogit'] = float('nan'); open('answers.json', 'w').write(json.dumps(a))"
fault "merge: wrong claim merged_equals_unmerged" merge "answers.json: merged_equals_unmerged = false but the data say true" \
  "a = load('answers.json'); a['merged_equals_unmerged'] = False; save('answers.json', a)"
fault "merge: ratio off by 50%" merge "answers.json: merged_speedup_over_unmerged = " \
  "a = load('answers.json'); a['merged_speedup_over_unmerged'] *= 1.5; save('answers.json', a)"
fault "merge: fraction given in percent" merge "answers.json: fraction_of_gain_kept = " \
  "a = load('answers.json'); a['fraction_of_gain_kept'] *= 100; save('answers.json', a)"
fault "merge: wrong smallest layout" merge "answers.json: smallest_merged_layout = \"merged meta\" but the data say" \
  "a = load('answers.json'); a['smallest_merged_layout'] = 'merged meta'; save('answers.json', a)"
fault "merge: claim of the wrong type" merge "answers.json: max_abs_dlogit is string \"small\", not a number" \
  "a = load('answers.json'); a['max_abs_dlogit'] = 'small'; save('answers.json', a)"
fault "merge: claim missing" merge "answers.json: key 'fraction_of_gain_kept' is missing" \
  "a = load('answers.json'); del a['fraction_of_gain_kept']; save('answers.json', a)"
fault "merge: answers of the other lab" merge "answers.json: lab = \"speedup\" but this is the \"merge\" lab" \
  "a = load('answers.json'); a['lab'] = 'speedup'; save('answers.json', a)"
fault "merge: CSV perplexity disagrees with the JSON" merge "merge_compare.csv: row 'merged hf', column 'perplexity' = 99.0000 but" \
  "csv_set('merge_compare.csv', lambda c: c[0] == 'merged hf', 'perplexity', '99.0000')"
fault "merge: CSV greedy count disagrees" merge "merge_compare.csv: row 'merged meta', column 'greedy text = unmerged' = 0/4 but" \
  "csv_set('merge_compare.csv', lambda c: c[0] == 'merged meta', 'greedy text = unmerged', '0/4')"
fault "merge: NaN in the CSV" merge "merge_compare.csv: row 'unmerged', column 'tokens/s' = 'nan' is not a finite number" \
  "csv_set('merge_compare.csv', lambda c: c[0] == 'unmerged', 'tokens/s', 'nan')"
fault "merge: CSV row with a field missing" merge "merge_compare.csv: line 3 has 7 fields, the header 8" \
  "t = open('merge_compare.csv').read().splitlines(); t[2] = t[2].rsplit(',', 1)[0]; open('merge_compare.csv', 'w').write('\n'.join(t) + '\n')"
fault "merge: NaN in the JSON (written as null)" merge "merge_compare.json: variants[3] (merged meta).perplexity is null, not a number" \
  "j = load('merge_compare.json'); j['variants'][3]['perplexity'] = None; save('merge_compare.json', j)"
fault "merge: missing variant" merge "merge_compare.json: variants has no 'merged meta'" \
  "j = load('merge_compare.json'); j['variants'] = [v for v in j['variants'] if v['name'] != 'merged meta']; save('merge_compare.json', j)"
fault "merge: no requantized variant" merge "variants has no 'requantized nf4+dq' (merge_compare writes it only over a 4-bit --base" \
  "j = load('merge_compare.json'); j['variants'].pop(); save('merge_compare.json', j)"
fault "merge: empty variants" merge "merge_compare.json: variants is an empty list" \
  "j = load('merge_compare.json'); j['variants'] = []; save('merge_compare.json', j)"
fault "merge: a completion missing" merge "merge_compare.json: variants[2] (merged hf).completions has 3 entries, one per prompt is 4" \
  "j = load('merge_compare.json'); j['variants'][2]['completions'].pop(); save('merge_compare.json', j)"

# Lab 2: LoRA vs QLoRA speed-up.
fault "speedup: missing CSV" speedup "lora_vs_qlora.csv is missing" "import os; os.remove('lora_vs_qlora.csv')"
fault "speedup: answers.json not an object" speedup "answers.json is array [1,2], not an object" "open('answers.json', 'w').write('[1,2]')"
fault "speedup: wrong claim qlora_frozen_memory_below_lora" speedup \
  "answers.json: qlora_frozen_memory_below_lora = false but the data say true" \
  "a = load('answers.json'); a['qlora_frozen_memory_below_lora'] = False; save('answers.json', a)"
fault "speedup: frozen_memory_ratio off by 50%" speedup "answers.json: frozen_memory_ratio = " \
  "a = load('answers.json'); a['frozen_memory_ratio'] *= 1.5; save('answers.json', a)"
fault "speedup: time ratio at one size off by 50%" speedup "answers.json: qlora_over_lora_time.32 = " \
  "a = load('answers.json'); a['qlora_over_lora_time']['32'] *= 0.5; save('answers.json', a)"
fault "speedup: trend claim flipped" speedup "answers.json: qlora_over_lora_time_grows_with_size = " \
  "a = load('answers.json'); a['qlora_over_lora_time_grows_with_size'] = not a['qlora_over_lora_time_grows_with_size']; save('answers.json', a)"
fault "speedup: loss gap sign flipped" speedup "answers.json: loss_gap_percent = " \
  "a = load('answers.json'); a['loss_gap_percent'] = -a['loss_gap_percent'] + (0.2 if abs(a['loss_gap_percent']) < 0.1 else 0); save('answers.json', a)"
fault "speedup: a size missing from the answers" speedup "answers.json: qlora_over_lora_time: key '64' is missing" \
  "a = load('answers.json'); del a['qlora_over_lora_time']['64']; save('answers.json', a)"
fault "speedup: a size the data lack in the answers" speedup "answers.json: qlora_over_lora_time has size \"128\"" \
  "a = load('answers.json'); a['qlora_over_lora_time']['128'] = 1.0; save('answers.json', a)"
fault "speedup: per-size claims as a list" speedup "answers.json: qlora_over_lora_time is array" \
  "a = load('answers.json'); a['qlora_over_lora_time'] = list(a['qlora_over_lora_time'].values()); save('answers.json', a)"
fault "speedup: CSV time disagrees with the JSON" speedup "lora_vs_qlora.csv: row 'N=32 QLoRA', column 'time s' = 99.00 but" \
  "csv_set('lora_vs_qlora.csv', lambda c: c[:2] == ['32', 'QLoRA'], 'time s', '99.00')"
fault "speedup: CSV eval loss disagrees with the JSON" speedup "lora_vs_qlora.csv: row 'N=64 LoRA', column 'eval loss after' = 0.1234 but" \
  "csv_set('lora_vs_qlora.csv', lambda c: c[:2] == ['64', 'LoRA'], 'eval loss after', '0.1234')"
fault "speedup: CSV without a column" speedup "lora_vs_qlora.csv lacks the column(s) 'peak RSS MiB'" \
  "t = open('lora_vs_qlora.csv').read().replace('peak RSS MiB', 'peak RSS'); open('lora_vs_qlora.csv', 'w').write(t)"
fault "speedup: missing size" speedup "lora_vs_qlora.json: runs has no LoRA run at size 64" \
  "j = load('lora_vs_qlora.json'); j['runs'] = [r for r in j['runs'] if r['size'] != 64]; save('lora_vs_qlora.json', j)"
fault "speedup: steps inconsistent with the size" speedup "lora_vs_qlora.json: runs[0] (N=16 LoRA).steps = 3 but size 16, batch_size 8, epochs 1 give 2" \
  "j = load('lora_vs_qlora.json'); j['runs'][0]['steps'] = 3; j['runs'][0]['step_losses'].append(1.0); save('lora_vs_qlora.json', j)"
fault "speedup: NaN eval loss (written as null)" speedup "lora_vs_qlora.json: runs[3] (N=32 QLoRA).eval_loss_after is null, not a number" \
  "j = load('lora_vs_qlora.json'); j['runs'][3]['eval_loss_after'] = None; save('lora_vs_qlora.json', j)"
fault "speedup: NaN step loss" speedup "lora_vs_qlora.json: runs[1] (N=16 QLoRA).step_losses[0] is null, not a number" \
  "j = load('lora_vs_qlora.json'); j['runs'][1]['step_losses'][0] = None; save('lora_vs_qlora.json', j)"
fault "speedup: frozen bytes differ between sizes" speedup "lora_vs_qlora.json: runs[2] (N=32 LoRA).frozen_linears_bytes = 1 but" \
  "j = load('lora_vs_qlora.json'); j['runs'][2]['frozen_linears_bytes'] = 1; save('lora_vs_qlora.json', j)"
fault "speedup: empty runs" speedup "lora_vs_qlora.json: runs is an empty list" \
  "j = load('lora_vs_qlora.json'); j['runs'] = []; save('lora_vs_qlora.json', j)"
fault "speedup: sizes of the wrong type" speedup "lora_vs_qlora.json: config.sizes[0] is string \"16\", not a number" \
  "j = load('lora_vs_qlora.json'); j['config']['sizes'][0] = '16'; save('lora_vs_qlora.json', j)"

# An empty folder: graded, every file named missing, score 0.
mkdir -p "$tmp/empty"
"$grade" --lab speedup "$tmp/empty" >"$tmp/empty.out" 2>&1
expect "empty folder: graded (exit 0)" test $? -eq 0
expect "empty folder: score 0" grep -qE '^score: 0/[0-9]+$' "$tmp/empty.out"
expect "empty folder: each file named missing" test "$(grep -c '^FAIL .* is missing from ' "$tmp/empty.out")" -eq 4

# Usage errors: exit 2 with a message; --help exits 0.
usage() {  # what, expected text, args...
  local what="$1" text="$2"; shift 2
  "$grade" "$@" >"$tmp/u.out" 2>"$tmp/u.err"; local rc=$?
  expect "$what: exit 2" test $rc -eq 2
  expect "$what: says '$text'" grep -qF -- "$text" "$tmp/u.err"
}
usage "no arguments" "--lab is required: merge or speedup"
usage "unknown lab" "unknown --lab 'quant': merge or speedup" --lab quant "$tmp/merge"
usage "no directory" "no results directory given" --lab merge
usage "missing directory" "$tmp/nope: no such directory" --lab merge "$tmp/nope"
usage "unknown flag" "--frobnicate" --lab merge --frobnicate "$tmp/merge"
"$grade" --help >"$tmp/help.out" 2>&1
expect "--help exits 0 and shows the usage" test $? -eq 0 -a -n "$(grep -F 'grade --lab merge|speedup DIR' "$tmp/help.out")"
finish
