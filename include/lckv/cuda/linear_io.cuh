#pragma once
/// \file linear_io.cuh
/// What a fused decode linear layer reads and writes, shared by the GEMV of
/// gemv.cuh (1-8 rows) and the tensor-core GEMM of gemm_tc.cuh (1-64 rows):
/// the matrices one launch feeds with the same x, the RMSNorm folded into x,
/// and the epilogue that stores the result (plain, or RoPE + K/V into a cache slot).

#include <cstdint>
#include <string>
#include <type_traits>

#include "lckv/core/buffer.hpp"
#include "lckv/core/error.hpp"
#include "lckv/core/rows.hpp"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/ops.cuh"

namespace lckv::cuda {

/// Whether `p` allows the 16-byte vector loads of the GEMV and the skinny GEMM (null counts as aligned).
inline bool aligned16(const void* p) { return aligned_to(p, 16); }

/// Up to three matrices that read the same x: y_s[r, o] (+)= x[r] . w_s[o].
/// tile_end[s] is the first tile past matrix s's tiles (the launcher fills it in).
template <class W>
struct LinearTargets {
  static constexpr int kMax = 3;
  const W* w[kMax] = {};
  float* y[kMax] = {};
  int out[kMax] = {};
  int tile_end[kMax] = {};
  int count = 0;

  /// One matrix w: [y.cols, in] into y: [rows, y.cols].
  static LinearTargets single(const W* w, MatrixView<float> y) {
    LinearTargets t;
    t.w[0] = w;
    t.y[0] = y.data;
    t.out[0] = y.cols;
    t.count = 1;
    return t;
  }
  /// Whether every matrix is 16-byte aligned.
  bool weights_aligned() const {
    for (int s = 0; s < count; ++s)
      if (!aligned16(w[s])) return false;
    return true;
  }
};

/// Host: throws InvalidArgument naming `who` unless x, the weights, Wu and the norm weight allow
/// 16-byte vector loads.
template <class W, class X>
void check_aligned16(const char* who, const X* x, const LinearTargets<W>& targets, const W* up, const W* norm) {
  if (!aligned16(x) || !targets.weights_aligned() || !aligned16(up) || !aligned16(norm))
    throw InvalidArgument(std::string(who) + ": needs 16-byte aligned x, weights and norm weight (x " +
                          (aligned16(x) ? "ok" : "misaligned") + ", weights " +
                          (targets.weights_aligned() && aligned16(up) ? "ok" : "misaligned") + ", norm weight " +
                          (aligned16(norm) ? "ok" : "misaligned") + ")");
}

/// RMSNorm applied to x on the fly: weight == nullptr means none.
template <class W>
struct InputNorm {
  const W* weight = nullptr;  ///< [in]
  float eps = 0.0f;
};

/// Plain epilogue: y = result (or y += result).
struct PlainStore {};

/// The attention-input epilogue: target 0 (q) is rotated by RoPE at its row's
/// position into y; targets 1 and 2 (k rotated, v as is) go into `slot` at the
/// row's (seq, pos) instead of y. The kernels keep both halves (i, i + head_dim / 2)
/// of each rotation in one block.
template <class Slot>
struct RopeStore {
  const RowInfo* rows = nullptr;  ///< [rows] device
  float theta = 0.0f;             ///< 0: no rotation (StreamingLLM rotates at read time)
  int head_dim = 0;
  Slot slot{};

  /// Host: throws unless head_dim is even and every target's width is a multiple of it.
  template <class W>
  void check(const char* who, const LinearTargets<W>& targets) const {
    if (head_dim < 2 || head_dim % 2 != 0)
      throw InvalidArgument(std::string(who) + ": the RoPE epilogue needs an even head_dim, got head_dim = " +
                            std::to_string(head_dim));
    for (int s = 0; s < targets.count; ++s)
      if (targets.out[s] % head_dim != 0)
        throw InvalidArgument(std::string(who) + ": RoPE target " + std::to_string(s) + " has " +
                              std::to_string(targets.out[s]) + " outputs, not a multiple of head_dim = " +
                              std::to_string(head_dim));
  }

  /// Which frequency output o rotates with: its index i < head_dim / 2 in the pair (i, i + head_dim / 2).
  __device__ int freq_index(int o) const { return o % head_dim % (head_dim / 2); }

  /// Output o's rotation frequency (kernels::rope_inv_freq: a double pow). Reads no earlier
  /// kernel's output, so the kernels work it out before pdl::wait, off the critical path.
  __device__ float inv_freq(int o) const { return kernels::rope_inv_freq(freq_index(o), head_dim, theta); }

  /// Block-wide: table[i] = the frequency of pair i, i < head_dim / 2 (needs a __syncthreads
  /// before use). Reads no earlier kernel's output, like inv_freq.
  __device__ void fill_inv_freq(float* table) const {
    if (theta > 0.0f)
      for (int i = static_cast<int>(threadIdx.x); i < head_dim / 2; i += static_cast<int>(blockDim.x))
        table[i] = kernels::rope_inv_freq(i, head_dim, theta);
  }

  /// Stores output o of target `target` (0 q, 1 k, 2 v) for a row at `ri` (rows[r]): q rotated
  /// into *yq, k rotated and v as it is into the slot at (seq, pos). `partner()` returns the row's
  /// output o + head_dim / 2 (first half) or o - head_dim / 2 (second half), the rotation's other
  /// input; it is called only when there is a rotation. `freq`: inv_freq(o) (unused without a rotation).
  template <class Partner>
  __device__ void store(int target, const RowInfo& ri, int o, float value, Partner partner, float* yq,
                        float freq) const {
    using KV = std::remove_cv_t<std::remove_pointer_t<decltype(slot.key(0, 0, 0))>>;
    const int half = head_dim / 2, i = o % head_dim;
    if (target < 2 && theta > 0.0f) {  // x[i] = a c - b s, x[i + half] = b c + a s
      float sn, cs;
      sincosf(static_cast<float>(ri.pos) * freq, &sn, &cs);
      const float b = partner();
      value = i < half ? value * cs - b * sn : value * cs + b * sn;
    }
    if (target == 0) *yq = value;
    else (target == 1 ? slot.key(ri.seq, ri.pos, o / head_dim) : slot.value(ri.seq, ri.pos, o / head_dim))[i] = from_float<KV>(value);
  }
};

}  // namespace lckv::cuda
