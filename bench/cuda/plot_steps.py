#!/usr/bin/env python3
"""The TinyLlama-shape decode step as a fraction of its roofline, one bar per
binary (e.g. a session's starting commit and now, run in the same device call)
and configuration (batch x context x plan), with the issue's targets (0.70 at
batch 1, 0.80 at batch >= 32). Roofline = (weights + KV read) / the copy
bandwidth each JSON measured itself. Only the default variant (2) is drawn.

    python3 bench/cuda/plot_steps.py out.png start=base.json now=bench_cuda.json
"""
import json
import sys


def load(path):
    """{(batch, context, plan): fraction of roofline}, and the copy bandwidth in GB/s."""
    with open(path) as f:
        benchmarks = json.load(f)["benchmarks"]
    copy = next(b["bytes_per_s"] for b in benchmarks if b["name"].startswith("BM_CopyBandwidth"))
    fractions = {}
    for b in benchmarks:
        if not b["name"].startswith("BM_TinyLlamaDecodeStep/"):
            continue
        a = dict(p.split(":") for p in b["name"].split("/")[1:] if ":" in p)
        if a.get("variant") != "2" or a.get("splits", "0") != "0":
            continue
        roofline_ms = b["bytes_MB"] * 1e6 / copy * 1e3
        key = (int(a["batch"]), int(a["context"]), "lckv-w2" if a["lckv"] == "1" else "standard")
        fractions[key] = roofline_ms / b["device_ms"]
    return fractions, copy / 1e9


def main(png, labelled):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for item in labelled:
        label, path = item.split("=", 1)
        runs.append((label, *load(path)))
    keys = sorted(set().union(*(r[1].keys() for r in runs)))
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(runs)
    for i, (label, fractions, copy) in enumerate(runs):
        xs = [k + i * width for k in range(len(keys))]
        ax.bar(xs, [fractions.get(k, 0.0) for k in keys], width, label=f"{label} (copy {copy:.0f} GB/s)")
    for k, key in enumerate(keys):
        target = 0.70 if key[0] == 1 else 0.80 if key[0] >= 32 else None
        if target:
            ax.hlines(target, k - 0.1, k + 0.9 - 0.1, colors="red", linewidth=1)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))])
    ax.set_xticklabels([f"b{b}\n{c // 1024}K\n{p}" for b, c, p in keys], fontsize=7)
    ax.set_ylabel("roofline / device time")
    ax.set_ylim(0, 1)
    ax.set_title("TinyLlama-1.1B shape decode step (bf16, CUDA Graph replay); red: target")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"plot: {png}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
