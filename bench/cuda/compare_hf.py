#!/usr/bin/env python3
"""lckv against HF transformers on the same GPU (TinyLlama-1.1B shape, bf16), from one device
call's two JSON files: hf_baseline.py's and bench_cuda's (BM_TinyLlamaDecodeStep at the default
variant 2, BM_TinyLlamaPrefill). Prints markdown tables (decode: ms per step; prefill: tokens/s;
how many times faster lckv is) and draws the decode steps as a bar plot.

    python3 bench/cuda/compare_hf.py hf_baseline.json bench_cuda.json [plot.png]
"""
import json
import sys


def lckv_results(path):
    """From bench_cuda's JSON: {(batch, context, lckv): device ms} of the decode steps (default
    variant, split choice), {(batch, prompt, lckv): tokens/s} of the prefills, {(batch, context):
    us per 22 layers} of the standard plan's decode attention, and the copy bandwidth (bytes/s)."""
    steps, prefill, attention, copy = {}, {}, {}, None
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
    for b in json.load(open(path))["benchmarks"]:
        a = dict(p.split(":") for p in b["name"].split("/")[1:] if ":" in p)
        if b["name"].startswith("BM_TinyLlamaDecodeStep/") and a.get("variant") == "2" and a.get("splits") == "0":
            steps[(int(a["batch"]), int(a["context"]), int(a["lckv"]))] = b["device_ms"]
        elif b["name"].startswith("BM_TinyLlamaPrefill/"):
            prefill[(int(a["batch"]), int(a["prompt"]), int(a["lckv"]))] = b["tokens_per_s"]
        elif (b["name"].startswith("BM_DecodeAttention/") and a.get("lckv") == "0" and a.get("persist") == "0"
              and a.get("splits") == "0" and "real_time" in b):
            attention[(int(a["batch"]), int(a["context"]))] = b["real_time"] * scale[b["time_unit"]]
        elif b["name"].startswith("BM_CopyBandwidth/") and "bytes_per_s" in b:
            copy = b["bytes_per_s"]
    return steps, prefill, attention, copy


def cell(v, digits):
    """A table cell: v with `digits` decimals, or "-" where it was not measured."""
    return f"{v:.{digits}f}" if v is not None else "-"


def decode_table(hf, ours):
    """HF's decode steps against lckv's (ms); returns the rows for the plot."""
    hf_ms = {(r["batch"], r["context"], r["mode"]): r.get("ms_median") for r in hf["rows"]
             if r["mode"] in ("eager", "graph")}
    shapes = sorted({(b, c) for b, c, _ in hf_ms})
    if not shapes:
        return []
    print()
    print("| batch x context | HF eager | HF CUDA graph | lckv standard | lckv lckv-w2 | HF graph / lckv standard |")
    print("|---|---|---|---|---|---|")
    rows = []
    for b, c in shapes:
        e, g = hf_ms.get((b, c, "eager")), hf_ms.get((b, c, "graph"))
        s, w = ours.get((b, c, 0)), ours.get((b, c, 1))
        ratio = f"{g / s:.1f}" if g and s else "-"
        print(f"| {b} x {c // 1024}K | {cell(e, 3)} | {cell(g, 3)} | {cell(s, 3)} | {cell(w, 3)} | {ratio} |")
        rows.append((f"{b} x {c // 1024}K", e, g, s, w))
    return rows


def prefill_table(hf, our_prefill):
    """HF's prefill tokens/s against lckv's."""
    hf_prefill = [r for r in hf["rows"] if r["mode"] == "prefill"]
    if not hf_prefill:
        return
    print()
    print("| prefill batch x prompt | HF tokens/s | lckv standard | lckv lckv-w2 | lckv standard / HF |")
    print("|---|---|---|---|---|")
    for r in hf_prefill:
        s = our_prefill.get((r["batch"], r["prompt"], 0))
        w = our_prefill.get((r["batch"], r["prompt"], 1))
        ratio = f"{s / r['tokens_per_s']:.1f}" if s else "-"
        print(f"| {r['batch']} x {r['prompt']} | {r['tokens_per_s']:.0f} | {cell(s, 0)} | {cell(w, 0)} | {ratio} |")


def attention_table(hf, our_attention, copy):
    """PyTorch's SDPA backends against lckv's decode attention (us per 22 layers, fraction of copy)."""
    sdpa = [r for r in hf["rows"] if r["mode"].startswith("sdpa-")]
    if not sdpa:
        return
    backends = sorted({r["mode"] for r in sdpa if "ms_median" in r})  # those that took the problem
    print()
    print(f"Decode attention, 22 layers, us (fraction of copy bandwidth{f', {copy / 1e9:.0f} GB/s' if copy else ''}):")
    print()
    print("| batch x context | " + " | ".join(f"torch {b}" for b in backends) + " | lckv | fastest torch / lckv |")
    print("|---" * (len(backends) + 3) + "|")

    def timed(us, kv_bytes):
        return f"{us:.1f}" + (f" ({kv_bytes / (us * 1e-6) / copy:.2f})" if copy else "")

    for b, c in sorted({(r["batch"], r["context"]) for r in sdpa}):
        cells, best, kv_bytes = [], None, None
        for m in backends:
            r = next((r for r in sdpa if (r["batch"], r["context"], r["mode"]) == (b, c, m)), None)
            if r and "ms_median" in r:
                us = r["ms_median"] * 1e3
                kv_bytes = r["kv_bytes"]
                best = us if best is None else min(best, us)
                cells.append(timed(us, kv_bytes))
            else:
                cells.append("n/a")
        mine = our_attention.get((b, c))
        mine_cell = timed(mine, kv_bytes) if mine and kv_bytes else "-"
        ratio = f"{best / mine:.2f}" if mine and best else "-"
        print(f"| {b} x {c // 1024}K | " + " | ".join(cells) + f" | {mine_cell} | {ratio} |")


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    hf = json.load(open(sys.argv[1]))
    ours, our_prefill, our_attention, copy = lckv_results(sys.argv[2])
    print(f"{hf['device']}, torch {hf['torch']}, transformers {hf['transformers']} ({hf['attention']}), {hf['date']}")
    rows = decode_table(hf, ours)
    prefill_table(hf, our_prefill)
    attention_table(hf, our_attention, copy)
    if len(sys.argv) > 3 and rows:
        plot(rows, hf, sys.argv[3])


def plot(rows, hf, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    series = ("HF eager", "HF CUDA graph", "lckv standard", "lckv lckv-w2")
    width = 0.2
    for i, name in enumerate(series):
        xs = [k + (i - 1.5) * width for k in range(len(rows))]
        ax.bar(xs, [r[1 + i] or 0 for r in rows], width, label=name)
    ax.set_xticks(range(len(rows)), [r[0] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("ms per decode step (log)")
    ax.set_xlabel("batch x context")
    ax.set_title(f"TinyLlama-1.1B shape decode step, bf16, {hf['device']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"\nplot: {png}")


if __name__ == "__main__":
    main()
