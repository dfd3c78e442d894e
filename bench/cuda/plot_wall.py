#!/usr/bin/env python3
"""Host wall-clock time of one TinyLlama-shape decode step against its device time, per
configuration (batch x context x plan) of one BM_TinyLlamaDecodeStep JSON: the forward that
returns [batch, vocab] fp32 logits (wall_ms), the forward that samples on the device and
returns token ids (wall_sampled_ms), and the graph's device time (device_ms). Default
variant (2) only.

    python3 bench/cuda/plot_wall.py out.png bench_cuda.json
"""
import json
import sys


def main(png, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as f:
        benchmarks = json.load(f)["benchmarks"]
    rows = []
    for b in benchmarks:
        if not b["name"].startswith("BM_TinyLlamaDecodeStep/") or "wall_sampled_ms" not in b:
            continue
        a = dict(p.split(":") for p in b["name"].split("/")[1:] if ":" in p)
        if a.get("variant") != "2" or a.get("splits", "0") != "0":
            continue
        key = (int(a["batch"]), int(a["context"]), "lckv-w2" if a["lckv"] == "1" else "standard")
        rows.append((key, b["device_ms"], b["wall_sampled_ms"], b["wall_ms"]))
    rows.sort()
    series = [("device time", 1), ("wall, sampled on the device", 2), ("wall, logits to the host", 3)]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(series)
    for i, (label, column) in enumerate(series):
        ax.bar([k + i * width for k in range(len(rows))], [r[column] for r in rows], width, label=label)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(rows))])
    ax.set_xticklabels([f"b{b}\n{c // 1024}K\n{p}" for (b, c, p), *_ in rows], fontsize=7)
    ax.set_ylabel("ms per decode step")
    ax.set_yscale("log")
    ax.set_title("TinyLlama-1.1B shape decode step (bf16): host wall time against device time")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"plot: {png}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
