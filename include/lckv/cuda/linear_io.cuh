#pragma once
/// \file linear_io.cuh
/// What a fused decode linear layer reads and writes, shared by the GEMV of
/// gemv.cuh (1-8 rows) and the tensor-core GEMM of gemm_tc.cuh (9-64 rows):
/// the matrices one launch feeds with the same x, the RMSNorm folded into x,
/// and the epilogue that stores the result (plain, or RoPE + K/V into a cache slot).

#include "lckv/core/buffer.hpp"
#include "lckv/core/rows.hpp"

namespace lckv::cuda {

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
};

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
};

}  // namespace lckv::cuda
