#pragma once
/// \file ops.hpp
/// CPU (Eigen, fp32) twins of the model's elementwise and matrix ops. Each
/// CUDA op in lckv/cuda has the same name and argument order.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "lckv/core/buffer.hpp"
#include "lckv/core/rows.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace lckv::cpu {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// out[r] = table[tokens[r]]. tokens: [n] (validated by the caller), table: [vocab, hidden], out: [n, hidden].
inline void embed(const int* tokens, const float* table, MatrixView<float> out) {
  for (int r = 0; r < out.rows; ++r)
    std::copy_n(table + static_cast<std::int64_t>(tokens[r]) * out.cols, out.cols, out.row(r));
}

/// out = w * x / sqrt(mean(x^2) + eps), per row. x, out: [rows, hidden]; w: [hidden].
inline void rmsnorm(MatrixView<const float> x, const float* w, float eps, MatrixView<float> out) {
  Eigen::Map<const Eigen::ArrayXf> weight(w, x.cols);
  for (int r = 0; r < x.rows; ++r) {
    Eigen::Map<const Eigen::ArrayXf> in(x.row(r), x.cols);
    const float inv = 1.0f / std::sqrt(in.square().mean() + eps);
    Eigen::Map<Eigen::ArrayXf>(out.row(r), x.cols) = weight * (in * inv);
  }
}

/// y (+)= x W^T. x: [rows, in]; w: [out, in] row-major (checkpoint layout); y: [rows, out].
/// Small batches split W's rows across threads (a GEMV reads each weight once);
/// large ones use Eigen's threaded GEMM.
inline void linear(MatrixView<const float> x, const float* w, MatrixView<float> y, bool accumulate = false) {
  Eigen::Map<const RowMatrix> X(x.data, x.rows, x.cols);
  Eigen::Map<RowMatrix> Y(y.data, y.rows, y.cols);
  Eigen::Map<const RowMatrix> W(w, y.cols, x.cols);
  if (x.rows >= 32 || num_threads() == 1) {
    if (accumulate) Y.noalias() += X * W.transpose();
    else Y.noalias() = X * W.transpose();
    return;
  }
  const int block = std::max(64, (y.cols / (4 * num_threads()) + 15) / 16 * 16);
  const int blocks = (y.cols + block - 1) / block;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < blocks; ++b) {
    const int c0 = b * block, n = std::min(block, y.cols - c0);
    if (accumulate) Y.middleCols(c0, n).noalias() += X * W.middleRows(c0, n).transpose();
    else Y.middleCols(c0, n).noalias() = X * W.middleRows(c0, n).transpose();
  }
}

/// HF "rotate_half" RoPE in place: dimension i pairs with i + head_dim/2; angle
/// pos * theta^(-2i/head_dim), computed in fp32 as transformers does.
/// x: [rows, heads * head_dim]; rows: [rows] positions.
inline void rope(MatrixView<float> x, int heads, int head_dim, const RowInfo* rows, float theta) {
  const int half = head_dim / 2;
  for (int r = 0; r < x.rows; ++r) {
    const float pos = static_cast<float>(rows[r].pos);
    for (int i = 0; i < half; ++i) {
      const float inv_freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
      const float angle = pos * inv_freq;
      const float c = std::cos(angle), s = std::sin(angle);
      for (int h = 0; h < heads; ++h) {
        float* v = x.row(r) + h * head_dim;
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

/// gate = silu(gate) * up, elementwise. gate, up: [rows, intermediate].
inline void swiglu(MatrixView<float> gate, MatrixView<const float> up) {
  Eigen::Map<Eigen::ArrayXf> g(gate.data, gate.size());
  Eigen::Map<const Eigen::ArrayXf> u(up.data, up.size());
  g = g / (1.0f + (-g).exp()) * u;
}

/// dst = src (same shape).
inline void copy(MatrixView<const float> src, MatrixView<float> dst) { std::copy_n(src.data, src.size(), dst.data); }

/// dst[i] = src[index[i]]. src: [n, cols]; index: [dst.rows]; dst: [dst.rows, cols].
inline void gather_rows(MatrixView<const float> src, const int* index, MatrixView<float> dst) {
  for (int r = 0; r < dst.rows; ++r) std::copy_n(src.row(index[r]), src.cols, dst.row(r));
}

}  // namespace lckv::cpu
