#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fuzzes loralab's file readers with libFuzzer (clang++ -fsanitize=fuzzer,address,undefined), one target per
# reader (fuzz/*.cpp; docs/fuzzing.md).
#
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER_ARGS...]   one target for SECONDS
#   scripts/fuzz.sh all SECONDS                          every target, SECONDS each (what CI runs)
#   scripts/fuzz.sh build [TARGET...]                    only (re)build
#   scripts/fuzz.sh list                                 the targets
#
# Builds into build-fuzz/ (only what changed: each binary has its dependency list). Each run starts from the seeds
# (fuzz/corpus/TARGET), the regression corpus (tests/fuzz_regressions/TARGET) and what earlier runs kept
# (build-fuzz/corpus/TARGET), with the format's dictionary (fuzz/dict/TARGET.dict). A finding (crash, sanitizer
# report, an exception other than loralab::error, a timeout or out-of-memory) stops the run, leaves the input in
# build-fuzz/artifacts/TARGET/ and exits non-zero; copy that file to tests/fuzz_regressions/TARGET/ with the fix.
# Needs clang, libclang-rt-14-dev (libFuzzer) and libomp-dev: scripts/setup.sh --fuzz installs them.
# LORALAB_FUZZ_TIMEOUT (default 10): seconds one input may run before it is a hang; LORALAB_FUZZ_CXX: the compiler.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '3,10p' "$0" | sed 's/^# \{0,1\}//'; }
targets() { for f in fuzz/*.cpp; do b=$(basename "$f" .cpp); [ "$b" = replay_main ] || echo "$b"; done; }

out=build-fuzz
cxx="${LORALAB_FUZZ_CXX:-clang++}"
# -O1 and line tables only: what libFuzzer's docs suggest, and it halves the compile time of full -g.
flags=(-std=c++20 -O1 -gline-tables-only -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fopenmp -ffp-contract=off -Wall -Wextra -Wno-pass-failed -Iinclude -Ifuzz -isystem /usr/include/eigen3)
libs=(-lsentencepiece)

# Bytes libFuzzer may grow an input to: above the largest seed of the target, small enough that every run is quick.
max_len() {
  case "$1" in
    gguf|peft_adapter|bpe_tokenizer_json|bnb_quant_state) echo 131072 ;;
    *) echo 65536 ;;
  esac
}

needs_build() {
  local t=$1 bin=$out/$1
  [ -x "$bin" ] && [ -f "$bin.d" ] || return 0
  # The dependency file lists the source and every header it included ("bin: a.cpp b.hpp \").
  local dep
  for dep in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$bin.d"); do
    [ "$dep" -nt "$bin" ] && return 0
  done
  return 1
}

build_one() {
  local t=$1
  if needs_build "$t"; then
    local start=$SECONDS
    nice -n 19 "$cxx" "${flags[@]}" -MMD -MF "$out/$t.d" -MT "$out/$t" "fuzz/$t.cpp" -o "$out/$t.tmp" "${libs[@]}"
    mv "$out/$t.tmp" "$out/$t"
    echo "fuzz: built $out/$t in $((SECONDS - start)) s"
  fi
}

build() {
  command -v "$cxx" >/dev/null || { echo "fuzz: $cxx not found (scripts/setup.sh --fuzz installs clang)" >&2; exit 1; }
  mkdir -p "$out"
  local t running=0 failed=0 jobs
  jobs=$(nproc)
  for t in "$@"; do
    [ -f "fuzz/$t.cpp" ] || { echo "fuzz: no target '$t' (scripts/fuzz.sh list)" >&2; exit 2; }
  done
  # A pool of nproc compilers: the next one starts as soon as any one finishes.
  for t in "$@"; do
    if ((running >= jobs)); then wait -n || failed=1; ((running--)); fi
    build_one "$t" &
    ((++running))
  done
  while ((running > 0)); do wait -n || failed=1; ((running--)); done
  ((failed == 0)) || { echo "fuzz: the build failed (the compiler's messages are above)" >&2; exit 1; }
}

run_one() {
  local t=$1 seconds=$2
  shift 2
  local corpus=$out/corpus/$t artifacts=$out/artifacts/$t log=$out/$t.log dict=()
  mkdir -p "$corpus" "$artifacts" "tests/fuzz_regressions/$t"
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  local start=$SECONDS rc=0
  # -rss_limit_mb: a reader that allocates what a header claims instead of what the file holds is a finding;
  # -timeout: one input taking longer than LORALAB_FUZZ_TIMEOUT (10 s) is a hang.
  local timeout=${LORALAB_FUZZ_TIMEOUT:-10}
  nice -n 19 "$out/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout="$timeout" -max_len="$(max_len "$t")" \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" "$@" \
    "$corpus" "fuzz/corpus/$t" "tests/fuzz_regressions/$t" >"$log" 2>&1 || rc=$?
  local execs
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  local timeout_input
  timeout_input=$(ls "$artifacts"/timeout-* 2>/dev/null | head -1 || true)
  if ((rc != 0)) && [ -n "$timeout_input" ] && nice -n 19 "$out/$t" -timeout="$timeout" "$timeout_input" >/dev/null 2>&1; then
    # A process paused from outside (SIGSTOP on a shared machine) looks like a hang; a real one hangs again.
    echo "fuzz: $t: a timeout that does not reproduce ($timeout_input runs in time; was the process paused?), not a finding" >&2
    rm -f "$timeout_input"
    rc=0
  fi
  if ((rc != 0)); then
    echo "fuzz: $t: FINDING after $((SECONDS - start)) s (exit $rc); the log is $log, the input:" >&2
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|artifact_prefix|Test unit written|terminate called|  what\(\))' "$log" | head -20 >&2
    return 1
  fi
  echo "fuzz: $t: ${execs:-?} executions in $((SECONDS - start)) s, no finding (corpus $corpus: $(ls "$corpus" | wc -l) inputs)"
}

case "${1:-}" in
  ""|-h|--help) usage; exit 0 ;;
  list) targets; exit 0 ;;
  build)
    shift
    if (($#)); then build "$@"; else mapfile -t all < <(targets); build "${all[@]}"; fi
    exit 0 ;;
esac

target=$1
seconds=${2:?"usage: scripts/fuzz.sh TARGET|all SECONDS (scripts/fuzz.sh --help)"}
shift 2
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz: SECONDS must be a whole number, got '$seconds'" >&2; exit 2; }
((seconds > 0)) || { echo "fuzz: 0 seconds: nothing to do"; exit 0; }
start=$SECONDS
if [ "$target" = all ]; then
  mapfile -t list < <(targets)
else
  list=("$target")
fi
build "${list[@]}"
echo "fuzz: built in $((SECONDS - start)) s"
found=()
for t in "${list[@]}"; do run_one "$t" "$seconds" "$@" || found+=("$t"); done
echo "fuzz: ${#list[@]} target(s) in $((SECONDS - start)) s (build and runs)"
if ((${#found[@]})); then
  echo "fuzz: findings in: ${found[*]} (inputs under $out/artifacts/; each becomes a file in tests/fuzz_regressions/TARGET/)" >&2
  exit 1
fi
