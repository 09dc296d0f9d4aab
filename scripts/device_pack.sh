#!/usr/bin/env bash
# Fills .device/ (git-ignored) with what scripts/device_run.sh needs on the GPU
# machine: the static GPU binaries from build/cuda, the fixtures and model
# configs, and the PyTorch peer scripts. Run on the build machine after
#   scripts/fetch_httplib.sh   # once: the header-only cpp-httplib, so the static keel has `keel serve`
#   cmake -S . -B build/cuda -G Ninja -DKEEL_CUDA=ON -DKEEL_STATIC=ON -DKEEL_BUILD_BENCH=OFF
#   ninja -C build/cuda test_cuda_primitives test_cuda_megakernel test_program_gpu test_program_gpu_longctx keel
# (or `cmake --preset device` and KEEL_CUDA_BUILD=build/device).
set -eu
cd "$(dirname "$0")/.."
S=${KEEL_SHARED_DIR:-../shared}
B=${KEEL_CUDA_BUILD:-build/cuda}
rm -rf .device && mkdir -p .device/shared/models .device/tools .device/configs
cp "$B"/tests/exec/cuda/test_cuda_primitives "$B"/tests/exec/cuda/test_cuda_megakernel "$B"/tests/exec/cuda/test_program_gpu \
   "$B"/tests/exec/cuda/test_program_gpu_longctx "$B/keel" .device/  # keel: the CLI, and `keel bench`, the one bench driver
cp -r "$S/fixtures" .device/shared/
cp -r "$S/models/stories260K" .device/shared/models/
mkdir -p .device/shared/models/qwen3-tokenizer
cp -r "$S/models/qwen3-tokenizer/Qwen3-1.7B" "$S/models/qwen3-tokenizer/Qwen3-8B" .device/shared/models/qwen3-tokenizer/
# the tokenizer itself, for the transformers-written checkpoint of device_run.sh serve
cp "$S"/models/qwen3-tokenizer/{tokenizer.json,tokenizer_config.json,LICENSE} .device/shared/models/qwen3-tokenizer/
cp "$S"/tools/*.py scripts/prefill_peer.py scripts/bench_serve.py scripts/write_checkpoint.py scripts/yarn_check.py .device/tools/
cp scripts/configs/llama3.2-1b.json .device/configs/
# The carried tree holds at most 64 MiB: the binaries travel gzipped
# (device_run.sh unpacks them).
gzip -f -6 .device/keel .device/test_*
"$B/keel" serve --help > /dev/null 2>&1 ||
  echo "device_pack: $B/keel has no \`keel serve\` (scripts/fetch_httplib.sh, then reconfigure): device_run.sh serve will fail" >&2
du -sh .device
