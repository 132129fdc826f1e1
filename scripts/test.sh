#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Sets up (if needed), builds everything (every program, bench and test suite: the program tests run the
# programs) and runs every test suite through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --all
# Suites run side by side (-j), each with its own OpenMP team: threads that spin while they wait steal the cores
# the other suite needs (on 2 cores that doubled the test time). Passive waiting yields them instead.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
ctest --test-dir build --output-on-failure -j"$(nproc)"
