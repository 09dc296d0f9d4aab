#!/usr/bin/env bash
# README command (1): set up, build, and generate from the bundled default model.
# Extra arguments are passed to `keel generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default
exec build/default/keel generate --model ../shared/models/stories260K --prompt "Once upon a time" "$@"
