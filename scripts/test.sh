#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Sets up (if needed), builds everything (every program, bench and test suite: the program tests run the
# programs) and runs every test suite through CTest, then fuzzes every reader for LORALAB_FUZZ_SECONDS each
# (default 20: about 6 minutes on 2 cores, build included; 0 skips fuzzing and its packages; docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds="${LORALAB_FUZZ_SECONDS:-20}"
[[ "$fuzz_seconds" =~ ^[0-9]+$ ]] || { echo "test: LORALAB_FUZZ_SECONDS must be a whole number, got '$fuzz_seconds'" >&2; exit 2; }
setup_args=(--all)
((fuzz_seconds > 0)) && setup_args+=(--fuzz)
scripts/setup.sh "${setup_args[@]}"
# Suites run side by side (-j), each with its own OpenMP team: threads that spin while they wait steal the cores
# the other suite needs (on 2 cores that doubled the test time). Passive waiting yields them instead.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
ctest --test-dir build --output-on-failure -j"$(nproc)"
if ((fuzz_seconds > 0)); then
  scripts/fuzz.sh all "$fuzz_seconds"
else
  echo "test: fuzzing skipped (LORALAB_FUZZ_SECONDS=0)"
fi
