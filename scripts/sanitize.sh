#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds test suites with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ (-O1, -g1,
# -fno-sanitize-recover: the first report fails the suite) and runs them through CTest.
#   scripts/sanitize.sh        the CI subset: quant, io, io.pth, io.gguf, core (suites only, no programs)
#   scripts/sanitize.sh --all  every library suite (quant, io, core, nn, lora, dataset, train) and the programs' tests
# LORALAB_CMAKE_ARGS adds arguments to the configure step, as in scripts/setup.sh.
# Expects the Debian packages scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."

all=0
for arg in "$@"; do
  case "$arg" in
    --all) all=1 ;;
    -h|--help)
      sed -n '3,8p' "$0" | sed 's/^# \{0,1\}//'
      exit 0 ;;
    *) echo "sanitize: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
start=$SECONDS

# The CI subset: quant (codecs, bnb serialization, ggml blocks), the readers of untrusted bytes (safetensors, .pth,
# GGUF) and core (the startup re-exec); ~580 CPU-seconds of compiling, ~5 min to build and run on 2 idle cores.
# Left to --all: nn, lora, dataset, train (each suite's model code costs minutes to compile sanitized; the GGUF
# adapter suite alone ~2 min of CPU) and the programs. Test names are CTest's.
subset_targets=(test_quant test_io test_pth test_gguf test_core)
subset_tests='^(quant|io|io\.pth|io\.gguf|core)$'
all_targets=(test_quant test_io test_pth test_gguf test_core test_nn test_bpe test_gguf_model test_lora
             test_gguf_adapter test_dataset test_train)
# everything but the compile-only checks (failtest, headers) and the install test, which has its own build
all_tests='^(quant|io|io\..*|core|nn|nn\..*|lora|lora\..*|dataset|train|programs\..*)$'

if [ "$all" = 1 ]; then
  programs=ON targets=("${all_targets[@]}") tests=$all_tests
else
  programs=OFF targets=("${subset_targets[@]}") tests=$subset_tests
fi
generator=()
[ -f build-asan/CMakeCache.txt ] || ! command -v ninja >/dev/null || generator=(-G Ninja)

echo "sanitize: configuring build-asan/ (ASan + UBSan, -O1)"
cmake -S . -B build-asan "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
      -DLORALAB_SANITIZE=address,undefined -DLORALAB_BUILD_PROGRAMS=$programs -DLORALAB_CUDA=OFF ${LORALAB_CMAKE_ARGS:-} >/dev/null

echo "sanitize: building ${#targets[@]} suites$([ "$all" = 1 ] && echo " and every program")"
quiet() { grep -Ev '^\[ *[0-9]+%\] |^\[[0-9]+/[0-9]+\] |^Consolidate compiler generated|^ninja: no work to do' || true; }
build_targets=("${targets[@]}")
[ "$all" = 1 ] && build_targets=(all)  # the programs' tests run every program
if ! cmake --build build-asan -j"$(nproc)" --target "${build_targets[@]}" 2>&1 | quiet; then
  echo "sanitize: the build failed (the compiler's messages are above)" >&2
  exit 1
fi
built=$SECONDS

# halt_on_error: stop at the first report (the build already makes every report fatal; this keeps it so if the
# flags change). detect_leaks: LeakSanitizer at exit. print_stacktrace: UBSan prints where, not only what.
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"  # as scripts/test.sh: suites side by side on few cores
echo "sanitize: running the suites (ASAN_OPTIONS=$ASAN_OPTIONS)"
if ! ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -R "$tests"; then
  echo "sanitize: a suite failed under ASan/UBSan (the report is above); build-asan/ has the binaries" >&2
  exit 1
fi
echo "sanitize: done in $((SECONDS - start)) s (build $((built - start)) s, run $((SECONDS - built)) s)"
