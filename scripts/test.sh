#!/usr/bin/env bash
# README command (2): set up, build (default preset) and run every test.
# GPU tests carry the `gpu` label and skip themselves where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default
ctest --preset default
