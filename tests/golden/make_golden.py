#!/usr/bin/env python3
"""Golden fixtures for lckv's checkpoint loader and engine, from code lckv did not write.

Regenerate every fixture with one command (needs torch and transformers 5.x; CPU suffices):

    python3 tests/golden/make_golden.py --out tests/golden/fixtures
    python3 tests/golden/make_golden.py --set cuda --out tests/golden/fixtures_cuda

The second set has the head sizes the CUDA attention kernels are built for (64 and 128); the CUDA
tests run it on the GPU, the CPU golden test runs both sets.

Optionally also check that models *saved by lckv* load in HF transformers and give lckv's logits:

    python3 tests/golden/make_golden.py --out DIR --check-lckv tests/golden/from_lckv --report DIR/check.json

Two sources of truth:
  * hf_*   : small random LlamaForCausalLM models (tied/untied, GQA, non-default rope_theta, explicit
             head_dim, bf16/f16 storage, a sharded save), written with save_pretrained; logits and greedy
             continuations come from HF's own forward.
  * lckv_* : an independent PyTorch reference of DESIGN.md's cross-layer KV sharing (LCKV w=2, pure-top,
             CLA, YOCO with a sliding window) that reuses transformers' Llama modules (embedding,
             RMSNorm, q/k/v/o projections, rotary embedding, MLP) for everything except attention.
             Sequential (token-by-token, exact) and iterative (m + b Jacobi passes, m + b < n) prefill,
             and decode after either.
The reference is first checked against HF's forward on a standard plan, and iterative prefill with
m + b >= n against sequential; the script stops if either disagrees.

Layout: DIR/manifest.json, DIR/<case>/{config.json, model.safetensors | shards + index, golden.json,
golden.safetensors}. golden.json carries "format": "lckv-golden" and "format_version".
Logits are computed in float64 from the stored weights and saved as F32.
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama import modeling_llama as ml

FORMAT_VERSION = 1
VOCAB = 256


# ----------------------------------------------------------------------------------------------
# Models


def llama_config(layers, heads=4, kv_heads=4, hidden=32, inter=64, tied=False, theta=10000.0, head_dim=None):
    kw = dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
              num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=64,
              rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2)
    if head_dim is not None:
        kw["head_dim"] = head_dim
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    else:
        kw["rope_theta"] = theta
    cfg = LlamaConfig(**kw)
    try:
        cfg._attn_implementation = "eager"  # softmax in the model's dtype, no fused kernels
    except Exception:  # noqa: BLE001 - older/newer configs may not allow it; sdpa is fine on CPU
        pass
    return cfg


def random_model(cfg, seed):
    """A LlamaForCausalLM whose every weight is drawn here (not by HF's init), fp32."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # RMSNorm weights
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model


def as_stored_float64(model, save_dtype):
    """The model's weights rounded to `save_dtype` (what a checkpoint stores), held in float64.
    HF computes RoPE's inverse frequencies in float32 at init; a cast to bf16 / f16 would round them
    (a real from_pretrained load does not), so HF's own float32 values are kept."""
    inv_freq = model.model.rotary_emb.inv_freq.detach().clone()
    model.to(save_dtype).to(torch.float64)
    with torch.no_grad():
        model.model.rotary_emb.inv_freq.copy_(inv_freq)
    return model


def theta_of(cfg):
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and "rope_theta" in rp:
        return float(rp["rope_theta"])
    return float(getattr(cfg, "rope_theta", 10000.0))


# ----------------------------------------------------------------------------------------------
# The independent reference of DESIGN.md (attention written here, all else HF modules)


def parse_layer_types(s, L):
    targets, sliding = [], []
    for tok in s.split("_"):
        sliding.append(tok.endswith("s"))
        targets.append(int(tok[:-1] if tok.endswith("s") else tok))
    assert len(targets) == L and all(0 <= t < L for t in targets), s
    return targets, sliding


def cyclic_groups(targets):
    groups, l, L = [], 0, len(targets)
    while l < L:
        if targets[l] <= l:
            l += 1
            continue
        top = targets[l]
        while True:
            grown = max([top] + [targets[i] for i in range(l, top + 1)])
            if grown == top:
                break
            top = grown
        groups.append((l, top + 1))
        l = top + 1
    return groups


class Reference:
    """DESIGN.md §1-4 over an HF LlamaForCausalLM's modules, in float64, one sequence."""

    def __init__(self, model, layer_types, sliding_window=4096, force_nodiag=False):
        self.m = model
        cfg = model.config
        self.L = cfg.num_hidden_layers
        self.H = cfg.num_attention_heads
        self.Hkv = cfg.num_key_value_heads
        self.d = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.H
        self.targets, self.sliding = parse_layer_types(layer_types, self.L)
        self.kv_layers = sorted(set(self.targets))
        self.W = sliding_window
        self.force_nodiag = force_nodiag
        self.groups = cyclic_groups(self.targets)
        self.reset()

    def reset(self):
        z = torch.zeros(0, self.Hkv, self.d, dtype=torch.float64)
        self.K = {t: z.clone() for t in self.kv_layers}
        self.V = {t: z.clone() for t in self.kv_layers}
        self.length = 0

    def rope(self, x, pos):  # x [n, heads, d]
        cos, sin = self.m.model.rotary_emb(x, pos[None, :])  # HF's LlamaRotaryEmbedding: [1, n, d]
        y = x.transpose(0, 1)[None]  # [1, heads, n, d]
        out, _ = ml.apply_rotary_pos_emb(y, y, cos, sin, unsqueeze_dim=1)
        return out[0].transpose(0, 1)

    def attention(self, i, q, K, V, qpos):
        n, T = q.shape[0], K.shape[0]
        kpos = torch.arange(T)
        nodiag = self.targets[i] > i or self.force_nodiag
        allowed = kpos[None, :] < qpos[:, None] if nodiag else kpos[None, :] <= qpos[:, None]
        if self.sliding[i]:
            allowed = allowed & (kpos[None, :] > qpos[:, None] - self.W)
        rep = self.H // self.Hkv
        out = torch.zeros(n, self.H, self.d, dtype=torch.float64)
        for h in range(self.H):
            kh, vh = K[:, h // rep, :], V[:, h // rep, :]
            s = (q[:, h, :] @ kh.T) / math.sqrt(self.d)
            s = s.masked_fill(~allowed, float("-inf"))
            any_key = allowed.any(dim=1)
            p = torch.softmax(s, dim=-1)
            p = torch.where(any_key[:, None], p, torch.zeros_like(p))  # nothing visible: output zero
            out[:, h, :] = p @ vh
        return out.reshape(n, self.H * self.d)

    def layer(self, i, x, pos, newK, newV):
        lay = self.m.model.layers[i]
        at = lay.self_attn
        n = x.shape[0]
        h = lay.input_layernorm(x)
        q = self.rope(at.q_proj(h).view(n, self.H, self.d), pos)
        if i in newK:
            newK[i] = self.rope(at.k_proj(h).view(n, self.Hkv, self.d), pos)
            newV[i] = at.v_proj(h).view(n, self.Hkv, self.d)
        t = self.targets[i]
        K = torch.cat([self.K[t], newK[t]])
        V = torch.cat([self.V[t], newV[t]])
        x = x + at.o_proj(self.attention(i, q, K, V, pos))
        return x + lay.mlp(lay.post_attention_layernorm(x))

    @torch.no_grad()
    def forward(self, tokens, passes):
        """Appends `tokens` to the sequence; a cyclic group runs min(passes, n) Jacobi passes
        (its targets' new KV start at zero). Returns logits [n, vocab]."""
        n = len(tokens)
        pos = torch.arange(self.length, self.length + n)
        x = self.m.model.embed_tokens(torch.tensor(tokens))
        newK = {t: torch.zeros(n, self.Hkv, self.d, dtype=torch.float64) for t in self.kv_layers}
        newV = {t: torch.zeros(n, self.Hkv, self.d, dtype=torch.float64) for t in self.kv_layers}
        l = 0
        for b, e in self.groups:
            for i in range(l, b):
                x = self.layer(i, x, pos, newK, newV)
            x_in = x
            for _ in range(min(passes, n)):
                x = x_in
                for i in range(b, e):
                    x = self.layer(i, x, pos, newK, newV)
            l = e
        for i in range(l, self.L):
            x = self.layer(i, x, pos, newK, newV)
        for t in self.kv_layers:
            self.K[t] = torch.cat([self.K[t], newK[t]])
            self.V[t] = torch.cat([self.V[t], newV[t]])
        self.length += n
        return self.m.lm_head(self.m.model.norm(x))

    def sequential(self, tokens):
        return torch.cat([self.forward([t], 1) for t in tokens])


# ----------------------------------------------------------------------------------------------
# Fixture writing


def tokens_for(seed, n):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n,), generator=g).tolist()


def margin(row):
    top = torch.topk(row, 2).values
    return float(top[0] - top[1])


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0]


def hf_greedy(model, prompt, steps):
    seq, rows = list(prompt), []
    for _ in range(steps):
        row = hf_logits(model, seq)[-1]
        rows.append(row)
        seq.append(int(row.argmax()))
    return seq[len(prompt):], torch.stack(rows)


def pick_prompt(make, seed, n, steps, need=1e-3):
    """The first prompt (seed, seed+1, ...) whose greedy steps all have a top-1 margin >= need."""
    for s in range(seed, seed + 100):
        prompt = tokens_for(s, n)
        new, rows = make(prompt, steps)
        m = min(margin(r) for r in rows)
        if m >= need:
            return prompt, new, rows, m
    raise RuntimeError("no prompt with a clear greedy margin")


class Case:
    def __init__(self, out, name, source, note):
        self.dir = os.path.join(out, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.name, self.tensors = name, {}
        self.meta = {"format": "lckv-golden", "format_version": FORMAT_VERSION, "case": name, "source": source,
                     "note": note, "torch": torch.__version__, "transformers": transformers.__version__,
                     "checks": []}

    def logits(self, label, tokens, rows, prefill="any", passes=None):
        key = f"{label}.logits"
        self.tensors[key] = rows.float().contiguous()
        c = {"kind": "logits", "name": label, "tokens": tokens, "prefill": prefill, "logits": key}
        if passes:
            c["forward_passes"], c["backward_passes"] = passes
        self.meta["checks"].append(c)

    def greedy(self, label, prompt, new, rows, min_margin, prefill="any", passes=None):
        key = f"{label}.logits"
        self.tensors[key] = rows.float().contiguous()
        c = {"kind": "greedy", "name": label, "prompt": prompt, "new_tokens": new, "prefill": prefill,
             "logits": key, "min_margin": min_margin}
        if passes:
            c["forward_passes"], c["backward_passes"] = passes
        self.meta["checks"].append(c)

    def finish(self):
        save_file(self.tensors, os.path.join(self.dir, "golden.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(self.dir, "golden.json"), "w") as f:
            json.dump(self.meta, f, indent=1)
        return {"case": self.name, "source": self.meta["source"], "checks": len(self.meta["checks"])}


def hf_case(out, name, note, cfg, seed, save_dtype=torch.float32, shard=None):
    model = as_stored_float64(random_model(cfg, seed), save_dtype)
    case = Case(out, name, "hf-transformers", note)
    case.meta["rope_inv_freq"] = "float32"
    kw = {"max_shard_size": shard} if shard else {}
    stored = copy.deepcopy(model).to(save_dtype)  # exact: the weights are rounded already
    try:
        stored.save_pretrained(case.dir, safe_serialization=True, **kw)
    except TypeError:  # a transformers without the argument always writes safetensors
        stored.save_pretrained(case.dir, **kw)
    assert any(f.endswith(".safetensors") for f in os.listdir(case.dir)), os.listdir(case.dir)
    seq = tokens_for(seed + 1000, 12)
    case.logits("seq", seq, hf_logits(model, seq))
    prompt, new, rows, m = pick_prompt(lambda p, k: hf_greedy(model, p, k), seed + 2000, 5, 8)
    case.greedy("greedy", prompt, new, rows, m)
    return case.finish()


def save_lckv_checkpoint(model, ref, directory, layer_types, passes, sliding_window, dtype=torch.float32):
    """An lckv-llama directory as the LCKV authors' code writes it: config.json (transformers v4 form)
    and model.safetensors without k/v projections in layers that compute no KV."""
    cfg = model.config
    sd = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if ".self_attn.k_proj." in k or ".self_attn.v_proj." in k:
            layer = int(k.split(".")[2])
            if layer not in ref.kv_layers:
                continue
        sd[k] = v.detach().to(dtype).contiguous().clone()
    save_file(sd, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    conf = {
        "architectures": ["LCKVLlamaForCausalLM"], "model_type": "lckv-llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "hidden_act": "silu", "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings, "rope_theta": theta_of(cfg), "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_word_embeddings, "torch_dtype": str(dtype).replace("torch.", ""),
        "bos_token_id": 1, "eos_token_id": 2, "layer_types": layer_types, "forward_passes": passes[0],
        "backward_passes": passes[1], "sliding_window": sliding_window, "use_sequential": False,
        "force_nodiag": False, "transformers_version": "4.45.2",
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)


def lckv_case(out, name, note, layer_types, layers, seed, tied, sliding_window=4096, iterative=None, kv_heads=2,
              shape=None, save_dtype=torch.float32):
    cfg = llama_config(layers, kv_heads=kv_heads, tied=tied, **(shape or {}))
    model = as_stored_float64(random_model(cfg, seed), save_dtype)
    ref = Reference(model, layer_types, sliding_window)
    case = Case(out, name, "lckv-reference", note)
    save_lckv_checkpoint(copy.deepcopy(model), ref, case.dir, layer_types, (7, 2), sliding_window, dtype=save_dtype)
    seq = tokens_for(seed + 1000, 12)
    ref.reset()
    seq_rows = ref.sequential(seq)
    case.logits("sequential", seq, seq_rows, prefill="sequential")
    # Exactness: with m + b >= n, the iterative prefill equals the sequential one.
    ref.reset()
    full = ref.forward(seq, len(seq))
    err = float((full - seq_rows).abs().max())
    assert err < 1e-9, f"{name}: iterative with m+b >= n differs from sequential by {err}"

    def greedy(prompt, steps, prefill_passes=None):
        ref.reset()
        if prefill_passes is None:
            row = ref.sequential(prompt)[-1]
        else:
            row = ref.forward(prompt, prefill_passes)[-1]
        rows, new = [], []
        for _ in range(steps):
            rows.append(row)
            new.append(int(row.argmax()))
            row = ref.forward([new[-1]], 1)[-1]
        return new, torch.stack(rows)

    prompt, new, rows, m = pick_prompt(lambda p, k: greedy(p, k), seed + 2000, 5, 8)
    case.greedy("greedy", prompt, new, rows, m, prefill="sequential")
    if iterative:
        mb = iterative
        ref.reset()
        it_rows = ref.forward(seq, sum(mb))
        diff = float((it_rows - seq_rows).abs().max())
        assert diff > 1e-6, f"{name}: m+b={sum(mb)} < n={len(seq)} should differ from sequential"
        case.logits("iterative", seq, it_rows, prefill="iterative", passes=mb)
        case.meta["iterative_vs_sequential_max_abs_diff"] = diff
        prompt, new, rows, m = pick_prompt(lambda p, k: greedy(p, k, sum(mb)), seed + 3000, 10, 6)
        case.greedy("iterative_then_decode", prompt, new, rows, m, prefill="iterative", passes=mb)
    return case.finish()


def self_check():
    """The reference must equal HF's forward on a standard plan (same modules, own attention)."""
    for tied, kv, theta, hd in [(False, 2, 500000.0, None), (True, 4, 10000.0, 16)]:
        cfg = llama_config(3, kv_heads=kv, tied=tied, theta=theta, head_dim=hd)
        model = random_model(cfg, 7).to(torch.float64)
        toks = tokens_for(11, 10)
        ref = Reference(model, "0_1_2")
        a = ref.sequential(toks)
        ref.reset()
        b = ref.forward(toks, 1)
        h = hf_logits(model, toks)
        scale = float(h.abs().max())
        e1, e2 = float((a - h).abs().max()) / scale, float((b - h).abs().max()) / scale
        print(f"self-check (tied={tied}, kv_heads={kv}, theta={theta}, head_dim={hd}): |ref-hf|/max|hf| = {e1:.3g}, {e2:.3g}")
        # HF's eager attention takes its softmax in float32 even for a float64 model: ~1e-7 apart.
        assert e1 < 1e-5 and e2 < 1e-5, "the reference disagrees with HF's LlamaForCausalLM"


def check_lckv_saved(root, report):
    """Loads every model directory under `root` that lckv saved, in HF (plain llama) or the reference
    (lckv-llama), and compares with the logits lckv recorded in lckv_logits.json."""
    results = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isfile(os.path.join(d, "lckv_logits.json")):
            continue
        with open(os.path.join(d, "lckv_logits.json")) as f:
            rec = json.load(f)
        with open(os.path.join(d, "config.json")) as f:
            conf = json.load(f)
        expect = torch.tensor(rec["logits"], dtype=torch.float64).view(len(rec["tokens"]), -1)
        if conf["model_type"] == "llama":
            model = LlamaForCausalLM.from_pretrained(d).eval().to(torch.float64)
            got = hf_logits(model, rec["tokens"])
            how = "LlamaForCausalLM.from_pretrained"
        else:
            cfg = llama_config(conf["num_hidden_layers"], heads=conf["num_attention_heads"],
                               kv_heads=conf["num_key_value_heads"], hidden=conf["hidden_size"],
                               inter=conf["intermediate_size"], tied=conf["tie_word_embeddings"],
                               theta=conf.get("rope_theta", 10000.0), head_dim=conf.get("head_dim"))
            cfg.vocab_size = conf["vocab_size"]
            model = LlamaForCausalLM(cfg).eval()
            sd = {k: v.float() for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
            missing, unexpected = model.load_state_dict(sd, strict=False)
            model = model.to(torch.float64)
            ref = Reference(model, conf["layer_types"], conf.get("sliding_window", 4096))
            got = ref.sequential(rec["tokens"])
            how = f"reference (load_state_dict: {len(missing)} missing k/v of non-KV layers, {len(unexpected)} unexpected)"
        err = float((got - expect).abs().max() / expect.abs().max())
        ok = err < 1e-4 and got.argmax(-1).tolist() == expect.argmax(-1).tolist()
        results.append({"dir": name, "model_type": conf["model_type"], "loaded_by": how, "max_rel_err": err, "ok": ok})
        print(f"lckv-saved {name}: {how}: max rel err {err:.3g} -> {'OK' if ok else 'MISMATCH'}")
    with open(report, "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "results": results}, f, indent=1)
    return all(r["ok"] for r in results)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="fixture directory (tests/golden/fixtures)")
    ap.add_argument("--set", choices=["cpu", "cuda"], default="cpu",
                    help="cpu: small shapes (tests/golden/fixtures); cuda: head_dim 64 / 128 (tests/golden/fixtures_cuda)")
    ap.add_argument("--check-lckv", help="directory of models saved by lckv to load in HF")
    ap.add_argument("--report", help="where the --check-lckv report goes (default OUT/check_lckv_saved.json)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    self_check()
    os.makedirs(args.out, exist_ok=True)
    failed = []

    def guarded(fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception:  # noqa: BLE001 - report every failing case, keep the others
            import traceback
            traceback.print_exc()
            failed.append(a[1])
            return {"case": a[1], "failed": True}

    if args.set == "cuda":
        cases = cuda_cases(args.out, guarded)
    else:
        cases = cpu_cases(args.out, guarded)
    manifest = {"format": "lckv-golden-manifest", "format_version": FORMAT_VERSION, "torch": torch.__version__,
                "transformers": transformers.__version__,
                "command": f"python3 tests/golden/make_golden.py{' --set cuda' if args.set == 'cuda' else ''} --out {args.out}",
                "cases": cases}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest, indent=1))
    ok = not failed
    if failed:
        print("FAILED cases:", failed)
    if args.check_lckv:
        try:
            ok = check_lckv_saved(args.check_lckv, args.report or os.path.join(args.out, "check_lckv_saved.json")) and ok
        except Exception:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            ok = False
    sys.exit(0 if ok else 1)


def cpu_cases(out, guarded):
    """Small shapes (head_dim 8 / 16) for the CPU engine and the checkpoint loader."""
    return [
        guarded(hf_case, out, "hf_tied_mha", "tied embeddings, 4 heads / 4 KV heads", llama_config(2, tied=True), 101),
        guarded(hf_case, out, "hf_gqa_theta_sharded", "untied, GQA 4/2, rope_theta 500000, saved in shards",
                llama_config(2, kv_heads=2, theta=500000.0), 102, shard="60KB"),
        guarded(hf_case, out, "hf_head_dim", "explicit head_dim 16 (q_dim 64 != hidden 32), GQA 4/2",
                llama_config(2, kv_heads=2, head_dim=16), 103),
        guarded(hf_case, out, "hf_bf16", "tied, GQA 4/2, stored as BF16", llama_config(2, kv_heads=2, tied=True), 104,
                save_dtype=torch.bfloat16),
        guarded(hf_case, out, "hf_f16", "tied, GQA 4/1, stored as F16", llama_config(2, kv_heads=1, tied=True), 105,
                save_dtype=torch.float16),
        guarded(lckv_case, out, "lckv_w2", "LCKV sandwich w=2: 0_2_2_3, untied", "0_2_2_3", 4, 201, tied=False,
                  iterative=(2, 1)),
        guarded(lckv_case, out, "lckv_top", "LCKV w=0 (pure top): 2_2_2, tied", "2_2_2", 3, 202, tied=True,
                  iterative=(1, 1)),
        guarded(lckv_case, out, "lckv_cla", "CLA group 2: 0_0_2_2, tied", "0_0_2_2", 4, 203, tied=True),
        guarded(lckv_case, out, "lckv_yoco", "YOCO: 0s_1s_1_1, sliding window 3, tied", "0s_1s_1_1", 4, 204, tied=True,
                  sliding_window=3),
    ]


def cuda_cases(out, guarded):
    """Head sizes the CUDA attention kernels are built for (64, 128), 16-bit storage as real checkpoints."""
    d64 = dict(hidden=128, heads=2, inter=256)  # head_dim 64
    d128 = dict(hidden=128, heads=4, inter=256, head_dim=128)  # q_dim 512 != hidden
    return [
        guarded(hf_case, out, "hf_d64_bf16", "head_dim 64, GQA 2/1, untied, stored as BF16",
                llama_config(2, kv_heads=1, **d64), 301, save_dtype=torch.bfloat16),
        guarded(hf_case, out, "hf_d128_f16", "explicit head_dim 128, GQA 4/1, rope_theta 500000, tied, stored as F16",
                llama_config(2, kv_heads=1, tied=True, theta=500000.0, **d128), 302, save_dtype=torch.float16),
        guarded(lckv_case, out, "lckv_w2_d64", "LCKV sandwich w=2: 0_2_2_3, head_dim 64, GQA 2/1, stored as BF16",
                "0_2_2_3", 4, 303, tied=False, iterative=(2, 1), kv_heads=1, shape=d64, save_dtype=torch.bfloat16),
        guarded(lckv_case, out, "lckv_yoco_d64", "YOCO: 0s_1s_1_1, sliding window 3, head_dim 64, tied, stored as BF16",
                "0s_1s_1_1", 4, 304, tied=True, sliding_window=3, kv_heads=1, shape=d64, save_dtype=torch.bfloat16),
    ]


if __name__ == "__main__":
    main()
