#!/usr/bin/env python3
"""Update 12's per-block trace of one TinyLlama-shape decode step (docs/benchmarks-cuda.md).

The CSV comes from a temporary build (trace.patch, on top of commit 0bb52bf; not part of the
library): every block of the skinny GEMM and of the decode attention wrote one row
    kind, block, sm, t_start, t_waited, t_looped, t_end   (%globaltimer, ns)
t_waited: pdl::wait returned; t_looped: its main loop (weights / keys) was done.
kind: 1 q / k / v (RMSNorm, RoPE, K/V store), 2 gate / up / SwiGLU, 3 o_proj and the lm_head,
4 down, 5 decode attention.

    python3 trace_step.py table b32_s1024_standard.csv.gz
    /usr/bin/python3 trace_step.py plot b32_s1024_standard.csv.gz out.png [first_layer]
"""
import collections
import csv
import gzip
import statistics
import sys

NAMES = {1: "q / k / v", 5: "attention", 3: "o_proj", 2: "gate / up", 4: "down"}
ORDER = [1, 5, 3, 2, 4]  # a layer's launches
LAYERS = 22
LM_HEAD_BLOCKS = 250  # the last kind-3 launch: 32000 / 128 tiles, no split


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [tuple(int(x) for x in row) for row in csv.reader(f)]


def launches(recs):
    """[(kind, blocks)] in start order. Each kind runs once per layer with the same grid, so a
    kind's blocks sorted by start split into 22 equal launches (kind 3 after the lm_head's)."""
    by_kind = collections.defaultdict(list)
    for r in recs:
        by_kind[r[0]].append(r)
    out = []
    for kind, rs in by_kind.items():
        rs.sort(key=lambda r: r[3])
        if kind == 3 and len(rs) % LAYERS:
            rs = rs[: len(rs) - LM_HEAD_BLOCKS]
        n = len(rs) // LAYERS
        if n * LAYERS != len(rs):
            sys.exit(f"kind {kind}: {len(rs)} blocks are not {LAYERS} equal launches")
        out += [(kind, rs[i * n:(i + 1) * n]) for i in range(LAYERS)]
    out.sort(key=lambda l: min(r[3] for r in l[1]))
    return out


def table(recs):
    ls = launches(recs)
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    for i in range(3, len(ls) - 3):  # away from the step's ends
        prev_end = max(r[6] for r in ls[i - 1][1])
        kind, rs = ls[i]
        t = [[r[3 + k] for r in rs] for k in range(4)]
        row = rows[kind]
        row["blocks"].append(len(rs))
        row["SMs used"].append(len({r[2] for r in rs}))
        row["first start before the previous end"].append((prev_end - min(t[0])) / 1e3)
        row["pdl::wait returned (median)"].append((statistics.median(t[1]) - prev_end) / 1e3)
        row["main loop done (median)"].append((statistics.median(t[2]) - prev_end) / 1e3)
        row["main loop done (last block)"].append((max(t[2]) - prev_end) / 1e3)
        row["last block ended"].append((max(t[3]) - prev_end) / 1e3)
        row["tail: last loop done -> last end"].append((max(t[3]) - max(t[2])) / 1e3)
    print("us, median over the launches (the step's first and last three left out), relative to the previous "
          "launch's last block end")
    print(f"{'':38}" + "".join(f"{NAMES[k]:>12}" for k in ORDER))
    for key in rows[ORDER[0]]:
        print(f"{key:38}" + "".join(f"{statistics.median(rows[k][key]):>12.1f}" for k in ORDER))


def plot(recs, png, first_layer):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ls = launches(recs)[5 * first_layer:5 * first_layer + 10]
    t_base = min(r[3] for _, rs in ls for r in rs)
    fig, ax = plt.subplots(figsize=(11, 5.2))
    colors = ("#bbbbbb", "#3b75af", "#d1495b")  # before pdl::wait returns, main loop, tail
    for row, (kind, rs) in enumerate(ls):
        rs = sorted(rs, key=lambda r: r[3])
        for j, r in enumerate(rs):
            y = row + 0.1 + 0.8 * j / len(rs)
            for k, c in enumerate(colors):
                ax.plot([(r[3 + k] - t_base) / 1e3, (r[4 + k] - t_base) / 1e3], [y, y], color=c, lw=0.6)
        end = (max(r[6] for r in rs) - t_base) / 1e3
        ax.plot([end, end], [row, row + 1], color="black", lw=0.8)
    ax.set_yticks([i + 0.5 for i in range(len(ls))])
    ax.set_yticklabels([f"layer {first_layer + i // 5}: {NAMES[k]}" for i, (k, _) in enumerate(ls)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("us (one line per block: grey = started, waiting for the previous kernel; "
                  "blue = main loop; red = split-K reduction / merge and epilogue; black = last block's end)",
                  fontsize=7)
    ax.set_title("TinyLlama-1.1B shape decode step, batch 32 x 1K, standard plan, H100 (2026-11-27 06:26 UTC)",
                 fontsize=9)
    ax.grid(axis="x", lw=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"plot: {png}")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("table", "plot"):
        sys.exit(__doc__)
    records = read(sys.argv[2])
    if sys.argv[1] == "table":
        table(records)
    else:
        plot(records, sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 10)
