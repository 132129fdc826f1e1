#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every program's header: the BLAS library, its kernel and a measured sgemm rate on stderr ("blas:"); a kernel
# below the CPU chosen by OPENBLAS_CORETYPE is named in a warning; OpenMP threads wait passively unless the user
# chose (the runtime's own report, OMP_DISPLAY_ENV); the user's OpenMP variables still reach the runtime.
# (The in-process replacement of a fallback kernel is tested in tests/core/blas_test.cpp.)
set -u
build="$1"; shared="$3"  # $2: the fixtures tool, unused here
. "$(dirname "$0")/lib.sh"
bin="$build/experiments"; M="$shared/models"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
gen=("$bin/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --prompt "Once" --max-new-tokens 4 --threads 1)

env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=true "${gen[@]}" >"$tmp/out.txt" 2>"$tmp/err.txt"
expect "generate still writes its text to stdout" test -s "$tmp/out.txt"
expect "stdout has no blas line" bash -c "! grep -q '^blas:' '$tmp/out.txt'"
expect "the header names the BLAS library" contains "$tmp/err.txt" "^blas: OpenBLAS"
expect "the header names the kernel and the CPU" contains "$tmp/err.txt" "kernel [A-Za-z0-9_]* on "
expect "the header has a measured sgemm rate" grep -Eq "sgemm 1024\^3 [0-9]+\.[0-9] GFLOP/s" "$tmp/err.txt"
expect "the runtime waits passively by default" contains "$tmp/err.txt" "OMP_WAIT_POLICY = 'PASSIVE'"
expect "the header says so" contains "$tmp/err.txt" "threads wait passively"
expect "no warning on a correct kernel" bash -c "! grep -q 'WARNING' '$tmp/err.txt'"

env OMP_WAIT_POLICY=active OMP_DISPLAY_ENV=true "${gen[@]}" >/dev/null 2>"$tmp/err2.txt"
expect "OMP_WAIT_POLICY=active is the user's to choose" contains "$tmp/err2.txt" "OMP_WAIT_POLICY = 'ACTIVE'"
env -u OMP_WAIT_POLICY OMP_THREAD_LIMIT=5 OMP_DISPLAY_ENV=true "${gen[@]}" >/dev/null 2>"$tmp/err3.txt"
expect "the user's other OpenMP variables reach the runtime" contains "$tmp/err3.txt" "OMP_THREAD_LIMIT = '5'"

# A kernel below the CPU's instruction sets, chosen by the user: kept, and named in a warning.
if grep -q ' avx ' /proc/cpuinfo; then
  OPENBLAS_CORETYPE=Prescott "${gen[@]}" >"$tmp/out4.txt" 2>"$tmp/err4.txt"
  expect "a Prescott kernel still gives the same text" cmp -s "$tmp/out4.txt" "$tmp/out.txt"
  expect "OPENBLAS_CORETYPE=Prescott is kept" contains "$tmp/err4.txt" "kernel Prescott on "
  expect "and named in a warning" contains "$tmp/err4.txt" "WARNING: kernel Prescott (chosen by OPENBLAS_CORETYPE) is below this CPU"
else
  echo "skipped: the Prescott warning needs a CPU with AVX"
fi

# OMP_DYNAMIC=true once hung OpenBLAS's threaded sgemm (fewer threads than it split the work for): teams stay whole.
OMP_DYNAMIC=true timeout 60 "$bin/generate" --model "$M/stories260K.bin" --tokenizer "$M/tok512.model" --prompt "Once" \
  --max-new-tokens 4 --threads 2 >"$tmp/out5.txt" 2>/dev/null
expect "OMP_DYNAMIC=true with 2 threads finishes with the same text" cmp -s "$tmp/out5.txt" "$tmp/out.txt"

"$bin/generate" --help >"$tmp/help.txt" 2>&1
expect "--help prints no blas line" bash -c "! grep -q '^blas:' '$tmp/help.txt'"
finish
