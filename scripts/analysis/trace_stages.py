#!/usr/bin/env python3
"""Where a megakernel step goes, from a `keel bench --trace` file (Chrome/Perfetto
JSON, one row per CTA): per stage kind (operator), the mean over layers and
steps after the first of
  inc_us  = last end of the stage - last end of the stage before it (what the
            stage adds to the step's critical path),
  lat_us  = first task start after its wait - that previous end,
  busy_us = mean busy time of the stage's tasks,
one attention -> O-proj hand-off in detail, and that layer's attention tasks
against its q/k/v projection's end (when each task's worker was free, when its
waits were met, its busy time, its end). Works for decode and prefill
launches alike (`keel bench --prompt-len P --trace X.json` also writes
X.prefill.json).

usage: trace_stages.py TRACE.json
"""
import json, sys, collections
ev = json.load(open(sys.argv[1]))["traceEvents"]
st = collections.defaultdict(lambda: [1e18, 0.0, 0.0, 0, 1e18])  # min start, max end, busy sum, n, min busy start
waits = {}
for e in ev:
    if e["name"] == "wait":
        waits[(e["tid"], round(e["ts"] + e["dur"], 3))] = e["dur"]; continue  # by (CTA, the task's start)
    parts = e["name"].split()
    op = parts[0]
    k = (e["args"]["step"], int(parts[1][1:]) if len(parts) > 1 else 999, op)
    s = st[k]; s[0] = min(s[0], e["ts"]); s[1] = max(s[1], e["ts"] + e["dur"]); s[2] += e["dur"]; s[3] += 1
    s[4] = min(s[4], e["ts"])
order = {"attn_norm": -1, "qkv": 0, "kv_append": 1, "attn_partial": 2, "attn_merge": 3, "attention": 3, "o_proj": 4,
         "mlp_norm": 4.5, "gate_up": 5, "down_proj": 6, "final_norm": 6.5, "lm_head": 7, "step": 8}
# kv_append, attn_partial, attn_merge: Programs before v4; the norms: batch Programs'.
for k in st:  # ops this table does not know: after the ones it does
    order.setdefault(k[2], 100 + len(order))
keys = sorted(st, key=lambda k: (k[0], k[1], order[k[2]]))
inc = collections.defaultdict(list); lat = collections.defaultdict(list); busy = collections.defaultdict(list)
prev = None
for k in keys:
    if prev is not None and k[0] > min(x[0] for x in keys):
        inc[k[2]].append(st[k][1] - st[prev][1]); lat[k[2]].append(st[k][4] - st[prev][1])
        busy[k[2]].append(st[k][2] / st[k][3])
    prev = k
print("  stage   inc_us  lat_us  busy_us (means per layer, steps after the first)")
tot = 0
for op in order:
    if op in inc:
        n = len(inc[op]); tot += sum(inc[op])
        print(f"  {op:7s} {sum(inc[op])/n:7.2f} {sum(lat[op])/n:7.2f} {sum(busy[op])/n:7.2f}")
# One attention -> O-proj hand-off in detail (second traced step, middle layer).
s2 = sorted(set(k[0] for k in keys))[1]; lm = max(k[1] for k in keys if k[1] != 999) // 2
a = sorted(e["ts"] + e["dur"] for e in ev if e["name"] in (f"attention L{lm}", f"attn_merge L{lm}") and e["args"]["step"] == s2)
o = sorted(e["ts"] for e in ev if e["name"] == f"o_proj L{lm}" and e["args"]["step"] == s2)
print(f"  step {s2} layer {lm}: last attention chunk ends (us before the last): {[round(a[-1] - x, 2) for x in a[-6:]]}")
print(f"  first oproj starts after it: {[round(x - a[-1], 2) for x in o[:6]]}")
# The attention tasks of that layer against the last q/k/v tile's end Q (us
# after Q; negative: before it): when each task's worker was free (its wait
# began), when its waits were met (the wait ended, it started), its busy time
# and its end; the median, 90th percentile and worst task. A task that starts
# late because its worker was busy shows "free" late; one held by its q/k/v
# tiles shows "met" after "free".
q_end = max((e["ts"] + e["dur"] for e in ev if e["name"] == f"qkv L{lm}" and e["args"]["step"] == s2), default=None)
if q_end is not None:
    rows = []
    for e in ev:
        if e["name"] == f"attention L{lm}" and e["args"]["step"] == s2:
            free = e["ts"] - waits.get((e["tid"], round(e["ts"], 3)), 0.0)
            rows.append((free - q_end, e["ts"] - q_end, e["dur"], e["ts"] + e["dur"] - q_end))
    if rows:
        def pct(i, p):
            v = sorted(r[i] for r in rows)
            return v[min(len(v) - 1, int(p * len(v)))]
        print(f"  attention tasks of step {s2} layer {lm} ({len(rows)}), us after the last qkv tile's end: "
              "free / met / busy / end")
        for name, p in (("p50", 0.5), ("p90", 0.9), ("max", 1.0)):
            print(f"    {name}: {pct(0, p):7.2f} {pct(1, p):7.2f} {pct(2, p):7.2f} {pct(3, p):7.2f}")
        last = max(rows, key=lambda r: r[3])
        print(f"    last to end: {last[0]:7.2f} {last[1]:7.2f} {last[2]:7.2f} {last[3]:7.2f}")
