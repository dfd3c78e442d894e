#!/usr/bin/env python3
"""The TinyLlama-shape decode step, one group of bars per configuration (batch x context x
plan); only the default variant (2) is drawn.

    python3 bench/cuda/plot_steps.py out.png start=base.json now=bench_cuda.json
        the step as a fraction of its roofline, one bar per binary (e.g. a session's starting
        commit and now, run in the same device call), with the issue's targets (0.70 at batch 1,
        0.80 at batch >= 32). Roofline = (weights + KV read) / the copy bandwidth each JSON
        measured itself. label=path#6 draws that file's variant 6 instead of the default, so two
        variants of one run can stand side by side.
    python3 bench/cuda/plot_steps.py --wall out.png bench_cuda.json
        host wall time per step against device time: the forward returning [batch, vocab] fp32
        logits (wall_ms), the one sampling on the device and returning token ids (greedy:
        wall_sampled_ms; temperature 0.8 / top-p 0.9 where measured: wall_top_p_ms, and
        wall_top_p_sorted_ms with every row through the full sort), and the graph's device time
        (device_ms).
    python3 bench/cuda/plot_steps.py --sampling out.png bench_cuda.json
        one Sampler call (BM_Sampling, host wall time) per rows x mode: the histogram path
        against every row through the full sort, measured in the same process.
    python3 bench/cuda/plot_steps.py --prefill out.png before=base.json after=bench_cuda.json
        prefill tokens/s (BM_TinyLlamaPrefill), one bar per binary, log scale (LCKV's cyclic
        group runs m + b = 9 passes).
    python3 bench/cuda/plot_steps.py --attention out.png before=base.json after=bench_cuda.json
        decode attention alone (BM_DecodeAttention, planned splits, no L2 window): KV bytes
        read / time as a fraction of each JSON's copy bandwidth, one bar per binary, with the
        issue's target (0.80 at long contexts, drawn from 16K).
    python3 bench/cuda/plot_steps.py --ceiling out.png bench_cuda.json
        decode attention (standard plan) beside BM_StreamChain's read-only chains of dependent
        launches at the same context and batch (the fastest grid of each layout), all as
        fractions of the same run's copy bandwidth, with the issue's target.
    python3 bench/cuda/plot_steps.py --kernels out.png before=ncu_base.txt after=ncu_new.txt
        where a forward's kernel time goes, from breakdown.py's tables (Nsight Compute, each
        kernel timed alone): ms per kernel kind, one bar per table, the first table's largest
        kinds first.
"""
import re
import json
import sys


def runs(path, prefix):
    """The benchmarks of one JSON named prefix/..., each with its named arguments ("batch:8" ->
    {"batch": "8"}) and plan (standard where it names none), and the copy bandwidth in B/s (None
    where it was not run)."""
    with open(path) as f:
        benchmarks = json.load(f)["benchmarks"]
    copy = next((b["bytes_per_s"] for b in benchmarks if b["name"].startswith("BM_CopyBandwidth")), None)
    out = []
    for b in benchmarks:
        if b["name"].startswith(prefix + "/"):
            a = dict(p.split(":") for p in b["name"].split("/")[1:] if ":" in p)
            out.append((a, "lckv-w2" if a.get("lckv") == "1" else "standard", b))
    return out, copy


def steps(path, variant="2"):
    """{(batch, context, plan): benchmark entry} of one variant (the default: 2), and the copy
    bandwidth in B/s."""
    entries, copy = runs(path, "BM_TinyLlamaDecodeStep")
    return {(int(a["batch"]), int(a["context"]), plan): b for a, plan, b in entries
            if a.get("variant") == variant and a.get("splits", "0") == "0"}, copy


def prefill(path):
    """{(batch, prompt, plan): tokens/s} of BM_TinyLlamaPrefill."""
    entries, _ = runs(path, "BM_TinyLlamaPrefill")
    return {(int(a["batch"]), int(a["prompt"]), plan): b["tokens_per_s"] for a, plan, b in entries}


def kernel_times(path, most=10):
    """{kernel kind: ms} from the first table of a breakdown.py output (its `most` largest rows);
    a kind is the kernel's name without template arguments, grid or block; cuBLAS's kernels
    (nvjet_...) are named by their tile, "+=" where they accumulate into the output."""
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*([\d.]+)\s+[\d.]+%\s+\d+\s+[\d.]+\s+(\S+?)(?:<|\s)", line)
            if m:
                kind = m.group(2)
                if kind.startswith("nvjet_"):
                    kind = "GEMM " + kind.split("_")[3] + (" +=" if "_badd_" in kind else "")
                out[kind] = out.get(kind, 0.0) + float(m.group(1)) / 1e3
            elif out:  # the table ended
                break
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:most])


def labelled(items, read):
    """[(label, read(path))] for command-line arguments label=path."""
    return [(label, read(path)) for label, path in (item.split("=", 1) for item in items)]


def decode_attention(path):
    """{(batch, context, plan): KV bytes read / time over the copy bandwidth} of BM_DecodeAttention
    (planned splits, no L2 window)."""
    entries, copy = runs(path, "BM_DecodeAttention")
    return {(int(a["batch"]), int(a["context"]), plan): b["kv_read_bytes_per_s"] / copy for a, plan, b in entries
            if a["persist"] == "0" and a["splits"] == "0"}


def step_target(key):
    return 0.70 if key[0] == 1 else 0.80 if key[0] >= 32 else None


def step_label(key):
    batch, context, plan = key
    return f"b{batch}\n{context // 1024}K\n{plan}"


def draw(png, keys, series, ylabel, title, log=False, target=None, tick=step_label, legend="upper left"):
    """Grouped bars: `series` is [(label, {key: value})], one bar per series in each key's group;
    target(key): a red line over the key's group, or None; tick(key): the group's tick label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        ax.bar([k + i * width for k in range(len(keys))], [values.get(key, 0.0) for key in keys], width, label=label)
    for k, key in enumerate(keys):
        line = target(key) if target else None
        if line:
            ax.hlines(line, k - 0.1, k + 0.9 - 0.1, colors="red", linewidth=1)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))])
    ax.set_xticklabels([tick(key) for key in keys], fontsize=7)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    else:  # fractions; LCKV's shared KV read from L2 can pass 1
        ax.set_ylim(0, max([1.0] + [1.05 * v for _, values in series for v in values.values()]))
    ax.set_title(title)
    ax.legend(fontsize=8, loc=legend)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"plot: {png}")


def roofline_plot(png, items):
    series, keys = [], set()
    for item in items:
        label, path = item.split("=", 1)
        path, _, variant = path.partition("#")
        entries, copy = steps(path, variant or "2")
        keys |= entries.keys()
        fractions = {k: b["bytes_MB"] * 1e6 / copy * 1e3 / b["device_ms"] for k, b in entries.items()}
        series.append((f"{label} (copy {copy / 1e9:.0f} GB/s)", fractions))
    draw(png, sorted(keys), series, "roofline / device time",
         "TinyLlama-1.1B shape decode step (bf16, CUDA Graph replay); red: target", target=step_target)


def wall_plot(png, path):
    entries, _ = steps(path)
    entries = {k: b for k, b in entries.items() if "wall_sampled_ms" in b}
    fields = (("device time", "device_ms"), ("wall, greedy on the device", "wall_sampled_ms"),
              ("wall, top-p 0.9 on the device", "wall_top_p_ms"),
              ("wall, top-p 0.9, every row sorted", "wall_top_p_sorted_ms"), ("wall, logits to the host", "wall_ms"))
    series = [(label, {k: b[field] for k, b in entries.items()}) for label, field in fields
              if all(field in b for b in entries.values())]
    draw(png, sorted(entries), series, "ms per decode step",
         "TinyLlama-1.1B shape decode step (bf16): host wall time against device time", log=True)


def prefill_plot(png, items):
    series = labelled(items, prefill)
    keys = sorted(set().union(*(values.keys() for _, values in series)))
    draw(png, keys, series, "prompt tokens/s", "TinyLlama-1.1B shape prefill (bf16, iterative)", log=True)


def kernels_plot(png, items):
    series = labelled(items, kernel_times)
    keys = list(series[0][1]) + [k for _, values in series[1:] for k in values if k not in series[0][1]]
    draw(png, keys, series, "ms per forward (kernels timed alone)", "where a prefill's kernel time goes (Nsight Compute)",
         tick=lambda key: key.replace(" ", "\n", 1), legend="upper right")


SAMPLING_MODES = {"0": "greedy", "1": "T 0.8", "2": "top-k 50", "3": "top-p 0.9", "4": "top-k 50\n+ top-p 0.9"}


def sampling_plot(png, path):
    series = {"0": {}, "1": {}}
    entries, _ = runs(path, "BM_Sampling")
    for a, _, b in entries:
        series[a["sort"]][(int(a["rows"]), int(a["mode"]))] = b["real_time"]
    keys = sorted(set(series["0"]) | set(series["1"]))
    draw(png, keys, [("histogram, deciding bucket sorted", series["0"]), ("every row sorted", series["1"])],
         "us per call (host wall, tokens on the host)", "Sampler over [rows, 32000] logits",
         tick=lambda key: f"{key[0]} rows\n{SAMPLING_MODES[str(key[1])]}")


def stream_chains(path):
    """{layout: {(batch, context, "standard"): the fastest BM_StreamChain grid's read rate over the
    copy bandwidth}}."""
    entries, copy = runs(path, "BM_StreamChain")
    chains = {}
    for a, plan, b in entries:
        key = (int(a["batch"]), int(a["context"]), plan)
        best = chains.setdefault(a.get("layout", "0"), {})
        best[key] = max(best.get(key, 0.0), b["read_bytes_per_s"] / copy)
    return chains


def ceiling_plot(png, path):
    attention = {k: v for k, v in decode_attention(path).items() if k[2] == "standard"}
    chains = stream_chains(path)
    keys = sorted(k for k in attention if k in chains.get("1", {}))
    draw(png, keys, [("decode attention", attention), ("read only, cache layout", chains["1"]),
                     ("read only, contiguous", chains.get("0", {}))],
         "bytes read / time, of copy bandwidth",
         "22 dependent launches: decode attention vs reading the same KV only (BM_StreamChain); red: target",
         target=lambda key: 0.80 if key[1] >= 16384 else None)


def attention_plot(png, items):
    series = labelled(items, decode_attention)
    keys = sorted(set().union(*(values.keys() for _, values in series)))
    draw(png, keys, series, "KV bytes read / time, of copy bandwidth",
         "decode attention, 22 layers, 32 q / 4 kv heads, d 64, bf16 KV; red: target",
         target=lambda key: 0.80 if key[1] >= 16384 else None)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--wall":
        wall_plot(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "--sampling":
        sampling_plot(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "--prefill":
        prefill_plot(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 4 and sys.argv[1] == "--ceiling":
        ceiling_plot(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "--kernels":
        kernels_plot(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "--attention":
        attention_plot(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 3 and not sys.argv[1].startswith("--"):
        roofline_plot(sys.argv[1], sys.argv[2:])
    else:
        sys.exit(__doc__)
