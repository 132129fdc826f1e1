#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Data-parallel scaling on this machine (loopback): the trainer's step (build/bench/train_bench, float32 base, r 8
# all-linear, checkpointing off) with --grad-accum 2 micro-batches per step, run three ways in each round:
#   1 process x 1 thread, 1 process x 2 threads (OpenMP inside every product), 2 MPI ranks x 1 thread (each rank one
#   micro-batch, one gradient sum per step);
# and prints tokens/s, the ratios (2 ranks ÷ 1 rank: the scaling; 2 ranks ÷ 2 threads: coarse vs fine parallelism)
# and the bytes and milliseconds of the gradient sum per step. The model beyond this machine is docs/mpi.md's.
#   bench/mpi_scaling.sh [--sizes 260K,30M] [--rounds 2]        (about 3 minutes on 2 idle cores)
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "mpi_scaling: $*" >&2; exit 2; }
sizes=260K,30M rounds=2
while (($#)); do
  case $1 in
    --sizes) sizes=${2:?--sizes needs a value}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
    -h|--help) sed -n '3,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (flags: --sizes --rounds)" ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds '$rounds': need a positive integer"
for s in ${sizes//,/ }; do [[ $s =~ ^(260K|5M|30M)$ ]] || die "--sizes: unknown size '$s' (known: 260K, 5M, 30M)"; done
bin=build/bench/train_bench
[[ -x $bin ]] || die "$bin not found: cmake --build build --target train_bench"
command -v mpirun >/dev/null || die "mpirun not found (apt-get install openmpi-bin libopenmpi-dev; then rebuild)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT

echo "mpi_scaling: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(mpirun --version | head -1)"
"$bin" --size 260K --steps 1 --warmup 0 --rounds 1 --bases float32 --checkpointing off --contention false 2>/dev/null | grep -m1 '^blas:' || true
row() { grep -E '^\| float32 \| off \|' "$1" | awk -F'|' '{gsub(/ /, "", $4); gsub(/ /, "", $5); print $4, $5}'; }  # ms/step tokens/s
printf '\n| size | B x T x grad-accum | 1 rank x 1 thread tokens/s | 1 rank x 2 threads | 2 ranks x 1 thread | 2 ranks ÷ 1 rank | 2 ranks ÷ 2 threads | gradient sum per step |\n'
printf '|---|---|--:|--:|--:|--:|--:|---|\n'
for size in ${sizes//,/ }; do
  case $size in 260K) shape=(--batch 4 --seq-len 64 --steps 20 --warmup 2) ;; 5M) shape=(--batch 4 --seq-len 128 --steps 6 --warmup 1) ;;
                *) shape=(--batch 4 --seq-len 256 --steps 3 --warmup 1) ;; esac
  common=(--size "$size" "${shape[@]}" --grad-accum 2 --bases float32 --checkpointing off --contention false --rounds 1)
  declare -A tps=() sum=()
  for ((r = 1; r <= rounds; ++r)); do  # the three ways interleaved, so a drifting machine slows them alike
    "$bin" "${common[@]}" --threads 1 >"$out/one.$r" 2>&1 || die "1 rank x 1 thread failed: $(tail -3 "$out/one.$r")"
    "$bin" "${common[@]}" --threads 2 >"$out/two.$r" 2>&1 || die "1 rank x 2 threads failed: $(tail -3 "$out/two.$r")"
    mpirun --oversubscribe -np 2 "$bin" "${common[@]}" --threads 1 >"$out/mpi.$r" 2>&1 || die "2 ranks failed: $(tail -3 "$out/mpi.$r")"
    for k in one two mpi; do tps[$k]+="$(row "$out/$k.$r" | cut -d' ' -f2) "; done
    sum[mpi]+="$(grep -o '[0-9.]* ms/step summing' "$out/mpi.$r" | head -1 | cut -d' ' -f1) "
  done
  med() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
  one=$(med "${tps[one]}") two=$(med "${tps[two]}") mpi=$(med "${tps[mpi]}") ms=$(med "${sum[mpi]}")
  kib=$(grep -o 'summing [0-9.]* KiB' "$out/mpi.1" | head -1 | cut -d' ' -f2)
  printf '| %s | %s x %s x 2 | %.0f | %.0f | %.0f | %.2f | %.2f | %s |\n' "$size" "${shape[1]}" "${shape[3]}" "$one" "$two" "$mpi" \
    "$(awk -v a="$mpi" -v b="$one" 'BEGIN { print a / b }')" "$(awk -v a="$mpi" -v b="$two" 'BEGIN { print a / b }')" "$ms ms for $kib KiB"
done
echo
echo "tokens/s: medians over $rounds round(s) of the step's tokens (B x T x grad-accum) per second; the gradient sum is MPI_Reduce"
echo "+ MPI_Bcast of every adapter gradient (4 bytes each) over shared memory (dist/group.hpp)."
