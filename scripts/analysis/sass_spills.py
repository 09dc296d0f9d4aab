#!/usr/bin/env python3
"""Where a kernel's register spills are: local-memory loads and stores (LDL /
STL) of one kernel of a compiled object, counted per source line.

ptxas only reports a kernel's spill total ("N bytes spill stores"); whether the
spills sit in a hot loop or in code that runs once a task decides what they
cost. The long-context kernel variants run at their register limit: a change
that adds a few registers to one loop can move spills into another (measured:
docs/log/results.md, 2026-12-04 afternoon).

Needs nvdisasm and cuobjdump (the build has -lineinfo). The development
machine's CUDA install lacks both; the PyPI wheels nvidia-cuda-nvdisasm and
nvidia-cuda-cuobjdump carry them (`pip download --no-deps`, unzip, put
nvidia/cu13/bin on PATH).

  python3 scripts/analysis/sass_spills.py \\
      build/device/src/exec/cuda/CMakeFiles/keel_exec_cuda.dir/program_kernel_long.cu.o \\
      [kernel-name-substring, default 14program_kernel] [rows, default 30]

Accepts an object file, an executable or a .cubin.
"""
import collections
import os
import re
import subprocess
import sys
import tempfile


def cubins(path):
    if path.endswith(".cubin"):
        return [path]
    d = tempfile.mkdtemp(prefix="sass_spills.")
    subprocess.run(["cuobjdump", "-xelf", "all", os.path.abspath(path)], cwd=d, check=True,
                   stdout=subprocess.DEVNULL)
    return [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".cubin")]


def demangle_short(name):
    """A called function's name without namespaces and parameters, with its integer template
    arguments: _ZN4keel...11attn_streamILi4ELi8EEEb... -> attn_stream<4,8>."""
    i = name.find("_ZN")
    if i < 0:
        return name
    i += 3
    last = name
    while i < len(name) and name[i].isdigit():
        j = i
        while name[j].isdigit():
            j += 1
        n = int(name[i:j])
        last, i = name[j:j + n], j + n
        if name.startswith("I", i):  # template arguments up to the matching E
            depth, k = 0, i
            while k < len(name):
                depth += name[k] in "IL"
                depth -= name[k] == "E"
                k += 1
                if depth == 0:
                    break
            last += "<" + ",".join(re.findall(r"L[ib](-?\d+)E", name[i:k])) + ">"
            i = k
    return last


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    want = sys.argv[2] if len(sys.argv) > 2 else "14program_kernel"
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    for cubin in cubins(path):
        txt = subprocess.run(["nvdisasm", "-g", "-c", cubin], capture_output=True, text=True, check=True).stdout
        fn = src = None
        sub = ""  # a called (noinline) function inside the kernel's section: its own rows
        count = collections.Counter()
        for line in txt.splitlines():
            m = re.match(r"\.text\.(\S+):", line)
            if m:
                fn, sub = m.group(1), ""
                continue
            m = re.match(r"\$[^$\s]+\$(\S+):", line)
            if m:
                sub = m.group(1)
                continue
            m = re.search(r'//## File "([^"]+)", line (\d+)', line)
            if m:
                src = f"{os.path.basename(m.group(1))}:{m.group(2)}"
                continue
            m = re.search(r"\b(LDL|STL)(\.\S+)?\s", line)
            if fn and want in fn and m:
                count[(src, m.group(1), demangle_short(sub))] += 1
        if not count:
            continue
        print(f"{os.path.basename(cubin)}: {sum(count.values())} local-memory instructions in kernels matching '{want}'")
        for (where, op, sub), n in count.most_common(rows):
            print(f"  {n:6d}  {op}  {where}" + (f"  (in {sub})" if sub else ""))


if __name__ == "__main__":
    main()
