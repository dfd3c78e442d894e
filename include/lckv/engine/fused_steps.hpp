#pragma once
/// \file fused_steps.hpp
/// The model's multi-op steps, for any backend: a backend that has a fused
/// version of a step (one launch instead of several on the GPU) provides a
/// member of the same name; otherwise the step runs as the backend's plain ops
/// in sequence. Results are the same either way up to fp32 rounding order.

#include <concepts>
#include <span>
#include <type_traits>

#include "lckv/attention/layer_mask.hpp"
#include "lckv/core/buffer.hpp"
#include "lckv/core/rows.hpp"

namespace lckv::steps {

/// One linear layer of a step: out = input W^T. weight: [out.cols, in].
template <class W>
struct Projection {
  const W* weight;
  MatrixView<float> out;  ///< [rows, out_features]
};

/// out_i = RMSNorm(x; norm, eps) W_i^T for every projection (q, k, v share one input).
/// x, xn: [rows, hidden]; xn receives the normalised x where the backend needs it.
template <class Backend, class W>
void norm_project(Backend& b, MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn,
                  std::span<const Projection<std::type_identity_t<W>>> projections) {
  if constexpr (requires { b.norm_project(x, norm, eps, xn, projections); }) {
    b.norm_project(x, norm, eps, xn, projections);
  } else {
    b.rmsnorm(x, norm, eps, xn);
    for (const auto& p : projections) b.linear(xn, p.weight, p.out);
  }
}

/// gate = silu(xn Wg^T) * (xn Wu^T) with xn = RMSNorm(x; norm, eps): the MLP up to
/// its down projection. x, xn: [rows, hidden]; gate, up: [rows, intermediate] (up is scratch).
template <class Backend, class W>
void norm_gate_up_swiglu(Backend& b, MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn,
                         const W* wg, const W* wu, MatrixView<float> gate, MatrixView<float> up) {
  if constexpr (requires { b.norm_gate_up_swiglu(x, norm, eps, xn, wg, wu, gate, up); }) {
    b.norm_gate_up_swiglu(x, norm, eps, xn, wg, wu, gate, up);
  } else {
    b.rmsnorm(x, norm, eps, xn);
    b.linear(xn, wg, gate);
    b.linear(xn, wu, up);
    b.swiglu(gate, up);
  }
}

/// RoPE of q and k at the rows' positions (skipped when theta == 0: StreamingLLM
/// rotates at read time), then k and v into the slot. A backend's fused version
/// returns false when it does not apply (the plain ops run instead).
/// q: [rows, heads * head_dim]; k, v: [rows, kv_heads * head_dim].
template <class Backend, class Slot>
void rope_store_kv(Backend& b, MatrixView<float> q, int heads, MatrixView<float> k, MatrixView<const float> v,
                   const Slot& slot, const RowInfo* rows, float theta) {
  if constexpr (requires { { b.rope_store_kv(q, heads, k, v, slot, rows, theta) } -> std::same_as<bool>; })
    if (b.rope_store_kv(q, heads, k, v, slot, rows, theta)) return;
  if (theta > 0.0f) {
    b.rope(q, heads, slot.head_dim, rows, theta);
    b.rope(k, slot.kv_heads, slot.head_dim, rows, theta);
  }
  b.store_kv(k, v, slot, rows);
}

/// A layer's attention input: q = RMSNorm(x; norm, eps) Wq^T rotated by RoPE at
/// the rows' positions (theta > 0), and for layers that compute KV (qkv = q, k,
/// v projections) k rotated and v stored into `slot` at the rows' positions
/// (their `out` views are scratch). q-only layers (qkv = {q}) pass the slot they
/// attend to, for its head_dim. A backend's fused version returns false when it
/// does not apply. x, xn: [rows, hidden]; xn receives the normalised x where needed.
template <class Backend, class W, class Slot>
void attention_input(Backend& b, MatrixView<const float> x, const W* norm, float eps, MatrixView<float> xn,
                     std::span<const Projection<std::type_identity_t<W>>> qkv, int heads, const Slot& slot,
                     const RowInfo* rows, float theta) {
  if constexpr (requires { { b.attention_input(x, norm, eps, xn, qkv, heads, slot, rows, theta) } -> std::same_as<bool>; })
    if (b.attention_input(x, norm, eps, xn, qkv, heads, slot, rows, theta)) return;
  norm_project(b, x, norm, eps, xn, qkv);
  if (qkv.size() == 3) {
    rope_store_kv(b, qkv[0].out, heads, qkv[1].out, MatrixView<const float>{qkv[2].out.data, qkv[2].out.rows, qkv[2].out.cols},
                  slot, rows, theta);
  } else if (theta > 0.0f) {
    b.rope(qkv[0].out, heads, slot.head_dim, rows, theta);
  }
}

/// x += Attention(q; slot, mask) Wo^T: a layer's attention with its output
/// projection and residual add. A backend's fused version returns false when it
/// does not apply. q, attn: [rows, heads * head_dim] (attn: scratch); x: [rows, hidden].
template <class Backend, class W, class Slot>
void attention_output(Backend& b, MatrixView<const float> q, const Slot& slot, const RowInfo* rows, const MaskSpec& mask,
                      int heads, MatrixView<float> attn, const W* wo, MatrixView<float> x) {
  if constexpr (requires { { b.attention_output(q, slot, rows, mask, heads, attn, wo, x) } -> std::same_as<bool>; })
    if (b.attention_output(q, slot, rows, mask, heads, attn, wo, x)) return;
  b.attention(q, slot, rows, mask, heads, attn);
  b.linear(attn, wo, x, /*accumulate=*/true);
}

/// x += SwiGLU(RMSNorm(x; norm, eps)) Wd^T: a layer's MLP with its residual add,
/// gate = silu(xn Wg^T) * (xn Wu^T). A backend's fused version returns false when
/// it does not apply. x, xn: [rows, hidden]; gate, up: [rows, intermediate] (scratch).
template <class Backend, class W>
void mlp(Backend& b, MatrixView<float> x, const W* norm, float eps, MatrixView<float> xn, const W* wg, const W* wu,
         const W* wd, MatrixView<float> gate, MatrixView<float> up) {
  if constexpr (requires { { b.mlp(x, norm, eps, xn, wg, wu, wd, gate) } -> std::same_as<bool>; })
    if (b.mlp(x, norm, eps, xn, wg, wu, wd, gate)) return;
  norm_gate_up_swiglu(b, x, norm, eps, xn, wg, wu, gate, up);
  b.linear(gate, wd, x, /*accumulate=*/true);
}

}  // namespace lckv::steps
