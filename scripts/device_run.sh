#!/usr/bin/env bash
# One call on the GPU machine (see docs/cuda-executor.md): runs the CUDA
# executor's GPU tests, benches stories260K and random-weight checkpoints shaped
# like Llama-3.2-1B, Qwen3-1.7B and Qwen3-8B in every launch mode (batch 1,
# context 512), runs the PyTorch CUDA-graph peer, and prints one table. Logs go
# under $OUT. Binaries and fixtures come from the carried folder .device/
# (scripts/device_pack.sh fills it on the build machine).
#   usage: scripts/device_run.sh [tests|bench|peer|cli|tune|all]...
set -u
D=${KEEL_DEVICE_DIR:-.device}
OUT=${OUT:-/tmp/keel-out}
mkdir -p "$OUT"
export KEEL_SHARED_DIR=$D/shared
what=${*:-all}
has() { [[ " $what " == *" $1 "* || " $what " == *" all "* ]]; }

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

if has tests; then
  for t in test_cuda_primitives test_cuda_megakernel; do
    timeout 300 "$D/$t" > "$OUT/$t.log" 2>&1
    echo "$t: rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/$t.log" | tr '\n' ' ')"
    grep -E '^\[  FAILED|Failure|Expected|Which is|error' "$OUT/$t.log" | head -20
  done
fi

if has bench; then
  : > "$OUT/bench.log"
  run_bench() {  # name, args...
    local name=$1; shift
    timeout 240 "$D/keel_cuda_bench" --name "$name" --context 512 --steps 256 "$@" \
      --trace "$OUT/trace-$name.json" >> "$OUT/bench.log" 2>&1 || echo "bench $name failed (rc=$?)" | tee -a "$OUT/bench.log"
  }
  run_bench stories260K --model "$D/shared/models/stories260K"
  run_bench llama3.2-1b --config "$D/configs/llama3.2-1b.json"
  run_bench qwen3-1.7b --config "$D/shared/models/qwen3-tokenizer/Qwen3-1.7B/config.json"
  run_bench qwen3-8b --config "$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json"
  grep -v RESULT "$OUT/bench.log"
  # Where the megakernel's time goes: per task kind, mean busy and wait time per task.
  for n in stories260K llama3.2-1b qwen3-8b; do
    [[ -f "$OUT/trace-$n.json" ]] || continue
    python3 - "$OUT/trace-$n.json" "$n" <<'PY'
import json, sys, collections
ev = json.load(open(sys.argv[1]))["traceEvents"]
busy = collections.defaultdict(list); wait = collections.defaultdict(float); cnt = collections.Counter()
last = {}
for e in sorted(ev, key=lambda e: (e["tid"], e["ts"])):
    if e["name"] == "wait":
        last[e["tid"]] = e["dur"]; continue
    k = e["name"].split()[0]
    busy[k].append(e["dur"]); wait[k] += last.pop(e["tid"], 0.0); cnt[k] += 1
print(f"trace {sys.argv[2]}: per task kind: n, mean busy us, mean wait us")
for k in busy:
    print(f"  {k:7s} {cnt[k]:6d} {sum(busy[k])/cnt[k]:8.2f} {wait[k]/cnt[k]:8.2f}")
PY
  done
  rm -f "$OUT"/trace-qwen3-1.7b.json "$OUT"/trace-stories260K.json "$OUT"/trace-qwen3-8b.json
fi

# The keel CLI end to end on the GPU (when the pack carries it).
if [[ " $what " == *" cli "* || " $what " == *" all "* ]] && [[ -x "$D/keel" ]]; then
  {
    "$D/keel" info --model "$D/shared/models/stories260K"
    "$D/keel" generate --model "$D/shared/models/stories260K" --backend cuda \
      --prompt "Once upon a time" --max-tokens 48
    echo
    "$D/keel" generate --model "$D/shared/models/stories260K" --backend reference \
      --prompt "Once upon a time" --max-tokens 48
    echo
    "$D/keel" bench --config "$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json" --random-weights --launch all
  } > "$OUT/cli.log" 2>&1
  cat "$OUT/cli.log"
fi

# Ring / copy tunables (environment overrides read by the planner), megakernel only.
if [[ " $what " == *" tune "* ]]; then
  # stage KB, copy KB, L2 hint, L2 prefetch chunks ahead, max ring stages
  tune_cfgs=("32 32 1 0 6" "64 64 1 0 3" "96 96 1 0 2" "64 64 0 0 3" "64 64 1 2 3")
  for cfg in "${tune_cfgs[@]}"; do
    set -- $cfg
    for m in qwen3-8b:$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json llama3.2-1b:$D/configs/llama3.2-1b.json; do
      KEEL_CUDA_STAGE_KB=$1 KEEL_CUDA_COPY_KB=$2 KEEL_CUDA_L2_HINT=$3 KEEL_CUDA_L2_AHEAD=$4 KEEL_CUDA_MAX_STAGES=$5 timeout 120 "$D/keel_cuda_bench" \
        --name "${m%%:*}" --config "${m#*:}" --steps 64 --modes megakernel 2>&1 | grep RESULT | \
        sed "s/^/stage=$1KB copy=$2KB hint=$3 l2ahead=$4 stages<=$5 /"
    done
  done | tee "$OUT/tune.log"
fi

if has peer; then
  (cd "$D/tools" && timeout 300 python3 baseline_graph.py llama3.2-1b qwen3-1.7b qwen3-8b) > "$OUT/peer.log" 2>&1
  cat "$OUT/peer.log"
fi

# One table: megakernel / per-op / graph / PyTorch graph, ms per token.
if [[ -f "$OUT/bench.log" ]]; then
  python3 - "$OUT/bench.log" "$OUT/peer.log" <<'PY' | tee "$OUT/table.md"
import sys, re
rows = {}
bw = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT"):
        _, name, mode, ms, pct, rbw, gb = line.split()
        rows.setdefault(name, {})[mode] = (float(ms), float(pct))
        bw[name] = (float(rbw), float(gb))
peer = {}
try:
    for line in open(sys.argv[2]):
        m = re.match(r"\| (\S+) \| [\d.]+ \| ([\d.]+) \|", line)
        if m: peer[m.group(1)] = float(m.group(2))
except OSError:
    pass
print("| model | GB/token | megakernel ms (% bw) | per-op ms | graph ms | PyTorch graph ms | mk speedup vs best other |")
print("|---|---|---|---|---|---|---|")
for n, r in rows.items():
    def f(k):
        return f"{r[k][0]:.3f} ({r[k][1]:.0f}%)" if k in r else "-"
    others = [r[k][0] for k in ("per-op", "graph") if k in r] + ([peer[n]] if n in peer else [])
    sp = f"{min(others)/r['megakernel'][0]:.2f}x" if others and "megakernel" in r else "-"
    print(f"| {n} | {bw[n][1]:.3f} | {f('megakernel')} | {f('per-op')} | {f('graph')} | {peer.get(n, '-')} | {sp} |")
print(f"\nread bandwidth (keel probe): {next(iter(bw.values()))[0]:.0f} GB/s" if bw else "")
PY
fi
