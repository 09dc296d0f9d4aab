# Per-layer timeline of one megakernel trace: for each (step, layer) the stage
# boundaries, and for a few layers the attention chunks and first O-proj tasks.
import json, sys, collections, statistics
ev = json.load(open(sys.argv[1]))["traceEvents"]
tasks = collections.defaultdict(list)  # (step, layer, op) -> [(tid, ts, end, dur)]
waits = {}
for e in ev:
    if e["name"] == "wait":
        waits[(e["tid"], round(e["ts"] + e["dur"], 3))] = e["ts"]
        continue
    parts = e["name"].split()
    if len(parts) < 2: continue
    tasks[(e["args"]["step"], int(parts[1][1:]), parts[0])].append((e["tid"], e["ts"], e["ts"] + e["dur"], e["dur"]))
steps = sorted(set(k[0] for k in tasks)); layers = sorted(set(k[1] for k in tasks))
ops = ["qkv", "kv_append", "attn_partial", "attn_merge", "attention", "o_proj", "gate_up", "down_proj"]
gaps = collections.defaultdict(list)
for s in steps[1:]:
    for l in layers:
        prev_end = None
        for op in ops:
            t = tasks.get((s, l, op))
            if not t: continue
            first = min(x[1] for x in t); last = max(x[2] for x in t)
            if prev_end is not None: gaps[op].append((first - prev_end, last - prev_end))
            prev_end = last
print("stage: lat (first start after wait - prev stage last end) p10/p50/p90/max; inc p50")
for op in ops:
    if op in gaps:
        a = sorted(x[0] for x in gaps[op]); b = sorted(x[1] for x in gaps[op]); n = len(a)
        print(f"  {op:12s} lat {a[n//10]:6.2f} {a[n//2]:6.2f} {a[9*n//10]:6.2f} {a[-1]:7.2f}  inc {b[n//2]:6.2f} mean {sum(b)/n:6.2f}")
s = steps[len(steps) // 2]
for l in (layers[1], layers[len(layers) // 2], layers[-2]):
    qe = max(x[2] for x in tasks[(s, l, "qkv")])
    print(f"step {s} layer {l}: times relative to last qkv end")
    for op in ("attention", "attn_partial", "attn_merge", "kv_append"):
        t = tasks.get((s, l, op))
        if not t: continue
        t = sorted(t, key=lambda x: x[2])
        print(f"  {op}: n {len(t)}, starts {min(x[1] for x in t)-qe:.2f}..{max(x[1] for x in t)-qe:.2f}; last 5 (sm, start, end, busy):",
              [(x[0], round(x[1]-qe, 2), round(x[2]-qe, 2), round(x[3], 2)) for x in t[-5:]])
    t = sorted(tasks[(s, l, "o_proj")], key=lambda x: x[1])
    print("  o_proj first 5 (sm, wait start, start, end):",
          [(x[0], round(waits.get((x[0], round(x[1], 3)), x[1]) - qe, 2), round(x[1]-qe, 2), round(x[2]-qe, 2)) for x in t[:5]])
# Attention task phases (means): wait end -> q/k epilogue done (prep), -> positions
# done (stage), then when traced: partial stored + arrival (stream_us) and the
# merge (after_us), else their sum; tail.
ph = collections.defaultdict(list)
for e in ev:
    if e["name"].startswith("attention "):
        a = e["args"]
        ph["prep"].append(a.get("prep_us", 0)); ph["positions"].append(a.get("stage_us", 0)); ph["tail"].append(a.get("tail_us", 0))
        if "stream_us" in a:
            ph["store+arrive"].append(a["stream_us"]); ph["merge"].append(a["after_us"])
        else:
            ph["store+arrive+merge"].append(e["dur"] - a.get("prep_us", 0) - a.get("stage_us", 0) - a.get("tail_us", 0))
if ph:
    print("attention phases (mean / max us):", {k: (round(sum(v) / len(v), 2), round(max(v), 2)) for k, v in ph.items()})
# One layer's boundaries in detail: the last 3 producers to end, the first 3 consumers to start.
s = steps[len(steps) // 2]; l = layers[len(layers) // 2]
order = [(s, l - 1, "down_proj"), (s, l, "qkv"), (s, l, "attention"), (s, l, "o_proj"), (s, l, "gate_up"), (s, l, "down_proj")]
t0 = max(x[2] for x in tasks[order[0]])
for a, b in zip(order, order[1:]):
    pa = sorted(tasks[a], key=lambda x: x[2])[-3:]; cb = sorted(tasks[b], key=lambda x: x[1])[:3]
    print(f"  {a[2]} -> {b[2]}: last ends (sm, end) {[(x[0], round(x[2]-t0, 2)) for x in pa]}; first starts (sm, wait start, start) "
          f"{[(x[0], round(waits.get((x[0], round(x[1], 3)), x[1]) - t0, 2), round(x[1]-t0, 2)) for x in cb]}")
