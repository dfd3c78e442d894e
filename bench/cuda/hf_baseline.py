#!/usr/bin/env python3
"""HF transformers on the TinyLlama-1.1B shape, timed on this GPU: the external baseline that
bench_cuda's BM_TinyLlamaDecodeStep and BM_TinyLlamaPrefill are compared with
(docs/benchmarks-cuda.md; bench/cuda/compare_hf.py makes the table and the plot).

    python3 bench/cuda/hf_baseline.py --out hf_baseline.json [--shapes 1x1024,32x8192] [--prefill 1x1024]

Random bf16 weights (nothing is downloaded): 22 layers, hidden 2048, 32 / 4 heads, MLP 5632,
vocab 32000, HF's default attention (sdpa).

Decode: each shape (batch x context) gets a StaticCache of context + 1 positions and one new token
per sequence at position `context`, so every step attends to context + 1 keys, as lckv's step
does. Two ways to run that step:

  eager   model(...) once per step, as a user of transformers calls it;
  graph   the same call captured in one CUDA graph and replayed (the launch overhead removed,
          as torch.compile's "reduce-overhead" mode does, without its kernel fusion).

Prefill: each shape (batch x prompt) is one model(...) call over the prompts (a fresh
DynamicCache, logits of the last position only), as lckv's prefill benchmark runs it.

Decode attention alone (`--attention`): PyTorch's scaled_dot_product_attention on the same
problem as bench_cuda's BM_DecodeAttention (standard plan): 22 layers, each its own bf16 K / V of
[batch, 4, context + 1, 64], one query row of 32 heads per sequence (GQA through enable_gqa), the 22
calls in one CUDA graph; once per SDPA backend that takes it (flash, efficient, cuDNN).

Each is timed with CUDA events over `--reps` runs (prefill: `--prefill-reps`) after `--warmup`;
the JSON holds the median and the minimum in ms, with the card and the library versions.
"""
import argparse
import inspect
import json
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache


def tinyllama_config():
    kw = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
              num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=65536, rms_norm_eps=1e-5,
              tie_word_embeddings=False)
    if int(transformers.__version__.split(".")[0]) >= 5:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    else:
        kw["rope_theta"] = 10000.0
    return LlamaConfig(**kw)


def static_cache(config, batch, length):
    """A StaticCache of `length` positions, through whichever constructor this transformers has."""
    params = inspect.signature(StaticCache.__init__).parameters
    kw = {"config": config, "max_cache_len": length}
    if "max_batch_size" in params:
        kw["max_batch_size"] = batch
    if "device" in params:
        kw["device"] = "cuda"
    if "dtype" in params:
        kw["dtype"] = torch.bfloat16
    return StaticCache(**kw)


def parse_shapes(option, text):
    """[(batch, n), ...] from "1x1024,32x8192"; a clear error naming the option and the piece otherwise."""
    out = []
    for piece in filter(None, text.split(",")):
        parts = piece.split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise SystemExit(f"hf_baseline.py: {option} {text!r}: {piece!r} is not <batch>x<length> (positive integers)")
        out.append((int(parts[0]), int(parts[1])))
    return out


def time_steps(step, warmup, reps):
    """Median and minimum ms of `step()` over `reps` calls, each between two CUDA events."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), min(times)


def measure(model, batch, context, warmup, reps):
    cache = static_cache(model.config, batch, context + 1)
    ids = torch.randint(3, model.config.vocab_size, (batch, 1), device="cuda")
    cache_position = torch.tensor([context], device="cuda")
    position_ids = cache_position.expand(batch, 1).contiguous()

    @torch.no_grad()
    def step():
        return model(input_ids=ids, past_key_values=cache, cache_position=cache_position, position_ids=position_ids,
                     use_cache=True).logits

    rows = []
    med, low = time_steps(step, warmup, reps)
    rows.append({"batch": batch, "context": context, "mode": "eager", "ms_median": med, "ms_min": low})
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # graph capture wants warm-up work off the default stream
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        med, low = time_steps(graph.replay, warmup, reps)
        rows.append({"batch": batch, "context": context, "mode": "graph", "ms_median": med, "ms_min": low})
    except Exception as e:  # noqa: BLE001 - say why this transformers' step cannot be captured, keep eager
        rows.append({"batch": batch, "context": context, "mode": "graph", "error": f"{type(e).__name__}: {e}"[:300]})
    del cache
    torch.cuda.empty_cache()
    return rows


def measure_prefill(model, batch, prompt, warmup, reps):
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt), device="cuda")

    @torch.no_grad()
    def run():
        return model(input_ids=ids, use_cache=True, logits_to_keep=1).logits

    med, low = time_steps(run, warmup, reps)
    torch.cuda.empty_cache()
    return {"batch": batch, "prompt": prompt, "mode": "prefill", "ms_median": med, "ms_min": low,
            "tokens_per_s": batch * prompt / (med / 1e3)}


def measure_attention(batch, context, warmup, reps):
    """22 layers of one-row decode attention through each SDPA backend; us per 22 layers."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    layers, heads, kv_heads, d = 22, 32, 4, 64
    keys = context + 1
    q = torch.randn(batch, heads, 1, d, device="cuda", dtype=torch.bfloat16)
    kv = [(torch.randn(batch, kv_heads, keys, d, device="cuda", dtype=torch.bfloat16),
           torch.randn(batch, kv_heads, keys, d, device="cuda", dtype=torch.bfloat16)) for _ in range(layers)]
    kv_bytes = layers * 2 * batch * kv_heads * keys * d * 2
    rows = []
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        row = {"batch": batch, "context": context, "mode": f"sdpa-{name}", "kv_bytes": kv_bytes}
        try:
            def all_layers():
                with sdpa_kernel([backend]):
                    for k, v in kv:
                        torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            all_layers()
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                all_layers()
            med, low = time_steps(graph.replay, warmup, reps)
            row.update(ms_median=med, ms_min=low, kv_bytes_per_s=kv_bytes / (med / 1e3))
        except Exception as e:  # noqa: BLE001 - a backend that does not take this problem
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        rows.append(row)
    del kv
    torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--shapes", default="1x1024,1x8192,16x1024,16x8192,32x1024,32x8192",
                    help="comma-separated batch x context")
    ap.add_argument("--prefill", default="1x1024,8x1024", help="comma-separated batch x prompt ('' for none)")
    ap.add_argument("--attention", default="", help="comma-separated batch x context for SDPA decode attention")
    ap.add_argument("--only-attention", action="store_true", help="skip the model (decode steps, prefill)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--prefill-reps", type=int, default=5)
    args = ap.parse_args()
    decode_shapes = parse_shapes("--shapes", args.shapes)  # before any GPU work: bad input fails at once
    prefill_shapes = parse_shapes("--prefill", args.prefill)
    attention_shapes = parse_shapes("--attention", args.attention)
    if not torch.cuda.is_available():
        raise SystemExit("hf_baseline.py: no CUDA device")
    torch.manual_seed(0)
    rows, hf_attention = [], None
    if not args.only_attention:
        t0 = time.time()
        with torch.device("cuda"):
            model = LlamaForCausalLM(tinyllama_config()).to(torch.bfloat16).eval()
        hf_attention = model.config._attn_implementation
        print(f"model built in {time.time() - t0:.1f} s; attention: {hf_attention}", flush=True)
        for batch, context in decode_shapes:
            for r in measure(model, batch, context, args.warmup, args.reps):
                rows.append(r)
                what = f"{r['ms_median']:.3f} ms (min {r['ms_min']:.3f})" if "ms_median" in r else r["error"]
                print(f"hf {r['mode']:5s} batch {batch:3d} context {context:5d}: {what}", flush=True)
        for batch, prompt in prefill_shapes:
            r = measure_prefill(model, batch, prompt, 2, args.prefill_reps)
            rows.append(r)
            print(f"hf prefill batch {batch:3d} prompt {prompt:5d}: {r['ms_median']:.2f} ms, {r['tokens_per_s']:.0f} tokens/s",
                  flush=True)
        del model
        torch.cuda.empty_cache()
    for batch, context in attention_shapes:
        for r in measure_attention(batch, context, args.warmup, args.reps):
            rows.append(r)
            what = f"{r['ms_median'] * 1e3:.1f} us, {r['kv_bytes_per_s'] / 1e9:.0f} GB/s" if "ms_median" in r else r["error"]
            print(f"torch {r['mode']:15s} batch {batch:3d} context {context:5d}: {what}", flush=True)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "transformers": transformers.__version__, "attention": hf_attention,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "warmup": args.warmup, "reps": args.reps,
              "prefill_reps": args.prefill_reps, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
