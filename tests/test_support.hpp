#pragma once
/// \file test_support.hpp
/// Shared helpers of the CPU test suites: a small model shape that runs fast on
/// two cores, library runs that return every logits row, and two independent
/// naive references written from DESIGN.md §1-3 (double precision, plain
/// loops, none of lckv's ops):
///   - naive_llama_causal: a plain causal Llama computed layer by layer over the
///     whole sequence (only for plans where every layer attends to itself);
///   - naive_lckv_sequential: cross-layer KV sharing token by token with one KV
///     list per layer, the definition of "sequential" semantics.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lckv/lckv.hpp"

namespace lt {

using Cache = lckv::ContiguousCache<float>;
using Model = lckv::Transformer<lckv::CpuBackend, Cache>;
using Rows = std::vector<std::vector<float>>;

/// hidden 64, MLP 128, 4 query / 2 KV heads (head_dim 16), vocab 128.
inline lckv::ModelShape small_shape(int layers = 8) {
  lckv::ModelShape s;
  s.vocab_size = 128;
  s.hidden_size = 64;
  s.intermediate_size = 128;
  s.num_layers = layers;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 16;
  return s;
}

inline lckv::ModelConfig small_config(const lckv::LayerPlan& plan, int window = 5, lckv::PassCounts passes = {7, 2}) {
  auto c = lckv::configs::make(small_shape(plan.num_layers()), plan);
  c.attention.sliding_window = window;
  c.passes = passes;
  return c;
}

/// Weights with a std large enough that masks, windows and cache contents visibly
/// change logits (logits of magnitude ~3), yet small enough that fp32 rounding is
/// not amplified: at std 0.2, 8 layers attending top and 15+ tokens, fp32 and
/// double-precision forwards already drift apart by ~1e-3 (measured), so 1e-4
/// comparisons there would test rounding, not semantics.
inline lckv::HostWeights weights_for(const lckv::ModelConfig& c, std::uint64_t seed = 7, float std = 0.1f) {
  return lckv::HostWeights::random(c, seed, std);
}

inline std::vector<int> random_tokens(int n, int vocab, std::uint64_t seed) {
  lckv::Rng rng(seed);
  std::vector<int> t(static_cast<std::size_t>(n));
  for (auto& x : t) x = static_cast<int>(rng.below(static_cast<std::uint64_t>(vocab)));
  return t;
}

/// A random valid layer_types: each layer attends to any layer, sliding with probability 1/3.
inline lckv::LayerPlan random_plan(int layers, lckv::Rng& rng) {
  lckv::LayerPlan p;
  for (int l = 0; l < layers; ++l)
    p.push({static_cast<int>(rng.below(static_cast<std::uint64_t>(layers))), rng.below(3) == 0});
  return p.validate(), p;
}

template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

template <class A, class B>
double max_abs_diff_rows(const A& a, const B& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t r = 0; r < a.size(); ++r) m = std::max(m, max_abs_diff(a[r], b[r]));
  return m;
}

inline Rows to_rows(const lckv::Logits& l) {
  Rows out;
  for (int r = 0; r < l.rows; ++r) out.emplace_back(l.row(r).begin(), l.row(r).end());
  return out;
}

/// Prefills `tokens` into a fresh sequence of `cache` in one forward; every logits row.
template <class C>
Rows prefill_rows(lckv::Transformer<lckv::CpuBackend, C>& model, C& cache, const std::vector<int>& tokens,
                  lckv::PrefillMode mode, int* seq_out = nullptr) {
  const int seq = cache.open();
  if (seq_out) *seq_out = seq;
  lckv::SequenceChunk chunk{seq, tokens};
  return to_rows(model.forward({&chunk, 1}, cache, {mode, true}));
}

/// Feeds `tokens` one forward per token (decode); the logits after each.
template <class C>
Rows decode_rows(lckv::Transformer<lckv::CpuBackend, C>& model, C& cache, int seq, const std::vector<int>& tokens) {
  Rows out;
  for (int t : tokens) {
    lckv::SequenceChunk chunk{seq, std::span<const int>(&t, 1)};
    auto l = model.forward({&chunk, 1}, cache);
    out.emplace_back(l.row(0).begin(), l.row(0).end());
  }
  return out;
}

// ---------------------------------------------------------------------------
// Naive references (double precision, DESIGN.md §1-3).

namespace naive {

using Vec = std::vector<double>;

/// y = W x for a row-major [out, in] weight.
inline Vec matvec(const float* w, int out, int in, const Vec& x) {
  Vec y(static_cast<std::size_t>(out), 0.0);
  for (int o = 0; o < out; ++o) {
    double s = 0;
    for (int i = 0; i < in; ++i) s += static_cast<double>(w[static_cast<std::size_t>(o) * in + i]) * x[static_cast<std::size_t>(i)];
    y[static_cast<std::size_t>(o)] = s;
  }
  return y;
}

inline Vec rmsnorm(const Vec& x, const float* w, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  ms /= static_cast<double>(x.size());
  const double inv = 1.0 / std::sqrt(ms + eps);
  Vec y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = static_cast<double>(w[i]) * x[i] * inv;
  return y;
}

/// rotate_half RoPE on `heads` vectors of head_dim packed in x, at position pos.
inline void rope(Vec& x, int heads, int head_dim, int pos, double theta) {
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < half; ++i) {
      const double freq = std::pow(theta, -2.0 * i / head_dim);
      const double c = std::cos(pos * freq), s = std::sin(pos * freq);
      double& a = x[static_cast<std::size_t>(h * head_dim + i)];
      double& b = x[static_cast<std::size_t>(h * head_dim + i + half)];
      const double a0 = a, b0 = b;
      a = a0 * c - b0 * s;  // x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]
      b = b0 * c + a0 * s;
    }
}

inline double silu(double v) { return v / (1.0 + std::exp(-v)); }

struct Weights {
  const lckv::HostWeights& w;
  const float* get(const std::string& name) const { return w.data(name); }
  const float* layer(int l, const char* what) const {
    return get("model.layers." + std::to_string(l) + "." + what + ".weight");
  }
};

/// The MLP block: x += down(silu(gate(n)) * up(n)), n = rmsnorm(x).
inline void mlp(Vec& x, const Weights& W, const lckv::ModelShape& s, int l) {
  const Vec n = rmsnorm(x, W.layer(l, "post_attention_layernorm"), s.rms_norm_eps);
  Vec g = matvec(W.layer(l, "mlp.gate_proj"), s.intermediate_size, s.hidden_size, n);
  const Vec u = matvec(W.layer(l, "mlp.up_proj"), s.intermediate_size, s.hidden_size, n);
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = silu(g[i]) * u[i];
  const Vec d = matvec(W.layer(l, "mlp.down_proj"), s.hidden_size, s.intermediate_size, g);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] += d[i];
}

inline Vec lm_head(const Vec& x, const Weights& W, const lckv::ModelShape& s) {
  const Vec n = rmsnorm(x, W.get("model.norm.weight"), s.rms_norm_eps);
  const float* head = s.tie_word_embeddings ? W.get("model.embed_tokens.weight") : W.get("lm_head.weight");
  return matvec(head, s.vocab_size, s.hidden_size, n);
}

inline Vec embed(int token, const Weights& W, const lckv::ModelShape& s) {
  const float* e = W.get("model.embed_tokens.weight") + static_cast<std::size_t>(token) * s.hidden_size;
  return Vec(e, e + s.hidden_size);
}

/// Softmax attention of one query head over the given keys/values; zero for no keys.
inline void attend(const double* q, const std::vector<const Vec*>& keys, const std::vector<const Vec*>& values, int offset,
                   int d, double* out) {
  std::fill(out, out + d, 0.0);
  if (keys.empty()) return;
  std::vector<double> score(keys.size());
  double mx = -1e300;
  for (std::size_t j = 0; j < keys.size(); ++j) {
    double s = 0;
    for (int i = 0; i < d; ++i) s += q[i] * (*keys[j])[static_cast<std::size_t>(offset + i)];
    score[j] = s / std::sqrt(static_cast<double>(d));
    mx = std::max(mx, score[j]);
  }
  double sum = 0;
  for (double& s : score) sum += (s = std::exp(s - mx));
  for (std::size_t j = 0; j < keys.size(); ++j)
    for (int i = 0; i < d; ++i) out[i] += score[j] / sum * (*values[j])[static_cast<std::size_t>(offset + i)];
}

/// A plain causal Llama (every layer attends to itself, no windows), computed
/// layer by layer over the whole sequence. Returns logits for every position.
inline std::vector<Vec> llama_causal(const lckv::ModelShape& s, const lckv::HostWeights& hw, const std::vector<int>& tokens) {
  const Weights W{hw};
  const int n = static_cast<int>(tokens.size()), d = s.head_dim, group = s.num_heads / s.num_kv_heads;
  std::vector<Vec> x;
  for (int t : tokens) x.push_back(embed(t, W, s));
  for (int l = 0; l < s.num_layers; ++l) {
    std::vector<Vec> q(n), k(n), v(n);
    for (int i = 0; i < n; ++i) {
      const Vec h = rmsnorm(x[static_cast<std::size_t>(i)], W.layer(l, "input_layernorm"), s.rms_norm_eps);
      q[i] = matvec(W.layer(l, "self_attn.q_proj"), s.q_dim(), s.hidden_size, h);
      k[i] = matvec(W.layer(l, "self_attn.k_proj"), s.kv_dim(), s.hidden_size, h);
      v[i] = matvec(W.layer(l, "self_attn.v_proj"), s.kv_dim(), s.hidden_size, h);
      rope(q[i], s.num_heads, d, i, s.rope_theta);
      rope(k[i], s.num_kv_heads, d, i, s.rope_theta);
    }
    for (int i = 0; i < n; ++i) {
      Vec att(static_cast<std::size_t>(s.q_dim()));
      for (int h = 0; h < s.num_heads; ++h) {
        // softmax over j <= i, written out directly
        const int kvh = h / group;
        std::vector<double> p(static_cast<std::size_t>(i + 1));
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int e = 0; e < d; ++e) dot += q[i][static_cast<std::size_t>(h * d + e)] * k[j][static_cast<std::size_t>(kvh * d + e)];
          p[j] = dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, p[j]);
        }
        for (auto& e : p) sum += (e = std::exp(e - mx));
        for (int e = 0; e < d; ++e) {
          double acc = 0;
          for (int j = 0; j <= i; ++j) acc += p[j] / sum * v[j][static_cast<std::size_t>(kvh * d + e)];
          att[static_cast<std::size_t>(h * d + e)] = acc;
        }
      }
      const Vec o = matvec(W.layer(l, "self_attn.o_proj"), s.hidden_size, s.q_dim(), att);
      for (int e = 0; e < s.hidden_size; ++e) x[i][static_cast<std::size_t>(e)] += o[static_cast<std::size_t>(e)];
    }
    for (int i = 0; i < n; ++i) mlp(x[i], W, s, l);
  }
  std::vector<Vec> logits;
  for (int i = 0; i < n; ++i) logits.push_back(lm_head(x[i], W, s));
  return logits;
}

/// Cross-layer KV sharing, token by token (DESIGN.md §2-4 "sequential"): layer l
/// attends to layer t = attends_to(l)'s KV list; tokens j < i when t > l (or
/// force_nodiag), j <= i otherwise; a sliding layer keeps j > i - W, plus j < sink.
/// With a sink (StreamingLLM, DESIGN.md §3) keys are kept unrotated and RoPE is
/// applied by cache position: the k-th visible key sits at position k, the
/// query right after the last key it sees (on the last one when it sees itself).
inline std::vector<Vec> lckv_sequential(const lckv::ModelConfig& c, const lckv::HostWeights& hw,
                                        const std::vector<int>& tokens) {
  const auto& s = c.shape;
  const Weights W{hw};
  const int L = s.num_layers, d = s.head_dim, group = s.num_heads / s.num_kv_heads;
  std::vector<std::vector<Vec>> K(static_cast<std::size_t>(L)), V(static_cast<std::size_t>(L));  // per layer, per position
  std::vector<Vec> logits;
  for (int i = 0; i < static_cast<int>(tokens.size()); ++i) {
    Vec x = embed(tokens[static_cast<std::size_t>(i)], W, s);
    for (int l = 0; l < L; ++l) {
      const Vec h = rmsnorm(x, W.layer(l, "input_layernorm"), s.rms_norm_eps);
      const bool streaming = c.attention.sink > 0;
      Vec q = matvec(W.layer(l, "self_attn.q_proj"), s.q_dim(), s.hidden_size, h);
      if (!streaming) rope(q, s.num_heads, d, i, s.rope_theta);
      const int t = c.plan.attends_to(l);
      const bool computes = [&] {
        for (int m = 0; m < L; ++m)
          if (c.plan.attends_to(m) == l) return true;
        return false;
      }();
      if (computes) {
        Vec k = matvec(W.layer(l, "self_attn.k_proj"), s.kv_dim(), s.hidden_size, h);
        Vec v = matvec(W.layer(l, "self_attn.v_proj"), s.kv_dim(), s.hidden_size, h);
        if (!streaming) rope(k, s.num_kv_heads, d, i, s.rope_theta);
        K[static_cast<std::size_t>(l)].push_back(k);
        V[static_cast<std::size_t>(l)].push_back(v);
      }
      // Which earlier (or this) positions of layer t this query may see.
      const bool nodiag = t > l || c.attention.force_nodiag;
      const int last = nodiag ? i - 1 : i;
      std::vector<const Vec*> keys, values;
      for (int j = 0; j <= last; ++j) {
        bool visible = true;
        if (c.plan.sliding(l)) {
          const int W_ = c.attention.sliding_window;
          const int first_in_window = i - W_ + 1;
          visible = j >= first_in_window || j < c.attention.sink;
        }
        if (!visible) continue;
        REQUIRE(j < static_cast<int>(K[static_cast<std::size_t>(t)].size()));
        keys.push_back(&K[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)]);
        values.push_back(&V[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)]);
      }
      std::vector<Vec> rotated;  // streaming: keys at their cache positions
      if (streaming) {
        rotated.reserve(keys.size());
        for (std::size_t k = 0; k < keys.size(); ++k) {
          rotated.push_back(*keys[k]);
          rope(rotated.back(), s.num_kv_heads, d, static_cast<int>(k), s.rope_theta);
          keys[k] = &rotated.back();
        }
        rope(q, s.num_heads, d, static_cast<int>(keys.size()) - (nodiag ? 0 : 1), s.rope_theta);
      }
      Vec att(static_cast<std::size_t>(s.q_dim()));
      for (int hd = 0; hd < s.num_heads; ++hd)
        attend(q.data() + hd * d, keys, values, (hd / group) * d, d, att.data() + hd * d);
      const Vec o = matvec(W.layer(l, "self_attn.o_proj"), s.hidden_size, s.q_dim(), att);
      for (int e = 0; e < s.hidden_size; ++e) x[static_cast<std::size_t>(e)] += o[static_cast<std::size_t>(e)];
      mlp(x, W, s, l);
    }
    logits.push_back(lm_head(x, W, s));
  }
  return logits;
}

}  // namespace naive

/// The named variants of an 8-layer model used across the suites.
struct NamedPlan {
  const char* name;
  lckv::LayerPlan plan;
};

inline std::vector<NamedPlan> named_plans(int L = 8) {
  using namespace lckv;
  return {
      {"standard", plans::standard(L)},
      {"lckv sandwich w=2", plans::lckv(L, warmup::Sandwich{2})},
      {"lckv bottom w=2", plans::lckv(L, warmup::Bottom{2})},
      {"lckv top w=2", plans::lckv(L, warmup::Top{2})},
      {"lckv middle w=2", plans::lckv(L, warmup::Sandwich{2}, select::Middle{})},
      {"pure top", plans::pure_top(L)},
      {"cla g=2", plans::cla(L, 2)},
      {"yoco", plans::yoco(L)},
      {"mix_attention", plans::mix_attention(L)},
  };
}

}  // namespace lt
