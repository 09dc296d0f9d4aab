#!/usr/bin/env python3
"""SASS instructions of one kernel attributed to a line range of one source file
(a device header: src/ops/attention.cuh by default, or e.g. matvec.cuh).

On the GPU machine (cuobjdump and nvdisasm come with the toolkit; the build has -lineinfo):
  cuobjdump -xelf all .device/keel                    # writes program_kernel.sm_90a.cubin
  python3 scripts/analysis/sass_lines.py program_kernel.sm_90a.cubin 120 150 program_kernel [attention.cuh]
Prints the opcode histogram (BSSY/BSYNC pairs, branches, shuffles ...) and the
instructions with their source line, over every template instantiation.
"""
import re, sys, subprocess, glob
# nvdisasm -g output: "//## File "path", line N" comments precede instructions
path, lo, hi, fn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
src = sys.argv[5] if len(sys.argv) > 5 else 'attention.cuh'
txt = subprocess.run(["nvdisasm", "-g", "-c", path], capture_output=True, text=True).stdout
cur_fn = None; cur = None; out = []; counts = {}
for line in txt.splitlines():
    m = re.match(r'\s*\.text\.(\S+):', line)
    if m: cur_fn = m.group(1); continue
    m = re.search(r'//## File "([^"]+)", line (\d+)', line)
    if m: cur = (m.group(1).split('/')[-1], int(m.group(2))); continue
    if cur_fn and fn in cur_fn and cur and cur[0] == src and lo <= cur[1] <= hi and re.search(r'/\*[0-9a-f]{4,}\*/', line):
        ins = line.split('*/', 1)[1].strip()
        out.append(f"{cur[1]}: {ins}")
        op = ins.split()[0] if ins else ''
        if op.startswith('@'): op = ins.split()[1]
        op = op.split('.')[0]
        counts[op] = counts.get(op, 0) + 1
print(len(out), "instructions;", sorted(counts.items(), key=lambda kv: -kv[1])[:30])
for l in out[:400]: print(l)
