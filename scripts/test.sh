#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Sets up (if needed) and runs every test suite through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
