#!/usr/bin/env python3
"""Where a megakernel step goes, per operator kind, from a `keel bench --trace X.json` file (or the
X.prefill.json of a bench with --prompt-len):
  python3 scripts/analysis/trace_spans.py X.json
For each step and (operator, layer): the span from its first task's start to its last task's end,
summed over the layers and averaged over the traced steps (the operators of a layer mostly run one
after another, so the spans add up to about the step); then tasks, mean busy and ring-stream time
per task, and busy SM-us per step. Last, the timeline of layers 3 and 4 of a middle step."""
import json, sys, collections
ev = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e["name"] != "wait"]
per_step = collections.Counter(e["args"]["step"] for e in ev)
# The trace holds a few steps per worker: keep the steps every worker recorded in full.
steps = sorted(s for s, n in per_step.items() if n >= max(per_step.values()))
ev = [e for e in ev if e["args"]["step"] in steps]
span = collections.defaultdict(lambda: [1e18, -1e18])
busy = collections.defaultdict(float); cnt = collections.Counter(); strm = collections.defaultdict(float)
step_t = collections.defaultdict(lambda: [1e18, -1e18])
for e in ev:
    st = e["args"]["step"]; parts = e["name"].split(" L")
    k = parts[0]; layer = parts[1] if len(parts) > 1 else "-"
    s = span[(st, k, layer)]; s[0] = min(s[0], e["ts"]); s[1] = max(s[1], e["ts"] + e["dur"])
    t = step_t[st]; t[0] = min(t[0], e["ts"]); t[1] = max(t[1], e["ts"] + e["dur"])
    busy[k] += e["dur"]; cnt[k] += 1; strm[k] += e["args"].get("stream_us", 0.0)
n = len(steps)
print(f"{sys.argv[1]}: {n} steps; step spans us: " + " ".join(f"{step_t[s][1]-step_t[s][0]:.0f}" for s in steps))
per = collections.defaultdict(float); nl = collections.defaultdict(set)
for (st, k, layer), (a, z) in span.items():
    per[k] += (z - a) / n; nl[k].add(layer)
workers = len({e["tid"] for e in ev})
print(f"workers {workers}")
print(f"{'op':14s} {'span us/step':>12s} {'per layer':>10s} {'tasks/step':>10s} {'busy us/task':>12s} {'stream us':>10s} {'busy SM-us/step':>15s}")
for k in sorted(per, key=lambda k: -per[k]):
    L = max(1, len(nl[k]))
    print(f"{k:14s} {per[k]:12.1f} {per[k]/L:10.2f} {cnt[k]/n:10.1f} {busy[k]/cnt[k]:12.2f} {strm[k]/cnt[k]:10.2f} {busy[k]/n:15.0f}")
# Critical-path proxy: per layer of a middle step, the op order and gaps.
mid = steps[len(steps)//2]
rows = sorted(((a, z, k, l) for (st, k, l), (a, z) in span.items() if st == mid and l in ("3", "4")), key=lambda r: r[0])
print(f"step {mid}, layers 3-4 (start, end, op):")
for a, z, k, l in rows:
    print(f"  {a - rows[0][0]:9.1f} {z - rows[0][0]:9.1f} {k} L{l}")
