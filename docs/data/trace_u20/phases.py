#!/usr/bin/env python3
"""Update 20's per-block phase stamps of the skinny GEMM in one replayed decode step (docs/benchmarks-cuda.md).

The CSVs come from a temporary build (trace_and_switches.patch, on top of d3f6dad; not part of the
library, run with LCKV_TMP_TRACE=prefix [LCKV_TMP_FLAGS=n] bench_cuda --benchmark_filter=...).
Thread 0 of every skinny block wrote one row:
    launch id, kind * 10^6 + splits * 10^3 + block, SM, grid size,
    t_start, t_waited (pdl::wait returned), t_looped (main loop done), t_tile (k halves summed in
    shared memory), t_synced (first cluster barrier passed), t_summed (cluster sums done and the
    second barrier arrived at), t_stored (epilogue done), t_end          (%globaltimer, ns)
kind: 1 q / k / v (RMSNorm, RoPE, K/V store), 2 gate / up / SwiGLU, 3 o_proj, down and the lm_head.

    python3 phases.py b32_s1024_landed.csv.gz

Prints, per launch kind, the median over the step's layers (the first and last two left out) of
each launch's figures in us: times relative to the launch's first pdl::wait return, and each
phase's duration as a median over blocks and for the block that ended last; `barrier` is a
block's release from the first cluster barrier after its cluster's last arrival.
"""
import collections
import csv
import gzip
import statistics as st
import sys


def main(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = [list(map(int, r)) for r in csv.reader(f)]
    launches = collections.defaultdict(list)
    for r in rows:
        launches[r[0]].append(r)
    agg = collections.defaultdict(lambda: collections.defaultdict(list))
    previous = None
    for lid in sorted(launches):
        blocks = launches[lid]
        kind, splits = blocks[0][1] // 10**6, blocks[0][1] // 1000 % 1000
        name = {1: "q / k / v", 2: "gate / up"}.get(kind)
        if name is None:
            name = {"q / k / v": "o_proj", "gate / up": "down"}.get(previous, "lm_head")
        previous = name
        waited = min(b[5] for b in blocks)
        last = max(blocks, key=lambda b: b[11])
        a = agg[name]
        a["blocks"].append(len(blocks))
        a["splits"].append(splits)
        a["SMs used"].append(len({b[2] for b in blocks}))
        a["loop done, median"].append(st.median((b[6] - waited) / 1e3 for b in blocks))
        a["loop done, last"].append(max((b[6] - waited) / 1e3 for b in blocks))
        a["last block ended"].append((last[11] - waited) / 1e3)
        for phase, (i, j) in {"tile": (6, 7), "first barrier": (7, 8), "sums + arrive": (8, 9),
                              "epilogue": (9, 10)}.items():
            a[phase + ", median"].append(st.median((b[j] - b[i]) / 1e3 for b in blocks))
            a[phase + ", last block"].append((last[j] - last[i]) / 1e3)
        if splits > 1:
            clusters = collections.defaultdict(list)
            for b in blocks:
                clusters[b[1] % 1000 // splits].append(b)
            lat = [(b[8] - max(x[7] for x in c)) / 1e3 for c in clusters.values() for b in c]
            a["barrier after last arrival, median"].append(st.median(lat))
    names = ["q / k / v", "o_proj", "gate / up", "down"]
    print(f"{path}: {len(launches)} launches")
    print(f"{'':38}" + "".join(f"{n:>11}" for n in names))
    for key in agg["q / k / v"]:
        vals = []
        for n in names:
            v = agg[n][key]
            v = v[2:-2] if len(v) > 6 else v
            vals.append(st.median(v) if v else float("nan"))
        print(f"{key:38}" + "".join(f"{x:11.2f}" for x in vals))


if __name__ == "__main__":
    main(sys.argv[1])
