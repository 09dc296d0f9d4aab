#!/usr/bin/env python3
"""Where each task kind's time goes, from a `keel bench --trace X.json` file (or X.prefill.json):
  python3 scripts/analysis/trace_phases.py X.json [LAYER]
Per kind, over the steps every worker recorded in full: tasks a step and the mean per task (us) of
  wait   the dependency wait before the task,
  prep   wait end -> its input ready (a matmul's first input chunk; attention: q/k epilogues done),
  stage  -> its first ring stage landed (attention: its one-position loop done),
  stream first -> last ring stage landed,  after  last stage -> the task's code returned,
  tail   -> barrier, signals and the trace record done,  dur  wait end -> task end.
Then, for the middle step and LAYER (default 3), each of the first 24 workers' tasks in order as
op@start+dur[wait before it] (us from the layer's first task)."""
import collections, json, sys

ev = json.load(open(sys.argv[1]))["traceEvents"]
layer = sys.argv[2] if len(sys.argv) > 2 else "3"
per_step = collections.Counter(e["args"]["step"] for e in ev if e["name"] != "wait")
steps = sorted(s for s, n in per_step.items() if n >= max(per_step.values()))
waits = {(e["tid"], round(e["ts"] + e["dur"], 3)): e["dur"] for e in ev if e["name"] == "wait"}
tasks = [e for e in ev if e["name"] != "wait" and e["args"]["step"] in steps]
acc = collections.defaultdict(lambda: collections.defaultdict(float))
n = collections.Counter()
for e in tasks:
    k = e["name"].split(" L")[0]
    n[k] += 1
    d = acc[k]
    d["dur"] += e["dur"]
    d["wait"] += waits.get((e["tid"], round(e["ts"], 3)), 0.0)
    for f in ("prep_us", "stage_us", "stream_us", "after_us", "tail_us"):
        d[f] += e["args"].get(f, 0.0)
print(f"{sys.argv[1]}: steps {steps}")
print(f"{'kind':12s} {'n/step':>7s} {'wait':>7s} {'prep':>7s} {'stage':>7s} {'stream':>7s} {'after':>7s} {'tail':>7s} {'dur':>7s}")
for k in sorted(n, key=lambda k: -acc[k]["dur"]):
    d, c = acc[k], n[k]
    print(f"{k:12s} {c / len(steps):7.1f} {d['wait'] / c:7.2f} {d['prep_us'] / c:7.2f} {d['stage_us'] / c:7.2f} "
          f"{d['stream_us'] / c:7.2f} {d['after_us'] / c:7.2f} {d['tail_us'] / c:7.2f} {d['dur'] / c:7.2f}")
mid = steps[len(steps) // 2]
lay = [e for e in tasks if e["args"]["step"] == mid and e["name"].endswith(" L" + layer)]
if lay:
    t0 = min(e["ts"] for e in lay)
    byw = collections.defaultdict(list)
    for e in lay:
        byw[e["tid"]].append(e)
    print(f"step {mid}, layer {layer}, per worker (the first 24): op@start+dur[wait]")
    for w in sorted(byw)[:24]:
        row = " ".join(f"{e['name'].split(' L')[0][:6]}@{e['ts'] - t0:.0f}+{e['dur']:.0f}"
                       f"[{waits.get((w, round(e['ts'], 3)), 0):.0f}]" for e in sorted(byw[w], key=lambda e: e["ts"]))
        print(f"  w{w:3d}: {row}")
