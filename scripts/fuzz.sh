#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset, clang) and runs each for
# SECONDS (default 60) on a copy of its seed corpus in build/fuzz/corpus/, so
# the checked-in seeds stay small. A crash, sanitizer report or uncaught
# exception stops the run and leaves the reproducer in build/fuzz/artifacts/.
# Inputs may be up to 256 KiB, so nesting far deeper than any parser accepts
# stays reachable. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# (targets: safetensors config tokenizer chat_template program gguf)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(safetensors config tokenizer chat_template program gguf)

cmake --preset fuzz >/dev/null
fuzzers=()
for t in "${targets[@]}"; do fuzzers+=("fuzz_$t"); done
cmake --build build/fuzz --target "${fuzzers[@]}"

status=0
for t in "${targets[@]}"; do
  work="build/fuzz/corpus/$t"
  mkdir -p "$work" build/fuzz/artifacts
  cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  echo "== fuzz_$t for ${secs}s (corpus $work)"
  dict=()
  [[ -f fuzz/"$t".dict ]] && dict=(-dict=fuzz/"$t".dict)
  if ! build/fuzz/fuzz/fuzz_"$t" "$work" "${dict[@]}" -max_total_time="$secs" \
      -max_len=262144 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix=build/fuzz/artifacts/"$t"- 2>build/fuzz/fuzz_"$t".log; then
    echo "fuzz_$t: FOUND A PROBLEM (see build/fuzz/fuzz_$t.log and build/fuzz/artifacts/)"
    tail -n 40 build/fuzz/fuzz_"$t".log
    status=1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE" build/fuzz/fuzz_"$t".log || true
done
exit $status
