#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the build tree into a temp prefix, then builds and runs tests/package/consumer against it.
set -euo pipefail
build="$1"; src="$(cd "$(dirname "$0")" && pwd)/consumer"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/build" >/dev/null
"$tmp/build/consumer"
