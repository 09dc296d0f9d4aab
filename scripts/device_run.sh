#!/usr/bin/env bash
# One call on the GPU machine (see docs/cuda-executor.md): runs the CUDA
# executor's GPU tests, benches stories260K and random-weight checkpoints shaped
# like Llama-3.2-1B, Qwen3-1.7B and Qwen3-8B in every launch mode (batch 1,
# context 512), runs the PyTorch CUDA-graph peer, and prints one table. Logs go
# under $OUT. Binaries and fixtures come from the carried folder .device/
# (scripts/device_pack.sh fills it on the build machine).
#   usage: scripts/device_run.sh [tests|bench|peer|batch|longctx|serve|chunks|knobs|defaults|yarn|cli|smollm2|ab|trace|ncu|micro|all]...
# batch: decode ms/step of Llama-3.2-1B and Qwen3-8B shapes at batch 1, 8, 16,
# 32, 64 (context 512; $KEEL_BATCHES overrides the list) beside the PyTorch
# CUDA-graph peer (tools/peer_graph.py MODEL 512 BATCH) in one table, and the
# time to first token of a $KEEL_PROMPT_LEN-token prompt (default 2000) at batch 1
# (chunked prefill, keel bench's default --prefill-chunk) beside transformers'
# bf16 forward of a prompt of that length (tools/prefill_peer.py).
# longctx: batch-1 decode ms/token of the Llama-3.2-1B shape at contexts 512,
# 8K, 32K and 128K and of Qwen3-8B at 512, 8K and 32K ($KEEL_CONTEXTS overrides
# the list; each model stops at its max_position_embeddings) beside the peer
# (tools/peer_graph.py MODEL CTX 1) and the bytes floor: weights + the K/V the
# step reads (layers x kv heads x head_dim x 4 bytes a position) over the read
# bandwidth `keel bench` measured in the same run. Not part of `all`.
# Every measurement goes through `keel bench` (the one bench driver; --json),
# whose knobs are flags printed with its results, never environment variables.
# smollm2: the real chat model (GGUF at $KEEL_SMOLLM2, e.g. carried in two halves
# and joined there: the file is larger than one call may carry) on the CUDA
# backend against the CPU executor: greedy tokens on five prompts, chat, bench.
# ab: megakernel ms/token of a baseline build ($D/base/keel, e.g. the committed
# tree's) against this build, interleaved, and of this build with the extra
# `keel bench` flags listed in $KEEL_AB_VARIANTS ("NAME:--flag v,--flag v;...").
set -u
D=${KEEL_DEVICE_DIR:-.device}
OUT=${OUT:-/tmp/keel-out}
mkdir -p "$OUT"
export KEEL_SHARED_DIR=$D/shared
# device_pack.sh gzips the binaries to fit the carry limit.
for f in "$D"/keel.gz "$D"/test_*.gz; do [[ -f "$f" ]] && gunzip -f "$f" && chmod +x "${f%.gz}"; done
what=${*:-all}
has() { [[ " $what " == *" $1 "* || " $what " == *" all "* ]]; }
# kbench BIN NAME ARGS...: `BIN bench ARGS --json` (killed after $kb_timeout
# seconds, default 240), printed as lines "RESULT name launch ms/token
# %read-bw read-GB/s GB/token" for the tables below (the whole JSON is kept in
# $OUT/bench-NAME.json).
kbench() {
  local bin=$1 name=$2; shift 2
  timeout "${kb_timeout:-240}" "$bin" bench "$@" --json > "$OUT/bench-$name.json" ||
    { echo "bench $name failed (rc=$?)"; return 1; }
  python3 - "$OUT/bench-$name.json" "$name" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for r in j["rows"]:
    print("RESULT %s %s %.4f %.1f %.0f %.3f" % (sys.argv[2], r["launch"], r["ms_per_token"], r["pct_of_read_bw"],
                                             j["read_bw_GBps"], j["bytes_per_token"] / 1e9))
PY
}

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

if has tests; then
  for t in test_cuda_primitives test_cuda_megakernel test_program_gpu test_program_gpu_longctx; do
    timeout ${KEEL_TEST_TIMEOUT:-300} "$D/$t" > "$OUT/$t.log" 2>&1
    echo "$t: rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/$t.log" | tr '\n' ' ')"
    grep -E '^\[  FAILED|Failure|Expected|Which is|error' "$OUT/$t.log" | head -20
  done
fi

if has bench; then
  : > "$OUT/bench.log"
  run_bench() {  # name, args...
    local name=$1; shift
    kb_timeout=240 kbench "$D/keel" "$name" --context 512 --tokens 256 --launch all "$@" \
      --trace "$OUT/trace-$name.json" >> "$OUT/bench.log" 2>&1 || echo "bench $name failed (rc=$?)" | tee -a "$OUT/bench.log"
  }
  run_bench stories260K --model "$D/shared/models/stories260K"
  run_bench llama3.2-1b --config "$D/configs/llama3.2-1b.json" --random-weights
  run_bench qwen3-1.7b --config "$D/shared/models/qwen3-tokenizer/Qwen3-1.7B/config.json" --random-weights
  run_bench qwen3-8b --config "$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json" --random-weights
  cat "$OUT/bench.log"
  # Where the megakernel's time goes: per task kind, mean busy and wait time per task.
  for n in stories260K llama3.2-1b qwen3-8b; do
    [[ -f "$OUT/trace-$n.json" ]] || continue
    python3 - "$OUT/trace-$n.json" "$n" <<'PY'
import json, sys, collections
ev = json.load(open(sys.argv[1]))["traceEvents"]
busy = collections.defaultdict(list); wait = collections.defaultdict(float); cnt = collections.Counter()
prep = collections.defaultdict(float); stage = collections.defaultdict(float); tail = collections.defaultdict(float)
stream = collections.defaultdict(float); after = collections.defaultdict(float)
last = {}
for e in sorted(ev, key=lambda e: (e["tid"], e["ts"])):
    if e["name"] == "wait":
        last[e["tid"]] = e["dur"]; continue
    k = e["name"].split()[0]
    busy[k].append(e["dur"]); wait[k] += last.pop(e["tid"], 0.0); cnt[k] += 1
    prep[k] += e["args"].get("prep_us", 0.0); stage[k] += e["args"].get("stage_us", 0.0)
    tail[k] += e["args"].get("tail_us", 0.0)
    stream[k] += e["args"].get("stream_us", 0.0); after[k] += e["args"].get("after_us", 0.0)
print(f"trace {sys.argv[2]}: per task kind: n, mean busy us, mean wait us, of busy: input prep, first-stage wait, first -> last stage landed, last stage -> done, tail (barrier + signals)")
for k in busy:
    print(f"  {k:12s} {cnt[k]:6d} {sum(busy[k])/cnt[k]:8.2f} {wait[k]/cnt[k]:8.2f} {prep[k]/cnt[k]:8.2f} {stage[k]/cnt[k]:8.2f} {stream[k]/cnt[k]:8.2f} {after[k]/cnt[k]:8.2f} {tail[k]/cnt[k]:8.2f}")
PY
  done
  rm -f "$OUT"/trace-qwen3-1.7b.json "$OUT"/trace-stories260K.json "$OUT"/trace-qwen3-8b.json
fi

if [[ " $what " == *" longctx "* ]]; then  # not part of `all` (a dozen launches and peers)
  : > "$OUT/longctx.log"
  for m in llama3.2-1b:$D/configs/llama3.2-1b.json qwen3-8b:$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json; do
    cfg=${m#*:}
    maxpos=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['max_position_embeddings'])" "$cfg")
    for C in ${KEEL_CONTEXTS:-512 8192 32768 131072}; do
      (( C <= maxpos )) || continue
      kb_timeout=300 kbench "$D/keel" "${m%%:*}-c$C" --config "$cfg" --random-weights --context "$C" \
        --launch megakernel >> "$OUT/longctx.log" 2>&1 || echo "bench ${m%%:*} C$C failed" >> "$OUT/longctx.log"
      echo "PEER ${m%%:*}-c$C $( (cd "$D/tools" && timeout 300 python3 peer_graph.py "${m%%:*}" "$C" 1) 2>&1 | tail -1)" >> "$OUT/longctx.log"
    done
  done
  python3 - "$OUT" "$D/configs/llama3.2-1b.json" "$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json" <<'PY' | tee "$OUT/longctx.md"
import json, os, re, sys
out = sys.argv[1]
cfgs = {"llama3.2-1b": json.load(open(sys.argv[2])), "qwen3-8b": json.load(open(sys.argv[3]))}
keel, peer = {}, {}
for line in open(os.path.join(out, "longctx.log")):
    if line.startswith("RESULT "):
        f = line.split(); keel[f[1]] = (float(f[3]), float(f[5]), float(f[6]))  # ms, read GB/s, weight GB
    m = re.match(r"PEER (\S+) (\{.*\})", line)
    if m:
        try: peer[m.group(1)] = json.loads(m.group(2))["ms_per_step"]
        except ValueError: pass
print("| model | context | keel ms/token | PyTorch graph ms/token | keel / peer | bytes floor ms | keel / floor |")
print("|---|---|---|---|---|---|---|")
for name in sorted(keel, key=lambda n: (n.rsplit("-c", 1)[0], int(n.rsplit("-c", 1)[1]))):
    model, ctx = name.rsplit("-c", 1)
    c = cfgs[model]
    hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    kv_bytes = c["num_hidden_layers"] * c["num_key_value_heads"] * hd * 4 * int(ctx)  # K and V, bf16
    ms, bw, wgb = keel[name]
    floor = (wgb * 1e9 + kv_bytes) / (bw * 1e9) * 1e3
    p = peer.get(name)
    print(f"| {model} | {ctx} | {ms:.3f} | {'-' if p is None else f'{p:.3f}'} | "
          f"{'-' if p is None else f'{ms / p:.2f}'} | {floor:.3f} | {ms / floor:.2f} |")
PY
fi

if [[ " $what " == *" batch "* || " $what " == *" all "* ]]; then
  : > "$OUT/batch.log"
  for m in llama3.2-1b:$D/configs/llama3.2-1b.json qwen3-8b:$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json; do
    for B in ${KEEL_BATCHES:-1 8 16 32 64}; do
      extra=(); [[ $B == 1 ]] && extra=(--prompt-len "${KEEL_PROMPT_LEN:-2000}")
      kb_timeout=300 kbench "$D/keel" "${m%%:*}-b$B" --config "${m#*:}" --random-weights --context 512 --batch "$B" \
        --launch megakernel "${extra[@]}" >> "$OUT/batch.log" 2>&1 || echo "bench ${m%%:*} B$B failed" >> "$OUT/batch.log"
      echo "PEER ${m%%:*}-b$B $( (cd "$D/tools" && timeout 300 python3 peer_graph.py "${m%%:*}" 512 "$B") 2>&1 | tail -1)" >> "$OUT/batch.log"
    done
    echo "PREFILLPEER ${m%%:*} $( (cd "$D/tools" && timeout 300 python3 prefill_peer.py "${m%%:*}" "${KEEL_PROMPT_LEN:-2000}") 2>&1 | tail -1)" >> "$OUT/batch.log"
  done
  python3 - "$OUT" <<'PY' | tee "$OUT/batch.md"
import json, os, re, sys
out = sys.argv[1]
keel, peer = {}, {}
for line in open(os.path.join(out, "batch.log")):
    if line.startswith("RESULT "):
        f = line.split(); keel[f[1]] = float(f[3])
    m = re.match(r"PEER (\S+) (\{.*\})", line)
    if m:
        try: peer[m.group(1)] = json.loads(m.group(2))["ms_per_step"]
        except ValueError: pass
print("| model | batch | keel ms/step | vs own batch 1 | PyTorch graph ms/step | keel / peer |")
print("|---|---|---|---|---|---|")
for name in sorted(keel, key=lambda n: (n.rsplit("-b", 1)[0], int(n.rsplit("-b", 1)[1]))):
    model, b = name.rsplit("-b", 1)
    one = keel.get(model + "-b1")
    p = peer.get(name)
    print(f"| {model} | {b} | {keel[name]:.3f} | {keel[name] / one:.2f}x | {p if p is None else round(p, 3)} | "
          f"{'-' if p is None else f'{keel[name] / p:.2f}'} |" if one else f"| {model} | {b} | {keel[name]:.3f} | - | {p} | - |")
for name in keel:
    fn = os.path.join(out, f"bench-{name}.json")
    j = json.load(open(fn)) if os.path.exists(fn) else {}
    if "prefill" in j:
        print(f"prefill {name}: {j['prefill']['prompt_len']} tokens, first token after {j['prefill']['ms']:.1f} ms "
              f"({j['prefill'].get('prefill_chunk', 0)} positions a step)")
for line in open(os.path.join(out, "batch.log")):
    if line.startswith("PREFILLPEER "):
        print(line.split(" ", 2)[2].strip())
PY
fi

# serve: issue 14's acceptance. `keel serve --backend cuda` on a Qwen3-8B-shaped
# checkpoint written by transformers (random bf16 weights, the Qwen3 tokenizer;
# scripts/write_checkpoint.py, into $KEEL_SERVE_MODEL, default /tmp/keel-qwen3-8b),
# driven by scripts/bench_serve.py: one client on a --max-batch 1 server (the
# single-client ms/token), 1 and 16 streaming clients on a --max-batch 16
# server (prompt 512, output 256; the lone client decodes on the server's
# Program of one sequence), and a 2000-token shared system prompt (the
# first request's TTFT against the later ones'). Not part of `all`. For a dry
# run on the build machine: KEEL_SERVE_MODEL=<a checkpoint> KEEL_SERVE_BACKEND=cpu
# and smaller KEEL_SERVE_PROMPT / _OUTPUT / _PREFIX / _CONTEXT.
if [[ " $what " == *" serve "* ]]; then
  M=${KEEL_SERVE_MODEL:-/tmp/keel-qwen3-8b}
  [[ -f "$M/config.json" ]] || timeout 600 python3 "$D/tools/write_checkpoint.py" \
    "$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json" "$D/shared/models/qwen3-tokenizer" "$M" 2>&1 | tail -3
  port=18080
  # serve_bench NAME "SERVE FLAGS" BENCH ARGS...: a fresh server, one bench_serve.py run, SIGTERM.
  serve_bench() {
    local name=$1 flags=$2; shift 2
    "$D/keel" serve --model "$M" --name qwen3-8b --backend ${KEEL_SERVE_BACKEND:-cuda} --port $port $flags > "$OUT/serve-$name.log" 2>&1 &
    local pid=$! up=0
    for _ in $(seq 1 ${KEEL_SERVE_WAIT:-300}); do
      curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1 && { up=1; break; }
      kill -0 $pid 2> /dev/null || break
      sleep 1
    done
    if (( up )); then
      timeout 600 python3 "$D/tools/bench_serve.py" --url "http://127.0.0.1:$port" --model qwen3-8b --json "$@" \
        > "$OUT/serve-$name.json" 2>> "$OUT/serve-$name.log"
      echo "SERVE $name $(cat "$OUT/serve-$name.json")"
    else
      echo "SERVE $name: the server did not come up; $(tail -3 "$OUT/serve-$name.log" | tr '\n' ' ')"
    fi
    kill -TERM $pid 2> /dev/null; wait $pid 2> /dev/null
  }
  {
    P=${KEEL_SERVE_PROMPT:-512} O=${KEEL_SERVE_OUTPUT:-256} X=${KEEL_SERVE_PREFIX:-2000} C=${KEEL_SERVE_CONTEXT:-4096}
    serve_bench single-b1 "--max-batch 1 --context $C" --concurrency 1 --requests 3 --prompt-len $P --output-len $O
    serve_bench single-b16 "--max-batch 16 --context $C" --concurrency 1 --requests 3 --prompt-len $P --output-len $O
    serve_bench c16-b16 "--max-batch 16 --context $C" --concurrency 16 --requests 48 --prompt-len $P --output-len $O
    serve_bench prefix-b16 "--max-batch 16 --context $C" --concurrency 1 --requests 4 --prompt-len 64 \
      --shared-prefix $X --output-len 32
  } | tee "$OUT/serve.log"
  python3 - "$OUT/serve.log" <<'PY' | tee "$OUT/serve.md"
import json, re, sys
r = {}
for line in open(sys.argv[1]):
    m = re.match(r"SERVE (\S+) (\{.*\})", line)
    if m: r[m.group(1)] = json.loads(m.group(2))
print("| run | requests | aggregate tok/s | TTFT p50 ms | ITL p50 ms | ITL p99 ms |")
print("|---|---|---|---|---|---|")
for k, v in r.items():
    print(f"| {k} | {v.get('requests')} | {v['tokens_per_s']:.1f} | {v['ttft_ms_p50']:.1f} | {v['itl_ms_p50']:.3f} | "
          f"{v['itl_ms_p99']:.3f} |")
one, many = r.get("single-b1"), r.get("c16-b16")
if one and many:
    print(f"16 clients vs one (max-batch 1 server): ITL p50 {many['itl_ms_p50'] / one['itl_ms_p50']:.2f}x "
          f"(issue 14: <= 1.4x), aggregate {many['tokens_per_s'] / one['tokens_per_s']:.1f}x (>= 10x)")
p = r.get("prefix-b16")
if p and "first_ttft_ms" in p:
    print(f"shared 2000-token prefix: first TTFT {p['first_ttft_ms']:.1f} ms, later p50 {p.get('later_ttft_ms_p50', float('nan')):.1f} ms "
          f"({p.get('later_ttft_ms_p50', float('nan')) / p['first_ttft_ms'] * 100:.0f}%; issue 14: <= 20%)")
PY
fi

# chunks: batch decode ms/step under the attention chunk rules (the default:
# chunks before the last split the history; --attn-min-chunk 1024 and 512:
# even chunks of at least that many positions; --attn-chunks 1: one chunk per
# (sequence, kv head)), Llama-3.2-1B and Qwen3-8B at batch 8 and 16,
# contexts 512 and 4096 ($KEEL_CHUNK_CONTEXTS, $KEEL_CHUNK_BATCHES,
# $KEEL_CHUNK_VARIANTS override). Not part of `all`.
if [[ " $what " == *" chunks "* ]]; then
  for m in llama3.2-1b:$D/configs/llama3.2-1b.json qwen3-8b:$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json; do
    for C in ${KEEL_CHUNK_CONTEXTS:-512 4096}; do
      for B in ${KEEL_CHUNK_BATCHES:-8 16}; do
        for L in ${KEEL_CHUNK_VARIANTS:-default 1024 512 one}; do
          flags=(); [[ $L == one ]] && flags=(--attn-chunks 1)
          [[ $L != default && $L != one ]] && flags=(--attn-min-chunk "$L")
          kb_timeout=200 kbench "$D/keel" "${m%%:*}-c$C-b$B-L$L" --config "${m#*:}" --random-weights --context "$C" \
            --batch "$B" --tokens 64 --launch megakernel "${flags[@]}" 2>&1 | grep RESULT
        done
      done
    done
  done | tee "$OUT/chunks.log"
fi

# knobs: batch decode ms/step under compile flags that need no rebuild,
# Llama-3.2-1B and Qwen3-8B at context 512 and batches $KEEL_KNOB_BATCHES
# (default 16 64), one variant per `;`-separated entry of $KEEL_KNOB_VARIANTS
# (default: the defaults, --row-align 16 / 32 / 64, --attn-chunks 1), two
# rounds interleaved. Not part of `all`.
if [[ " $what " == *" knobs "* ]]; then
  IFS=';' read -r -a knob_variants <<< "${KEEL_KNOB_VARIANTS:-default;--row-align 16;--row-align 32;--row-align 64;--attn-chunks 1}"
  for round in 1 2; do
    for m in llama3.2-1b:$D/configs/llama3.2-1b.json qwen3-8b:$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json; do
      for B in ${KEEL_KNOB_BATCHES:-16 64}; do
        for v in "${knob_variants[@]}"; do
          flags=(); [[ $v != default ]] && read -r -a flags <<< "$v"
          name=${v//--/}; name=${name// /}
          kb_timeout=200 kbench "$D/keel" "${m%%:*}-b$B-$name-r$round" --config "${m#*:}" --random-weights \
            --context 512 --batch "$B" --tokens 48 --launch megakernel "${flags[@]}" 2>&1 | grep RESULT
        done
      done
    done
  done | tee "$OUT/knobs.log"
fi

# defaults: this build's batch defaults against the rules before 2026-12-05
# (attention chunks 2 x workers / (batch x kv heads), tasks in multiples of 8
# rows), given as flags to the same binary: Llama-3.2-1B and Qwen3-8B (both 8
# kv heads) at batches $KEEL_DEF_BATCHES (default 8 16 64), context 512, and
# batch 8 at context 8192, and the new defaults with each `;`-separated flag
# set of $KEEL_DEF_EXTRA added; $KEEL_DEF_ROUNDS rounds (default 2) interleaved.
# Not part of `all`.
if [[ " $what " == *" defaults "* ]]; then
  for round in $(seq 1 "${KEEL_DEF_ROUNDS:-2}"); do
    for m in llama3.2-1b:$D/configs/llama3.2-1b.json qwen3-8b:$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json; do
      for BC in $(for b in ${KEEL_DEF_BATCHES:-8 16 64}; do echo "$b:512"; done) 8:8192; do
        B=${BC%%:*}; C=${BC#*:}
        old_chunks=$(( 2 * 132 / (B * 8) )); (( old_chunks < 1 )) && old_chunks=1
        IFS=';' read -r -a extra <<< "${KEEL_DEF_EXTRA:-}"
        for v in new old "${extra[@]}"; do
          [[ -z "$v" ]] && continue
          flags=(); [[ $v == old ]] && flags=(--attn-chunks "$old_chunks" --row-align 8)
          [[ $v != new && $v != old ]] && read -r -a flags <<< "$v"
          name=${v//--/}; name=${name// /}
          kb_timeout=200 kbench "$D/keel" "${m%%:*}-b$B-c$C-$name-r$round" --config "${m#*:}" --random-weights \
            --context "$C" --batch "$B" --tokens 48 --launch megakernel "${flags[@]}" 2>&1 | grep RESULT
        done
      done
    done
  done | tee "$OUT/defaults.log"
fi

# yarn: issue 13's YaRN check: keel's logits past position 40000 against
# transformers' on a transformers-written Qwen3 checkpoint with rope_scaling
# YaRN (scripts/yarn_check.py; $KEEL_YARN_BACKENDS, default cuda). Not part of `all`.
if [[ " $what " == *" yarn "* ]]; then
  timeout 900 python3 "$D/tools/yarn_check.py" "$D/keel" /tmp/keel-yarn --backends "${KEEL_YARN_BACKENDS:-cuda}" 2>&1 |
    grep -v Warning | tee "$OUT/yarn.log"
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

# micro: release latency with the SM's loader idle / streaming, and attention's
# streaming loops alone (bench/micro, built here with nvcc).
if [[ " $what " == *" micro "* ]]; then
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a bench/micro/release_latency.cu -o "$OUT/release_latency" &&
    { "$OUT/release_latency" 64; "$OUT/release_latency" 16; } | tee "$OUT/micro.log"
  nvcc -DKEEL_HAVE_CUDA=1 -Isrc -O3 -std=c++20 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a \
    bench/micro/attn_stream.cu -o "$OUT/attn_stream" && "$OUT/attn_stream" | tee -a "$OUT/micro.log"
fi

if [[ " $what " == *" ab "* ]]; then
  ab_models=(llama3.2-1b:$D/configs/llama3.2-1b.json
             qwen3-1.7b:$D/shared/models/qwen3-tokenizer/Qwen3-1.7B/config.json
             qwen3-8b:$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json)
  IFS=';' read -r -a ab_vars <<< "${KEEL_AB_VARIANTS:-}"
  for round in 1 2; do
    for m in "${ab_models[@]}"; do
      args=(--config "${m#*:}" --random-weights --tokens ${KEEL_AB_STEPS:-128} --launch megakernel)
      if [[ -x "$D/base/keel" ]]; then
        kb_timeout=120 kbench "$D/base/keel" "${m%%:*}" "${args[@]}" 2>&1 | grep RESULT | sed "s/^/r$round base /"
      fi
      for xb in ${KEEL_AB_BINS:-}; do  # other builds: $D/<dir>/keel
        kb_timeout=120 kbench "$D/$xb/keel" "${m%%:*}" "${args[@]}" 2>&1 | grep RESULT | sed "s/^/r$round $xb /"
      done
      for v in new "${ab_vars[@]}"; do
        [[ -z "$v" ]] && continue
        vname=${v%%:*}; vflags=""
        [[ "$v" == *:* ]] && vflags=${v#*:}
        kb_timeout=120 kbench "$D/keel" "${m%%:*}" "${args[@]}" ${vflags//,/ } 2>&1 | grep RESULT | sed "s/^/r$round $vname /"
      done
    done
    [[ -n "${KEEL_AB_ONE_ROUND:-}" ]] && break
  done | tee "$OUT/ab.log"
fi

# Critical path per stage kind from megakernel traces (baseline build and this one):
# inc = last end of the stage - last end of the stage before it (what the stage
# adds to the step), lat = first task start after its wait - that previous end.
# $KEEL_TRACE_BATCHES: the batch sizes traced (default 1); $KEEL_TRACE_KEEP set: the
# traces come back gzipped under $OUT; $KEEL_TRACE_PREFILL=P: also the first 4
# steps of the prefill launch of a P-token prompt (keel bench --prompt-len P).
if [[ " $what " == *" trace "* ]]; then
  for m in llama3.2-1b:$D/configs/llama3.2-1b.json qwen3-8b:$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json; do
   if [[ -n "${KEEL_TRACE_PREFILL:-}" ]]; then
     echo "== ${m%%:*} prefill of ${KEEL_TRACE_PREFILL} tokens (the first 4 steps)"
     kb_timeout=200 kbench "$D/keel" "${m%%:*}-prefill" --config "${m#*:}" --random-weights --tokens 8 \
       --prompt-len "$KEEL_TRACE_PREFILL" --trace /tmp/trp.json 2>&1 | grep RESULT
     [[ -n "${KEEL_TRACE_KEEP:-}" ]] && gzip -c /tmp/trp.prefill.json > "$OUT/trace-${m%%:*}-prefill.json.gz"
     python3 scripts/analysis/trace_stages.py /tmp/trp.prefill.json
   fi
   for B in ${KEEL_TRACE_BATCHES:-1}; do
    for bin in base/keel keel; do
      [[ -x "$D/$bin" ]] || continue
      echo "== ${m%%:*} batch $B ($bin)"
      kb_timeout=120 kbench "$D/$bin" "${m%%:*}-b$B" --config "${m#*:}" --random-weights --tokens 32 --launch megakernel \
        --batch "$B" --trace /tmp/tr.json 2>&1 | grep RESULT | sed "s|^|$bin |"
      [[ -n "${KEEL_TRACE_KEEP:-}" ]] && gzip -c /tmp/tr.json > "$OUT/trace-${m%%:*}-b$B-${bin//\//-}.json.gz"
      python3 scripts/analysis/trace_stages.py /tmp/tr.json
    done
   done
  done | tee "$OUT/trace.log"
fi

# Warp-stall samples per source line (Nsight Compute, scripts/analysis/ncu_lines.py)
# of the first megakernel launch of `keel bench` on the Qwen3-8B shape:
# $KEEL_NCU_ARGS are its flags (default "--batch 64"; e.g. "--prompt-len 1000"
# profiles the prefill launch, which runs first). Not part of `all`.
if [[ " $what " == *" ncu "* ]]; then
  NCU=$(ls -d /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [[ -z "$NCU" ]]; then
    echo "ncu: not found on this machine"
  else
    # shellcheck disable=SC2086
    timeout 200 "$NCU" --clock-control none --kernel-name regex:program_kernel --launch-count 1 \
      --section WarpStateStats --section SourceCounters -o /tmp/keel-ncu "$D/keel" bench \
      --config "$D/shared/models/qwen3-tokenizer/Qwen3-8B/config.json" --random-weights --tokens 16 \
      --launch megakernel ${KEEL_NCU_ARGS:---batch 64} > "$OUT/ncu-run.log" 2>&1 || echo "ncu rc=$?"
    python3 scripts/analysis/ncu_lines.py /tmp/keel-ncu.ncu-rep 50 | tee "$OUT/ncu.log" | head -80
  fi
fi

if has smollm2 && [[ -f "${KEEL_SMOLLM2:-}" ]]; then
  G=$KEEL_SMOLLM2
  for p in "What is the capital of France?" "Write a haiku about the sea." "List three prime numbers." \
           "Once upon a time" "The quick brown fox"; do
    for be in cpu cuda; do
      timeout 120 "$D/keel" generate --model "$G" --backend $be --prompt "$p" --temperature 0 --max-tokens 48 \
        --ignore-eos --json > "$OUT/smollm2-$be.json" 2>> "$OUT/smollm2.log"
    done
    python3 - "$OUT/smollm2-cpu.json" "$OUT/smollm2-cuda.json" "$p" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
same = a["output_ids"] == b["output_ids"]
print(f"smollm2 {'EQUAL' if same else 'DIFFER'} cpu/cuda greedy ({len(b['output_ids'])} tokens), "
      f"cuda {b['timing']['ms_per_token']:.3f} ms/token: {sys.argv[3]!r}")
PY
  done
  printf 'What is the capital of France?\n' | timeout 120 "$D/keel" chat --max-tokens 24 --model "$G" --backend cuda
  timeout 200 "$D/keel" bench --model "$G" --context 512 2>&1 | grep -E "^\||on NVIDIA"
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
