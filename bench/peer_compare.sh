#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# loralab vs PyTorch + PEFT: the same training step (r 8 all-linear LoRA, AdamW, clip 1.0) on the same model
# shapes, loralab's build/bench/train_bench against bench/peft_peer.py, each config as its own process (so its
# peak RSS is that config's), interleaved in rounds. Prints a header (CPU, BLAS of both sides), a Markdown table
# (tokens/s, peak RSS and their ratios, loralab's planned vs measured step memory, the frozen linears' bits/weight
# on both sides) and the issue's targets; writes OUT/peer_compare.{csv,md}. --sizes 135M (opt-in) is
# SmolLM2-135M-Instruct from the cached GGUF (scripts/get_model.sh smollm2) on both sides.
# The peer's venv: LORALAB_PEER_VENV=DIR reuses one, else build/peer-venv is created once (CPU torch + PEFT ...).
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "peer_compare: $*" >&2; exit 2; }
usage() {
  cat <<'EOF'
usage: bench/peer_compare.sh [--sizes 260K,30M] [--configs lora,qlora,qlora-nockpt,lora-bf16,qlora-bf16] [--threads 2] [--rounds 2]
                             [--steps N] [--warmup N] [--out build/peer_compare]
  --sizes    model shapes of train_bench: 260K (B 4 x T 64), 30M (B 4 x T 256); 135M: SmolLM2-135M-Instruct from
             ${LORALAB_CACHE:-~/.cache/loralab}/SmolLM2-135M-Instruct.Q4_1.gguf (B 4 x T 256; not a default: it needs
             scripts/get_model.sh smollm2, and a 2-thread round takes minutes)
  --configs  lora: float32 base, checkpointing off; qlora: nf4 + double quant, checkpointing on (PEFT's default);
             qlora-nockpt: nf4 + double quant, checkpointing off; lora-bf16, qlora-bf16: loralab's compute<bf16>
             (the frozen base's products in bf16, float accumulation) against the peer's float32 lora / qlora;
             q4_1 (not a default): loralab only, QLoRA over ggml Q4_1 (the GGUF's own blocks at 135M), ckpt off
  --threads  threads of both sides (train_bench --threads, torch.set_num_threads)
  --replicas loralab's model clones per batch, one thread each (train_bench --replicas; default 1: one model, its
             products threaded); the peer always runs one model on --threads threads
  --rounds   each round runs every config, loralab and PEFT, the order alternating by round; medians over rounds
  --steps    timed steps per run (default 20 at 260K, 3 at 30M, 2 at 135M); --warmup: untimed steps first
             (default 2; 1 at 135M)
  --out      writes peer_compare.csv, peer_compare.md, runs.tsv and every run's log there
env: LORALAB_PEER_VENV=DIR (a venv with torch transformers peft bitsandbytes), LORALAB_TRAIN_BENCH=BINARY
EOF
}
sizes=260K,30M configs=lora,qlora,qlora-nockpt,lora-bf16,qlora-bf16 threads=2 rounds=2 steps= warmup= out=build/peer_compare replicas=1
while (($#)); do
  flag=$1 val=
  case $flag in
    -h|--help) usage; exit 0 ;;
    --sizes=*|--configs=*|--threads=*|--rounds=*|--steps=*|--warmup=*|--out=*|--replicas=*) val=${flag#*=} flag=${flag%%=*}; shift ;;
    --sizes|--configs|--threads|--rounds|--steps|--warmup|--out|--replicas) (($# >= 2)) || die "$flag needs a value"; val=$2; shift 2 ;;
    *) die "unknown argument '$flag' (flags: --sizes --configs --threads --rounds --steps --warmup --out --replicas; --help)" ;;
  esac
  case $flag in
    --sizes) sizes=$val ;; --configs) configs=$val ;; --threads) threads=$val ;; --rounds) rounds=$val ;;
    --steps) steps=$val ;; --warmup) warmup=$val ;; --out) out=$val ;; --replicas) replicas=$val ;;
  esac
done
for s in ${sizes//,/ }; do [[ $s =~ ^(260K|30M|135M)$ ]] || die "--sizes: unknown size '$s' (known: 260K, 30M, 135M)"; done
for c in ${configs//,/ }; do [[ $c =~ ^(lora|qlora|qlora-nockpt|lora-bf16|qlora-bf16|q4_1)$ ]] || die "--configs: unknown config '$c' (known: lora, qlora, qlora-nockpt, lora-bf16, qlora-bf16, q4_1)"; done
[[ -n ${sizes//,/} && -n ${configs//,/} ]] || die "--sizes and --configs need at least one value"
for v in threads rounds steps replicas; do [[ -z ${!v} && $v == steps || ${!v} =~ ^[1-9][0-9]*$ ]] || die "--$v '${!v}': need a positive integer"; done
[[ -z $warmup || $warmup =~ ^[0-9]+$ ]] || die "--warmup '$warmup': need an integer >= 0"
gguf=${LORALAB_CACHE:-$HOME/.cache/loralab}/SmolLM2-135M-Instruct.Q4_1.gguf
[[ ,$sizes, != *,135M,* || -f $gguf ]] || die "--sizes 135M needs $gguf: fetch it with scripts/get_model.sh smollm2"

bin=${LORALAB_TRAIN_BENCH:-build/bench/train_bench}
[[ -x $bin ]] || die "$bin not found: cmake --build build --target train_bench"
if [[ -n ${LORALAB_PEER_VENV:-} ]]; then
  venv=$LORALAB_PEER_VENV
  [[ -x $venv/bin/python ]] || die "LORALAB_PEER_VENV=$venv: no $venv/bin/python"
else
  venv=build/peer-venv
  if [[ ! -e $venv/.loralab-peer-ready ]]; then
    echo "peer_compare: creating $venv (CPU torch, transformers, peft, bitsandbytes, safetensors, accelerate: ~1 GB, once)"
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q --upgrade pip &&
      "$venv/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu &&
      "$venv/bin/pip" install -q transformers peft bitsandbytes safetensors accelerate; } ||
      die "installing the peer into $venv failed (LORALAB_PEER_VENV=DIR reuses a venv that has these packages)"
    touch "$venv/.loralab-peer-ready"
  fi
fi
py=$venv/bin/python
"$py" -c 'import torch, transformers, peft, bitsandbytes' 2>/dev/null || die "$py cannot import torch, transformers, peft and bitsandbytes"
mkdir -p "$out/logs"
tf=$out/logs/time.txt runs=$out/runs.tsv
if [[ -x /usr/bin/time ]]; then timed() { /usr/bin/time -f '%M %U %S' -o "$tf" "$@"; }
else timed() { python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:]); r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{r.ru_maxrss} {r.ru_utime} {r.ru_stime}\n"); sys.exit(rc)' "$tf" "$@"; }
fi
fail() { tail -n 20 "$1" >&2; die "$2 failed (log: $1)"; }
jget() { python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])[sys.argv[2]])' "$@"; }

cpu="$(awk -F': ' '/^model name/ {m = $2} /^cpu family/ {f = $2} /^model[ \t]*:/ {n = $2}
  END {printf "%s (family %s, model %s)", m, f, n}' /proc/cpuinfo), $(nproc) logical CPUs"
echo "peer_compare: $cpu; sizes $sizes, configs $configs, threads $threads, loralab replicas $replicas, rounds $rounds; logs in $out/logs"
for s in ${sizes//,/ }; do  # the peer's random-weight checkpoint, written before anything is timed
  "$py" bench/peft_peer.py --size "$s" --prepare --cache build/peer-cache --gguf "$gguf" > "$out/logs/setup_$s.json" 2> "$out/logs/setup_$s.log" ||
    fail "$out/logs/setup_$s.log" "peft_peer.py --prepare --size $s"
done
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

run() {  # side round size config steps: one process, one line of runs.tsv
  local side=$1 r=$2 s=$3 c=${4%-bf16} n=$5 w=$6 T=256 base=float32 ck=off compute=float log=$out/logs/r$2_$3_$4_$1.log
  local model=(--size "$s") planned= measured= bits=
  [[ $4 == *-bf16 ]] && compute=bf16  # loralab's bf16 products; the peer runs the float32 config of the same name
  [[ $s == 260K ]] && T=64
  [[ $s == 135M ]] && model=(--model "$gguf")
  [[ $c == lora ]] || base=nf4-b64-dq
  [[ $c == q4_1 ]] && base=q4_1
  [[ $c == qlora ]] && ck=on
  if [[ $side == loralab ]]; then
    timed "$bin" "${model[@]}" --batch 4 --seq-len $T --bases $base --checkpointing $ck --compute $compute --rounds 1 --contention false --warmup "$w" \
      --steps "$n" --threads "$threads" --replicas "$replicas" --csv "$out/logs/run.csv" > "$log" 2>&1 || fail "$log" "train_bench"
    read -r step tps planned measured bits < <(awk -F, 'NR == 1 {for (i = 1; i <= NF; ++i) c[$i] = i}  # columns by name
      NR == 2 {print $c["step_ms"] / 1000, $c["tokens_per_s"], $c["planned_mib"], $c["measured_mib"], $c["linear_bits_per_weight"]}' "$out/logs/run.csv")
  else
    timed "$py" bench/peft_peer.py --size "$s" --config "$c" --warmup "$w" --steps "$n" --threads "$threads" --gguf "$gguf" \
      --cache build/peer-cache > "$log" 2> "$log.err" || fail "$log.err" "peft_peer.py"
    step=$(jget "$log" step_s) tps=$(jget "$log" tokens_per_s) bits=$(jget "$log" linear_bits_per_weight)
  fi
  read -r rss ut st < "$tf"
  own_cpu=$(awk -v a="$own_cpu" -v u="$ut" -v s="$st" 'BEGIN {print a + u + s}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$4" "$side" "$step" "$tps" "$((rss / 1024))" "$planned" "$measured" \
    "$bits" >> "$runs"
  printf '  round %s  %-4s %-12s %-7s %8.1f ms/step %9.0f tokens/s  peak RSS %5d MiB\n' "$r" "$s" "$4" "$side" \
    "$(awk -v x="$step" 'BEGIN {print 1e3 * x}')" "$tps" "$((rss / 1024))"
}

busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
load0=$(cut -d' ' -f1-3 /proc/loadavg) busy0=$(busy) t0=$(date +%s.%N) own_cpu=0
printf 'round\tsize\tconfig\tside\tstep_s\ttokens_per_s\tpeak_rss_mib\tplanned_mib\tmeasured_mib\tlinear_bits\n' > "$runs"
for ((r = 1; r <= rounds; r++)); do
  for s in ${sizes//,/ }; do
    n=${steps:-$(case $s in 260K) echo 20 ;; 30M) echo 3 ;; *) echo 2 ;; esac)} w=${warmup:-$([[ $s == 135M ]] && echo 1 || echo 2)}
    for c in ${configs//,/ }; do
      if [[ $c == q4_1 ]]; then  # loralab only: PEFT has no Q4_1 base; ggml blocks need K % 32 == 0, which 260K is not
        if [[ $s == 260K ]]; then ((r > 1)) || echo "  (q4_1 skipped at 260K: its FFN K = 172 is not a multiple of ggml's block 32)"
        else run loralab $r $s $c $n $w; fi
      elif ((r % 2)); then run loralab $r $s $c $n $w; run peft $r $s $c $n $w; else run peft $r $s $c $n $w; run loralab $r $s $c $n $w; fi
    done
  done
done
others=$(awk -v b0="$busy0" -v b1="$(busy)" -v t0="$t0" -v t1="$(date +%s.%N)" -v own="$own_cpu" -v hz="$(getconf CLK_TCK)" \
  'BEGIN {x = ((b1 - b0) / hz - own) / (t1 - t0); printf "%.2f", x < 0 ? 0 : x}')
load="load average (1, 5, 15 min) $load0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (this run's own $threads threads included); other processes kept $others of $(nproc) cores busy"
awk -v o="$others" -v l="${load0%% *}" 'BEGIN {exit !(o > 0.1 || l > 0.5)}' && load="WARNING: the machine was busy: $load"

blas=$(cat "$out"/logs/r1_*_loralab.log | grep -m1 '^blas:' || true)  # the first run's: its GFLOP/s is that moment's
[[ -n $blas ]] || blas="no 'blas:' line from train_bench; linked: $(ldd "$bin" | awk '/blas|mkl|lapack/ {print $1}' | paste -sd' ')"
s1=${sizes%%,*}
python3 - "$runs" "$out" "$cpu" "$blas" "$(jget "$out/logs/setup_$s1.json" torch_info)" \
  "$(jget "$out/logs/setup_$s1.json" versions)" "$load" "threads $threads, loralab replicas $replicas, rounds $rounds, warmup ${warmup:-2 (1 at 135M)}, steps ${steps:-20 at 260K, 3 at 30M, 2 at 135M}" <<'EOF'
import ast, csv, statistics, sys
runs, out, cpu, blas, torch_info, versions, load, setup = sys.argv[1:]
versions = ", ".join(f"{k} {v}" for k, v in ast.literal_eval(versions).items())
names = {"lora": "LoRA (float32, ckpt off)", "qlora": "QLoRA nf4+DQ, ckpt on", "qlora-nockpt": "QLoRA nf4+DQ, ckpt off",
         "lora-bf16": "LoRA, loralab compute<bf16> vs PEFT float32", "qlora-bf16": "QLoRA ckpt on, loralab compute<bf16> vs PEFT float32",
         "q4_1": "QLoRA ggml Q4_1 (loralab only), ckpt off"}
cells = {}
for row in csv.DictReader(open(runs), delimiter="\t"):
    cells.setdefault((row["size"], row["config"]), {}).setdefault(row["side"], []).append(row)
nan = float("nan")
def num(x):
    return float(x) if x not in ("", None) else nan
rows = []
for (size, config), sides in cells.items():
    tps = {k: statistics.median(float(x["tokens_per_s"]) for x in v) for k, v in sides.items()}
    rss = {k: max(float(x["peak_rss_mib"]) for x in v) for k, v in sides.items()}
    last = {k: v[-1] for k, v in sides.items()}
    tps.setdefault("peft", nan), rss.setdefault("peft", nan), last.setdefault("peft", {})
    rows.append(dict(size=size, config=config, loralab_tokens_per_s=tps["loralab"], peft_tokens_per_s=tps["peft"],
                     speed_ratio=tps["loralab"] / tps["peft"], loralab_peak_rss_mib=rss["loralab"],
                     peft_peak_rss_mib=rss["peft"], rss_ratio=rss["loralab"] / rss["peft"],
                     loralab_planned_mib=num(last["loralab"].get("planned_mib")),
                     loralab_measured_mib=num(last["loralab"].get("measured_mib")),
                     loralab_bits_per_weight=num(last["loralab"].get("linear_bits")),
                     peft_bits_per_weight=num(last["peft"].get("linear_bits"))))
    rows[-1]["memory_ratio"] = rows[-1]["loralab_measured_mib"] / rows[-1]["loralab_planned_mib"]
def f(v, spec, unit=""):
    return "—" if v != v else f"{v:{spec}}{unit}"
md = [f"CPU: {cpu}", f"loralab: {blas}", f"PEFT side: {versions}; {torch_info}", setup, load, "",
      "| size | config | loralab tokens/s | PEFT tokens/s | speed ratio (loralab ÷ PEFT) | loralab peak RSS MiB "
      "| PEFT peak RSS MiB | RSS ratio (loralab ÷ PEFT) | loralab planned MiB | loralab measured MiB | "
      "frozen linears bits/weight loralab | PEFT |", "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
md += [f"| {r['size']} | {names[r['config']]} | {r['loralab_tokens_per_s']:.0f} | {f(r['peft_tokens_per_s'], '.0f')} | "
       f"{f(r['speed_ratio'], '.2f', 'x')} | {r['loralab_peak_rss_mib']:.0f} | {f(r['peft_peak_rss_mib'], '.0f')} | "
       f"{f(r['rss_ratio'], '.2f', 'x')} | {f(r['loralab_planned_mib'], '.1f')} | {f(r['loralab_measured_mib'], '.1f')} | "
       f"{f(r['loralab_bits_per_weight'], '.3f')} | {f(r['peft_bits_per_weight'], '.3f')} |" for r in rows]
md += ["", "loralab planned MiB: the trainer's memory plan for a step (weights, quantization statistics, adapters, grads, "
       "optimizer, activations, workspace); measured MiB: the run's peak RSS less the RSS before its model was built "
       "(the last round's run)."]
def target(text, picked, key, ok, worst):
    vals = [(r[key], names[r["config"]] + " " + r["size"]) for r in rows if picked(r) and r[key] == r[key]]
    if not vals: return f"- {text}: not measured in this run"
    v, where = worst(vals)
    return f"- {text}: {v:.2f}x{'' if len(vals) == 1 else ' (worst: ' + where + ')'}: {'met' if ok(v) else 'NOT met'}"
md += ["", "Targets (issue 10):",
       target("30M LoRA speed ≥ 1.5x PEFT", lambda r: r["size"] == "30M" and r["config"] == "lora", "speed_ratio", lambda v: v >= 1.5, min),
       target("30M QLoRA (ckpt on) speed ≥ 1.5x PEFT", lambda r: r["size"] == "30M" and r["config"] == "qlora", "speed_ratio", lambda v: v >= 1.5, min),
       target("30M with compute<bf16> ≥ 2x PEFT", lambda r: r["size"] == "30M" and r["config"].endswith("-bf16"), "speed_ratio", lambda v: v >= 2, min),
       target("260K speed ≥ 5x PEFT, every config", lambda r: r["size"] == "260K", "speed_ratio", lambda v: v >= 5, min),
       target("peak RSS ≤ 0.5x PEFT, every row", lambda r: True, "rss_ratio", lambda v: v <= 0.5, max),
       ""]
mem = [r for r in rows if r["memory_ratio"] == r["memory_ratio"]]
if mem:  # issue 11: the trainer's plan = what the step adds to the RSS, within 5 % or 2 MiB (the runtime's own pages)
    w = max(mem, key=lambda r: abs(r["memory_ratio"] - 1))
    ok = all(abs(r["memory_ratio"] - 1) <= 0.05 or abs(r["loralab_measured_mib"] - r["loralab_planned_mib"]) <= 2 for r in mem)
    md += [f"Issue 11: loralab measured ÷ planned step memory, every row: worst {w['memory_ratio']:.3f}x "
           f"({w['loralab_measured_mib'] - w['loralab_planned_mib']:+.1f} MiB, {names[w['config']]} {w['size']}); "
           f"bound ±5 % or ±2 MiB: {'met' if ok else 'NOT met'}"]
open(f"{out}/peer_compare.md", "w").write("\n".join(md) + "\n")
with open(f"{out}/peer_compare.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader(), w.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
print("\n" + "\n".join(md))
EOF
