// A plain fp32 Llama decode step in C style (see baseline_llama.hpp).
// Compiled with -O3 -ffast-math, like llama2.c's -Ofast OpenMP build.

#include "baseline_llama.hpp"

#include <cmath>
#include <cstddef>
#include <cstring>

namespace baseline {
namespace {

// out[d] = W[d, n] x[n]
void matmul(float* out, const float* x, const float* w, int n, int d) {
#pragma omp parallel for
  for (int i = 0; i < d; ++i) {
    const float* row = w + static_cast<std::size_t>(i) * n;
    float val = 0.0f;
    for (int j = 0; j < n; ++j) val += row[j] * x[j];
    out[i] = val;
  }
}

void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
  float ss = 0.0f;
  for (int j = 0; j < n; ++j) ss += x[j] * x[j];
  const float inv = 1.0f / std::sqrt(ss / n + eps);
  for (int j = 0; j < n; ++j) out[j] = w[j] * (x[j] * inv);
}

// rotate_half RoPE: dimension i pairs with i + head_dim / 2.
void rope(float* v, int heads, int head_dim, int pos, float theta) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / head_dim);
    const float c = std::cos(pos * freq), s = std::sin(pos * freq);
    for (int h = 0; h < heads; ++h) {
      float* p = v + h * head_dim;
      const float a = p[i], b = p[i + half];
      p[i] = a * c - b * s;
      p[i + half] = b * c + a * s;
    }
  }
}

}  // namespace

Llama::Llama(const Shape& s, const Weights& w) : s_(s), w_(w) {
  const std::size_t kv_dim = static_cast<std::size_t>(s.kv_heads) * s.head_dim;
  x_.resize(s.hidden);
  xb_.resize(s.hidden);
  xb2_.resize(s.hidden);
  q_.resize(static_cast<std::size_t>(s.heads) * s.head_dim);
  hb_.resize(s.intermediate);
  hb2_.resize(s.intermediate);
  att_.resize(static_cast<std::size_t>(s.heads) * s.max_seq);
  logits_.resize(s.vocab);
  key_cache_.resize(static_cast<std::size_t>(s.layers) * s.max_seq * kv_dim);
  value_cache_.resize(static_cast<std::size_t>(s.layers) * s.max_seq * kv_dim);
}

const float* Llama::forward(int token, int pos) {
  const Shape& s = s_;
  const int kv_dim = s.kv_heads * s.head_dim, q_dim = s.heads * s.head_dim, group = s.heads / s.kv_heads;
  float* x = x_.data();
  std::memcpy(x, w_.embed + static_cast<std::size_t>(token) * s.hidden, sizeof(float) * s.hidden);

  for (int l = 0; l < s.layers; ++l) {
    const LayerWeights& w = w_.layers[static_cast<std::size_t>(l)];
    rmsnorm(xb_.data(), x, w.attn_norm, s.hidden, s.eps);
    const std::size_t layer_off = static_cast<std::size_t>(l) * s.max_seq * kv_dim;
    float* k = key_cache_.data() + layer_off + static_cast<std::size_t>(pos) * kv_dim;
    float* v = value_cache_.data() + layer_off + static_cast<std::size_t>(pos) * kv_dim;
    matmul(q_.data(), xb_.data(), w.q, s.hidden, q_dim);
    matmul(k, xb_.data(), w.k, s.hidden, kv_dim);
    matmul(v, xb_.data(), w.v, s.hidden, kv_dim);
    rope(q_.data(), s.heads, s.head_dim, pos, s.theta);
    rope(k, s.kv_heads, s.head_dim, pos, s.theta);

    // Causal attention over positions 0..pos, one head per iteration.
#pragma omp parallel for
    for (int h = 0; h < s.heads; ++h) {
      const float* qh = q_.data() + h * s.head_dim;
      float* att = att_.data() + static_cast<std::size_t>(h) * s.max_seq;
      const int kvh = h / group;
      float mx = -1e30f;
      for (int t = 0; t <= pos; ++t) {
        const float* kt = key_cache_.data() + layer_off + static_cast<std::size_t>(t) * kv_dim + kvh * s.head_dim;
        float score = 0.0f;
        for (int i = 0; i < s.head_dim; ++i) score += qh[i] * kt[i];
        att[t] = score / std::sqrt(static_cast<float>(s.head_dim));
        mx = att[t] > mx ? att[t] : mx;
      }
      float sum = 0.0f;
      for (int t = 0; t <= pos; ++t) sum += (att[t] = std::exp(att[t] - mx));
      float* o = q_.data() + h * s.head_dim;  // q of this head is no longer needed: write the output there
      float acc[256] = {0.0f};
      for (int t = 0; t <= pos; ++t) {
        const float* vt = value_cache_.data() + layer_off + static_cast<std::size_t>(t) * kv_dim + kvh * s.head_dim;
        const float a = att[t] / sum;
        for (int i = 0; i < s.head_dim; ++i) acc[i] += a * vt[i];
      }
      std::memcpy(o, acc, sizeof(float) * s.head_dim);
    }
    matmul(xb2_.data(), q_.data(), w.o, q_dim, s.hidden);
    for (int i = 0; i < s.hidden; ++i) x[i] += xb2_[static_cast<std::size_t>(i)];

    rmsnorm(xb_.data(), x, w.mlp_norm, s.hidden, s.eps);
    matmul(hb_.data(), xb_.data(), w.gate, s.hidden, s.intermediate);
    matmul(hb2_.data(), xb_.data(), w.up, s.hidden, s.intermediate);
    for (int i = 0; i < s.intermediate; ++i) {
      const float g = hb_[static_cast<std::size_t>(i)];
      hb_[static_cast<std::size_t>(i)] = g / (1.0f + std::exp(-g)) * hb2_[static_cast<std::size_t>(i)];
    }
    matmul(xb2_.data(), hb_.data(), w.down, s.intermediate, s.hidden);
    for (int i = 0; i < s.hidden; ++i) x[i] += xb2_[static_cast<std::size_t>(i)];
  }
  rmsnorm(xb_.data(), x, w_.norm, s.hidden, s.eps);
  matmul(logits_.data(), xb_.data(), w_.lm_head, s.hidden, s.vocab);
  return logits_.data();
}

}  // namespace baseline
