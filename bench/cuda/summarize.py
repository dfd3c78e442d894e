#!/usr/bin/env python3
"""Short tables from bench_cuda's JSON: every result as a fraction of the
ceilings measured in the same run (device copy bandwidth, bf16 cuBLAS GEMM).
Also writes <json>.csv (decode attention) next to the input for plotting.

    python3 bench/cuda/summarize.py bench_cuda.json
"""
import json
import sys


def plot(rows, bw, ctx, png):
    """Effective KV bandwidth vs batch, one line per context and plan (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: no plot)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for plan, style in (("standard", "--"), ("lckv-w2", "-")):
        for context in sorted({r[0] for r in rows}):
            pts = sorted((r[1], r[6]) for r in rows if r[0] == context and r[2] == plan and r[3] == "0")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=f"{plan} {context // 1024}K")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("KV bytes read / time, fraction of copy bandwidth")
    ax.set_title(f"decode attention, 22 layers, {ctx.get('device', '?')}, copy {bw / 1e9:.0f} GB/s")
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"plot: {png}")


def args(b):
    """A benchmark's named arguments from its name ("BM_X/context:1024/batch:8/..."), as strings."""
    return dict(p.split(":") for p in b["name"].split("/")[1:] if ":" in p)


def plan_name(parts):
    return "lckv-w2" if parts["lckv"] == "1" else "standard"


def main(path):
    with open(path) as f:
        data = json.load(f)
    ctx = data.get("context", {})
    runs = [b for b in data["benchmarks"] if b.get("run_type", "iteration") == "iteration" and not b.get("error_occurred")]
    skipped = [b["name"] for b in data["benchmarks"] if b.get("error_occurred")]

    def find(prefix):
        return [b for b in runs if b["name"].startswith(prefix)]

    copy = find("BM_CopyBandwidth")
    gemm = find("BM_GemmBf16")
    bw = copy[0]["bytes_per_s"] if copy else float("nan")
    gemm_f32out = [g["flop_per_s"] for g in gemm if "bf16_out:0" in g["name"]]
    gemm_b16out = [g["flop_per_s"] for g in gemm if "bf16_out:1" in g["name"]]
    flops = max([g["flop_per_s"] for g in gemm], default=float("nan"))
    print(f"device: {ctx.get('device', '?')}  date: {ctx.get('date', '?')}")
    print(f"ceilings: copy {bw / 1e9:.0f} GB/s (read+write); cuBLAS bf16 GEMM 8192^3: "
          f"{(gemm_f32out or [float('nan')])[0] / 1e12:.0f} TFLOP/s with fp32 C (what the backend runs), "
          f"{(gemm_b16out or [float('nan')])[0] / 1e12:.0f} with bf16 C; fractions below use the larger")

    # The fastest chain of 22 dependent read-only launches per (context, batch) and layout (0:
    # contiguous, 1: the cache's): what the attention's grids could reach with no attention work.
    chain = {}
    stream = find("BM_StreamChain")
    if stream:
        print("\n22 dependent launches that only read a layer's KV (standard plan's bytes; ceilings for the attention)")
        print("(layout 0: each block's bytes contiguous; 1: the cache's [position][kv head][d], a block per head;"
              " cluster: blocks per thread-block cluster)")
        print(f"{'context':>7} {'batch':>5} {'blocks':>6} {'layout':>6} {'cluster':>7} {'us':>9} {'GB/s':>7} {'of copy':>7}")
        for b in sorted(stream, key=lambda b: (int(args(b)["context"]), int(args(b)["batch"]), args(b).get("layout", "0"),
                                               int(b["blocks"]), int(args(b).get("cluster", "1")))):
            parts = args(b)
            key = (int(parts["context"]), int(parts["batch"]), int(parts.get("layout", "0")))
            chain[key] = max(chain.get(key, 0.0), b["read_bytes_per_s"])
            print(f"{parts['context']:>7} {parts['batch']:>5} {int(b['blocks']):>6} {parts.get('layout', '0'):>6} "
                  f"{parts.get('cluster', '1'):>7} "
                  f"{b['real_time']:>9.1f} {b['read_bytes_per_s'] / 1e9:>7.0f} {b['read_bytes_per_s'] / bw:>7.2f}")

    att = find("BM_DecodeAttention")
    if att:
        print("\ndecode attention, 22 layers, TinyLlama heads (32 q / 4 kv, d 64, bf16 KV)")
        if chain:
            print("(of chain 0 / 1: KV read rate over the fastest read-only chain's at the same context and batch,"
                  " layout 0 / 1; standard plan)")
        print(f"{'context':>7} {'batch':>5} {'plan':>8} {'persist':>7} {'us':>9} {'KV read GB/s':>12} {'of copy':>7} {'splits':>6}"
              + (f" {'of chain 0':>10} {'of chain 1':>10}" if chain else ""))
        rows, forced = [], []
        for b in att:
            parts = args(b)
            if parts.get("splits", "0") != "0":
                forced.append((int(parts["context"]), int(parts["batch"]), int(parts["splits"]),
                               b["real_time"], b["kv_read_bytes_per_s"] / bw))
                continue
            t_us = b["real_time"] if b["time_unit"] == "us" else b["real_time"] * 1e3
            r = (int(parts["context"]), int(parts["batch"]), plan_name(parts),
                 parts["persist"], t_us, b["kv_read_bytes_per_s"], b["kv_read_bytes_per_s"] / bw, int(b["splits"]))
            rows.append(r)
        for r in sorted(rows, key=lambda r: (r[3], r[0], r[1], r[2])):
            of_chain = ""
            if chain:
                for layout in (0, 1):
                    c = chain.get((r[0], r[1], layout)) if r[2] == "standard" else None
                    of_chain += f" {r[5] / c:>10.2f}" if c else f" {'-':>10}"
            print(f"{r[0]:>7} {r[1]:>5} {r[2]:>8} {r[3]:>7} {r[4]:>9.1f} {r[5] / 1e9:>12.0f} {r[6]:>7.2f} {r[7]:>6}" + of_chain)
        if forced:
            print("\nsplit count sweep (standard plan): context, batch, splits, us, of copy")
            for r in sorted(forced):
                print(f"{r[0]:>7} {r[1]:>5} {r[2]:>6} {r[3]:>9.1f} {r[4]:>7.2f}")
        with open(path + ".csv", "w") as f:
            f.write("context,batch,plan,persist,us,kv_read_GBps,fraction_of_copy\n")
            for r in rows:
                f.write(f"{r[0]},{r[1]},{r[2]},{r[3]},{r[4]:.2f},{r[5] / 1e9:.1f},{r[6]:.3f}\n")
        plot(rows, bw, ctx, path.rsplit("/", 1)[0] + "/decode_attention.png")

    wide = find("BM_WideGroupDecodeAttention")
    if wide:
        print("\ndecode attention, 22 layers, a wide GQA group (64 q / 4 kv, d 128, bf16 KV)")
        print(f"{'context':>7} {'batch':>5} {'us':>9} {'of copy':>7} {'splits':>6}")
        for b in sorted(wide, key=lambda b: (int(args(b)["context"]), int(args(b)["batch"]))):
            parts = args(b)
            t_us = b["real_time"] if b["time_unit"] == "us" else b["real_time"] * 1e3
            print(f"{parts['context']:>7} {parts['batch']:>5} {t_us:>9.1f} {b['kv_read_bytes_per_s'] / bw:>7.2f} {int(b['splits']):>6}")

    ops = find("BM_DecodeOps")
    if ops:
        print("\nper-op, TinyLlama shape, one launch (us) and bytes moved / time as a fraction of copy bandwidth")
        print(f"{'op':>13} {'batch':>5} {'variant':>7} {'us':>8} {'of copy':>7}")
        for b in ops:
            parts = args(b)
            print(f"{b.get('label', '?'):>13} {parts['batch']:>5} {parts.get('variant', '-'):>7} {b['real_time']:>8.2f} "
                  f"{b['bytes_per_s'] / bw:>7.2f}")

    dec = find("BM_TinyLlamaDecodeStep")
    if dec:
        print("\nTinyLlama-1.1B shape decode step, bf16 weights + KV (roofline = (weights + KV read) / copy bandwidth)")
        print("(wall: forward returning the logits; sampled: forward sampling greedily on the device, token ids back)")
        print(f"{'variant':>7} {'batch':>5} {'context':>7} {'plan':>8} {'MB read':>8} {'roofline ms':>11} {'device ms':>9} {'of roof':>7} {'wall ms':>8} {'of roof':>7} {'tok/s':>8} {'sampled ms':>10}")
        for b in dec:
            parts = args(b)
            roof = b["bytes_MB"] * 1e6 / bw * 1e3
            variant = parts.get("variant", "-") + (f"/s{parts['splits']}" if parts.get("splits", "0") != "0" else "")
            print(f"{variant:>7} {parts['batch']:>5} {parts['context']:>7} {plan_name(parts):>8} "
                  f"{b['bytes_MB']:>8.0f} {roof:>11.3f} {b['device_ms']:>9.3f} {roof / b['device_ms']:>7.2f} "
                  f"{b['wall_ms']:>8.3f} {roof / b['wall_ms']:>7.2f} {b['tokens_per_s']:>8.0f} "
                  f"{b.get('wall_sampled_ms', float('nan')):>10.3f}")

    pre = find("BM_TinyLlamaPrefill")
    if pre:
        print("\nTinyLlama-1.1B shape prefill (iterative; LCKV's cyclic group runs m + b = 9 passes)")
        print(f"{'batch':>5} {'prompt':>6} {'plan':>8} {'tokens/s':>9} {'GEMM TFLOP/s':>12} {'of GEMM':>7}")
        for b in pre:
            parts = args(b)
            print(f"{parts['batch']:>5} {parts['prompt']:>6} {plan_name(parts):>8} "
                  f"{b['tokens_per_s']:>9.0f} {b['gemm_flop_per_s'] / 1e12:>12.1f} {b['gemm_flop_per_s'] / flops:>7.2f}")
    if skipped:
        print(f"\nskipped (did not fit or failed): {len(skipped)}: " + ", ".join(s.split("/", 1)[1] for s in skipped[:8]) +
              (" ..." if len(skipped) > 8 else ""))


if __name__ == "__main__":
    main(sys.argv[1])
