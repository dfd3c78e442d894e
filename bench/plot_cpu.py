#!/usr/bin/env python3
"""Plot CPU decode throughput from bench_cpu's Google Benchmark JSON.

    build-tests/bin/bench_cpu --benchmark_out=cpu.json --benchmark_out_format=json
    python3 bench/plot_cpu.py cpu.json docs/cpu_decode.png

Left: decode tokens/s per variant at batch 1, 8, 32, with the plain C Llama
baseline (batch 1) as a line. Right: achieved weight-read bandwidth (GB/s).
With --repetitions, the median of each benchmark is used.
"""
import json
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = [b for b in data["benchmarks"] if b.get("run_type") == "iteration" or
            b.get("aggregate_name") == "median"]
    # Prefer medians when repetitions were run.
    if any(b.get("aggregate_name") == "median" for b in rows):
        rows = [b for b in rows if b.get("aggregate_name") == "median"]
    return data["context"], rows


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "cpu.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/cpu_decode.png"
    context, rows = load(src)
    decode = defaultdict(dict)  # label -> batch -> (tokens/s, weight GB/s)
    baseline = None
    for b in rows:
        name = b["run_name"] if "run_name" in b else b["name"]
        if name.startswith("BM_BaselineDecode"):
            baseline = (b["items_per_second"], b["weight_rd"] / 1e9)
            continue
        m = re.match(r"BM_Decode/variant:(\d+)/batch:(\d+)", name)
        if m:
            decode[b["label"]][int(m.group(2))] = (b["items_per_second"], b["weight_rd"] / 1e9)

    labels = list(decode)
    batches = sorted({bt for d in decode.values() for bt in d})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(batches))
    for i, bt in enumerate(batches):
        xs = [k + (i - (len(batches) - 1) / 2) * width for k in range(len(labels))]
        ax1.bar(xs, [decode[l].get(bt, (0, 0))[0] for l in labels], width, label=f"batch {bt}")
        ax2.bar(xs, [decode[l].get(bt, (0, 0))[1] for l in labels], width, label=f"batch {bt}")
    if baseline:
        ax1.axhline(baseline[0], color="k", ls="--", lw=1, label="plain C Llama, batch 1")
        ax2.axhline(baseline[1], color="k", ls="--", lw=1, label="plain C Llama, batch 1")
    for ax, title, unit in ((ax1, "decode throughput", "tokens / s"), (ax2, "weight reads", "GB / s")):
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    ax1.legend(fontsize=8)
    ctx = context.get("decode_context", "?")
    fig.suptitle(f"lckv CPU decode, llama_tiny fp32, context {ctx}, "
                 f"{context.get('num_cpus', '?')} cores, {context.get('date', '')[:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
