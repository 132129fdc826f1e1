#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Scale-out under mpirun (loopback, --oversubscribe -np 2 on this machine; docs/mpi.md), stories260K:
#   - a sweep's cells shared by 2 ranks give the single process's table (every metric but the times, exactly);
#   - data-parallel finetune: 2 ranks x grad-accum 2 equals one process with grad-accum 2 (the adapter, bit for bit:
#     two terms add the same way), and 2 ranks x grad-accum 4 within float reduction order;
#   - a rank killed mid-run: the job fails naming it, every checkpoint left is complete, and one process --resume
#     from it (a different rank count) ends at the uninterrupted run's adapter;
#   - bad input, refused on rank 0 once: more ranks than cells, fewer micro-batches than ranks, ranks with different
#     flags or different model files (an MPMD launch).
# Skipped (exit 77) when the build has no MPI (argument 4 empty) or mpirun is missing.
set -u
build="$1"; shared="$3"; mpiexec="${4:-}"
. "$(dirname "$0")/lib.sh"
if [ -z "$mpiexec" ] || ! command -v "$mpiexec" >/dev/null; then
  echo "skipped: this build has no MPI (apt-get install libopenmpi-dev openmpi-bin; scripts/setup.sh --all)"; exit 77
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI runs as root
export OMPI_MCA_btl_vader_single_copy_mechanism=none               # containers refuse CMA (ptrace) between ranks
export OMPI_MCA_rmaps_base_oversubscribe=1
mpi() { "$mpiexec" --oversubscribe "$@"; }
ft="$build/experiments/finetune"; ra="$build/experiments/rank_ablation"; M="$shared/models"; D="$shared/data"
bg=""
tmp=$(mktemp -d); trap 'if [ -n "$bg" ]; then kill -KILL "$bg" 2>/dev/null; wait "$bg" 2>/dev/null; fi; rm -rf "$tmp"' EXIT
common=(--tokenizer "$M/tok512.model" --data "$D/english_quotes.jsonl" --format quotes --seq-len 64 --batch-size 4
        --export-base none --threads 1 --logging-steps 1 --val-size 16)
run=(--model "$M/stories260K.bin" "${common[@]}")
# max |a - b| / max|b| over every tensor of two safetensors files, printed; exit 1 above $3
close() { python3 - "$1" "$2" "$3" <<'EOF'
import json, struct, sys
def read(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: struct.unpack("<%df" % ((v["data_offsets"][1] - v["data_offsets"][0]) // 4), d[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__"}
a, b = read(sys.argv[1]), read(sys.argv[2])
assert a.keys() == b.keys(), "different tensors"
worst = max(max(abs(x - y) for x, y in zip(a[k], b[k])) / max(1e-30, max(abs(y) for y in b[k])) for k in a)
print(f"max relative difference {worst:.3g}"); sys.exit(worst > float(sys.argv[3]))
EOF
}
close_curves() { python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = ([json.loads(l) for l in open(d + "/metrics.jsonl") if '"loss"' in l] for d in sys.argv[1:3])
assert len(a) == len(b) and a, "different numbers of steps"
norm = max(abs(x["grad_norm"] - y["grad_norm"]) / y["grad_norm"] for x, y in zip(a, b))
loss = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))  # logged rounded to 4 decimals, as HF does
print(f"grad norms: max relative difference {norm:.3g}; logged losses: max difference {loss:.3g}"); sys.exit(norm > 1e-5 or loss > 1.01e-4)
EOF
}
losses() { python3 -c "import json; print(' '.join('%.6f' % json.loads(l)['loss'] for l in open('$1/metrics.jsonl') if '\"loss\"' in l))"; }

# ---- a sweep: 3 ranks x 2 seeds = 6 cells over 2 ranks, against one process
args=(--quick --ranks 2,4,8 --seeds 2 --threads 1)
"$ra" "${args[@]}" --output-dir "$tmp/sweep1" >"$tmp/sweep1.log" 2>&1
expect "sweep, one process: exit 0" test $? -eq 0
mpi -np 2 "$ra" "${args[@]}" --output-dir "$tmp/sweep2" >"$tmp/sweep2.log" 2>&1
expect "sweep, 2 ranks: exit 0" test $? -eq 0
expect "sweep, 2 ranks: the header names them" contains "$tmp/sweep2.log" "MPI: 2 ranks, 1 threads each"
expect "sweep, 2 ranks: one table (rank 0 alone prints)" test "$(grep -c '^| r |' "$tmp/sweep2.log")" -eq 1
expect "sweep, 2 ranks: every cell kept" test "$(ls "$tmp/sweep2/cells" | wc -l)" -eq 6
same_table() { python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p))["groups"] for p in sys.argv[1:])
keys = [k for k in a[0]["metrics"] if k not in ("train_runtime", "ms_per_step", "tokens_per_second", "peak_rss_mib")]
diff = [(x["label"], k) for x, y in zip(a, b) for k in keys if x["metrics"][k] != y["metrics"][k]]
print("differs:", diff[:3]) if diff else None; sys.exit(bool(diff) or len(a) != len(b))
EOF
}
expect "sweep, 2 ranks: the same table as one process (every metric but the times)" same_table "$tmp/sweep1/rank_ablation.json" "$tmp/sweep2/rank_ablation.json"
# --resume: a lost cell is the only one run again
rm "$tmp/sweep2/cells/cell-3.json"
inodes() { ls -i "$tmp/sweep2/cells" | grep -v "cell-3.json" | sort; }  # a cell written again is a new file (atomic rename)
before=$(inodes)
mpi -np 2 "$ra" "${args[@]}" --output-dir "$tmp/sweep2" --resume >"$tmp/resume.log" 2>&1
expect "sweep --resume: exit 0" test $? -eq 0
expect "sweep --resume: runs only the missing cell" test "$(inodes)" = "$before" -a -f "$tmp/sweep2/cells/cell-3.json"
expect "sweep --resume: the same table" same_table "$tmp/sweep1/rank_ablation.json" "$tmp/sweep2/rank_ablation.json"
# a cell that fails on rank 1 (its kept file is another configuration's): the other cells stand, the report names
# the hole, the job exits 1; removing the file and --resume fills it
python3 -c "
import json; p = '$tmp/sweep2/cells/cell-1.json'; j = json.load(open(p)); j['key'] = 'another run'; json.dump(j, open(p, 'w'))"
mpi -np 2 "$ra" "${args[@]}" --output-dir "$tmp/sweep2" --resume >"$tmp/hole.log" 2>&1
expect "a failed cell: exit 1" test $? -eq 1
expect "a failed cell: named, with its rank and file" grep -q "r=2, seed 43 (rank 1): $tmp/sweep2/cells/cell-1.json: holds the run 'another run'" "$tmp/hole.log"
expect "a failed cell: report.md names it" contains "$tmp/sweep2/report.md" "Not finished"
expect "a failed cell: the error says how to go on" contains "$tmp/hole.log" "1 run(s) did not finish (named in $tmp/sweep2/report.md; the table holds the others): fix the cause and rerun with --resume"
rm "$tmp/sweep2/cells/cell-1.json"
mpi -np 2 "$ra" "${args[@]}" --output-dir "$tmp/sweep2" --resume >"$tmp/filled.log" 2>&1
expect "the hole filled by --resume: exit 0" test $? -eq 0
expect "the hole filled by --resume: the same table" same_table "$tmp/sweep1/rank_ablation.json" "$tmp/sweep2/rank_ablation.json"

# ---- data parallel: 2 ranks x grad-accum 2 (one micro-batch each) = one process, grad-accum 2
"$ft" "${run[@]}" --grad-accum 2 --max-steps 8 --output-dir "$tmp/one" >"$tmp/one.log" 2>&1
expect "finetune, one process: exit 0" test $? -eq 0
mpi -np 2 "$ft" "${run[@]}" --grad-accum 2 --max-steps 8 --output-dir "$tmp/two" >"$tmp/two.log" 2>&1
expect "finetune, 2 ranks: exit 0" test $? -eq 0
expect "finetune, 2 ranks: says what it sums" grep -q "data parallel: 2 ranks share each step.s 2 micro-batch(es) of 4 rows; one sum of 8960 gradient floats (35.0 KiB) per step" "$tmp/two.log"
expect "finetune, 2 ranks: the same loss curve" test "$(losses "$tmp/one")" = "$(losses "$tmp/two")"
expect "finetune, 2 ranks: the same adapter, bit for bit" cmp -s "$tmp/one/adapter_model.safetensors" "$tmp/two/adapter_model.safetensors"
"$ft" "${run[@]}" --grad-accum 4 --max-steps 6 --output-dir "$tmp/one4" >"$tmp/one4.log" 2>&1
mpi -np 2 "$ft" "${run[@]}" --grad-accum 4 --max-steps 6 --output-dir "$tmp/two4" >"$tmp/two4.log" 2>&1
expect "finetune, 2 ranks x grad-accum 4: exit 0" test $? -eq 0
# Four terms add in another order ((g0 + g2) + (g1 + g3) against ((g0 + g1) + g2) + g3): the gradients differ in the last
# bits, and Adam's m / sqrt(v) passes a relative difference on undamped for the smallest elements (measured: 1.0e-5).
expect "finetune, 2 ranks x grad-accum 4: the curves within 1e-5 (grad norm) and one rounding step (the logged loss)" close_curves "$tmp/two4" "$tmp/one4"
expect "finetune, 2 ranks x grad-accum 4: the adapter within 1e-4 (another order of float additions)" \
  close "$tmp/two4/adapter_model.safetensors" "$tmp/one4/adapter_model.safetensors" 1e-4

# ---- a rank killed mid-run (after its first checkpoint); one process resumes
slow=("${run[@]}" --grad-accum 2 --max-steps 200 --save-steps 2)
"$ft" "${slow[@]}" --output-dir "$tmp/ref" >"$tmp/ref.log" 2>&1
mpi -np 2 "$ft" "${slow[@]}" --output-dir "$tmp/k" >"$tmp/k.log" 2>&1 & bg=$!
for ((i = 0; i < 600; ++i)); do [ -n "$(newest "$tmp/k")" ] && break; sleep 0.02; done
victim=""
for p in $(pgrep -f "$tmp/k"); do
  tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && victim=$p
done
expect "kill: rank 1 found after checkpoint-$(newest "$tmp/k")" test -n "$victim"
[ -n "$victim" ] && kill -KILL "$victim"
wait "$bg"; rc=$?; bg=""
expect "kill: the job fails (exit $rc)" test "$rc" -ne 0
expect "kill: mpirun names the killed rank" grep -Eiq "rank 1.*(signal 9|killed)" "$tmp/k.log"
msg=$(intact "$tmp/k"); expect "kill: every checkpoint left is complete ${msg}" test -z "$msg"
expect "kill: not finished" test ! -e "$tmp/k/adapter_model.safetensors"
"$ft" "${slow[@]}" --output-dir "$tmp/k" --resume >"$tmp/k2.log" 2>&1
expect "kill: one process resumes the 2-rank run (exit 0)" test $? -eq 0
expect "kill: the resumed run ends at the uninterrupted adapter" close "$tmp/k/adapter_model.safetensors" "$tmp/ref/adapter_model.safetensors" 1e-5

# ---- bad input: one clear error, from rank 0
once() { test "$(grep -c "error" "$1")" -eq 1 && contains "$1" "$2"; }
mpi -np 3 "$ra" --quick --ranks 2 --threads 1 --output-dir "$tmp/bad1" >"$tmp/bad1.log" 2>&1
expect "more ranks than cells: refused (exit $?)" test $? -ne 0
expect "more ranks than cells: said once" once "$tmp/bad1.log" "mpirun started 3 ranks for a sweep of 1 run(s) (1 configuration(s) x 1 seed(s)): a rank would have nothing to do; use -np 1 or fewer"
mpi -np 2 "$ft" "${run[@]}" --max-steps 2 --output-dir "$tmp/bad2" >"$tmp/bad2.log" 2>&1
expect "grad-accum 1 on 2 ranks: refused" test $? -ne 0
expect "grad-accum 1 on 2 ranks: said once" once "$tmp/bad2.log" "--grad-accum 1 gives 1 micro-batch(es) per optimizer step, shared by 2 ranks"
mpi -np 1 "$ft" "${run[@]}" --grad-accum 2 --max-steps 2 --lr 1e-3 --output-dir "$tmp/bad3" : \
    -np 1 "$ft" "${run[@]}" --grad-accum 2 --max-steps 2 --lr 2e-3 --output-dir "$tmp/bad3" >"$tmp/bad3.log" 2>&1
expect "ranks with different flags: refused" test $? -ne 0
expect "ranks with different flags: said once" once "$tmp/bad3.log" "rank 1 has a different command line from rank 0's"
mkdir -p "$tmp/a" "$tmp/b"; cp "$M/stories260K.bin" "$tmp/a/m.bin"; cp "$M/stories260K.bin" "$tmp/b/m.bin"
printf '\x01' | dd of="$tmp/b/m.bin" bs=1 seek=100000 conv=notrunc status=none  # one weight's byte differs
dp=(--model m.bin "${common[@]}" --grad-accum 2 --max-steps 2 --output-dir out)
mpi -np 1 -wdir "$tmp/a" "$ft" "${dp[@]}" : -np 1 -wdir "$tmp/b" "$ft" "${dp[@]}" >"$tmp/bad4.log" 2>&1
expect "ranks with different model files: refused" test $? -ne 0
expect "ranks with different model files: said once" once "$tmp/bad4.log" "rank 1 has a different model from rank 0's (m.bin on rank 0)"
expect "ranks with different model files: nothing trained" test ! -e "$tmp/a/out/adapter_model.safetensors"
finish
