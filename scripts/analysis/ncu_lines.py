#!/usr/bin/env python3
"""Warp-stall samples of an Nsight Compute report, summed per source line.

On the GPU machine (ncu ships the ncu_report module under extras/python):
  ncu --kernel-name regex:program_kernel --launch-count 1 --section SourceCounters \
      -o /tmp/rep .device/keel bench --config ... --random-weights --tokens 32 --launch megakernel
  python3 scripts/analysis/ncu_lines.py /tmp/rep.ncu-rep [top]

Prints the lines with the most samples (all warps, so the spinning loader,
signaller and waits show too), each with its stall reasons, and the per-file totals.
Needs a build with -lineinfo (the project's CMake adds it for CUDA).
"""
import collections
import glob
import os
import sys

for d in sorted(glob.glob("/usr/local/cuda*/nsight-compute*/extras/python")) + sorted(
        glob.glob("/opt/nvidia/nsight-compute/*/extras/python")):
    sys.path.append(d)
import ncu_report  # noqa: E402

path = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
ctx = ncu_report.load_report(path)
action = ctx.range_by_idx(0).action_by_idx(0)

prefix = "smsp__pcsamp_warps_issue_stalled_"
reasons = [n for n in action.metric_names() if n.startswith(prefix) and not n.endswith("_not_issued")]
per_line = collections.defaultdict(collections.Counter)
for name in reasons:
    m = action.metric_by_name(name)
    ids = m.correlation_ids()
    if ids is None:
        continue
    for k in range(m.num_instances()):
        v = m.as_uint64(k)
        if not v:
            continue
        pc = ids.as_uint64(k)
        info = action.source_info(pc)
        where = f"{os.path.basename(info.file_name())}:{info.line()}" if info else f"pc 0x{pc:x}"
        per_line[where][name[len(prefix):]] += v

total = sum(sum(c.values()) for c in per_line.values())
print(f"{total} samples over {len(per_line)} lines")
by_file = collections.Counter()
for where, c in per_line.items():
    by_file[where.split(":")[0]] += sum(c.values())
for f, v in by_file.most_common():
    print(f"  {f:32s} {v:10d} {100.0 * v / total:5.1f}%")
print()
for where, c in sorted(per_line.items(), key=lambda kv: -sum(kv[1].values()))[:top]:
    n = sum(c.values())
    why = ", ".join(f"{r} {v}" for r, v in c.most_common(4))
    print(f"{where:32s} {n:9d} {100.0 * n / total:5.1f}%  {why}")
