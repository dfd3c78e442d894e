#!/usr/bin/env python3
"""Per-kernel time of one decode step from an Nsight Compute CSV
(profile_step.sh: --metrics gpu__time_duration.sum, --graph-profiling node).

A step starts at the embedding kernel; the last complete step in the file is
summed per kernel kind (name + grid + block), largest first, then the first
layer's launches are listed in order.

    python3 bench/cuda/breakdown.py ncu.csv
"""
import csv
import re
import sys


def short(name):
    """'void lckv::cuda::kernels::gemv<bf16, 1, 2, ...>(...)' -> 'gemv<bf16, 1, 2, ...>'."""
    name = re.sub(r"^void\s+", "", name)
    head = name.split("(")[0]
    base = re.sub(r"<.*", "", head).split("::")[-1]
    tmpl = head[len(head.split("<")[0]):]
    tmpl = re.sub(r"lckv::|cuda::|kernels::|__nv_bfloat16", lambda m: "bf16" if "bfloat" in m.group(0) else "", tmpl)
    return base + (tmpl[:48] if tmpl else "")


def main(path):
    with open(path) as f:
        lines = [l for l in f if l.startswith('"')]
    rows = list(csv.DictReader(lines))
    kernels = []
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        kernels.append((short(r["Kernel Name"]), r["Grid Size"], r["Block Size"], float(r["Metric Value"].replace(",", "")) / 1e3))
    starts = [i for i, k in enumerate(kernels) if k[0].startswith("embed")]
    if len(starts) < 2:
        print(f"breakdown: {len(kernels)} kernels, fewer than two step starts (embed); nothing to sum")
        return
    step = kernels[starts[-2]:starts[-1]]
    total = sum(k[3] for k in step)
    groups = {}
    for name, grid, block, us in step:
        g = groups.setdefault((name, grid, block), [0, 0.0])
        g[0] += 1
        g[1] += us
    print(f"one step: {len(step)} kernels, sum of kernel times {total:.1f} us (each timed alone)")
    print(f"{'us':>9} {'share':>6} {'count':>5} {'mean us':>8}  kernel [grid] [block]")
    for (name, grid, block), (n, us) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"{us:9.1f} {us / total:6.1%} {n:5d} {us / n:8.2f}  {name} {grid} {block}")
    print("first launches in order:")
    for name, grid, block, us in step[:9]:
        print(f"  {us:8.2f}  {name} {grid} {block}")


if __name__ == "__main__":
    main(sys.argv[1])
