#pragma once
/// \file baseline_llama.hpp
/// The benchmark's opponent: a plain fp32 Llama decoder in C style (one token
/// at a time, every layer with its own KV cache, `#pragma omp parallel for`
/// matrix-vector products), written from DESIGN.md §1 in the spirit of
/// llama2.c. It shares nothing with lckv but the weight layout.

#include <vector>

namespace baseline {

struct Shape {
  int vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, max_seq;
  float eps, theta;
};

/// Pointers to [out, in] row-major weights (HF layout), per layer.
struct LayerWeights {
  const float *q, *k, *v, *o, *gate, *up, *down, *attn_norm, *mlp_norm;
};
struct Weights {
  const float* embed;  // [vocab, hidden]
  const float* norm;   // [hidden]
  const float* lm_head;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
};

class Llama {
public:
  Llama(const Shape& s, const Weights& w);
  /// Runs token `token` at position `pos` (all earlier positions cached); returns logits [vocab].
  const float* forward(int token, int pos);

private:
  Shape s_;
  Weights w_;
  std::vector<float> x_, xb_, xb2_, q_, hb_, hb2_, att_, logits_, key_cache_, value_cache_;
};

}  // namespace baseline
