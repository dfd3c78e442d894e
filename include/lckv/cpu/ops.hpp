#pragma once
/// \file ops.hpp
/// CPU (Eigen, fp32) twins of the model's elementwise and matrix ops. Each
/// CUDA op in lckv/cuda has the same name and argument order.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

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

/// Multiply-adds below which an op runs on one thread: starting and joining a
/// team costs microseconds (milliseconds when the cores are shared), more than
/// a small op takes.
inline constexpr std::int64_t kMinParallelWork = std::int64_t{1} << 15;

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

namespace detail {

/// Below this many rows, linear() streams W once through dot-product tiles
/// (decode); from it on, Eigen's GEMM (prefill). Measured on 2 AMD EPYC cores
/// with llama_tiny: Eigen's GEMM packs all of W for every product and ran batch-8
/// decode ~6x slower than batch 1; the tiles make it ~1.5x (docs/benchmarks.md).
inline constexpr int kGemmRows = 64;

/// y[r, o] (+)= x[r] . w[o] for an NW x NX tile: weight rows o..o+NW-1, input rows r..r+NX-1.
/// Both operands are read along `in` once, 8 lanes at a time, into NW * NX accumulators.
template <int NW, int NX>
inline void dot_tile(const float* x, int ldx, const float* w, int in, float* y, int ldy, bool accumulate) {
  float out[NW][NX];
  int k = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc[NW][NX];
  for (int a = 0; a < NW; ++a)
    for (int b = 0; b < NX; ++b) acc[a][b] = _mm256_setzero_ps();
  for (; k + 8 <= in; k += 8) {
    __m256 wv[NW];
    for (int a = 0; a < NW; ++a) wv[a] = _mm256_loadu_ps(w + static_cast<std::int64_t>(a) * in + k);
    for (int b = 0; b < NX; ++b) {
      const __m256 xv = _mm256_loadu_ps(x + static_cast<std::int64_t>(b) * ldx + k);
      for (int a = 0; a < NW; ++a) acc[a][b] = _mm256_fmadd_ps(wv[a], xv, acc[a][b]);
    }
  }
  for (int a = 0; a < NW; ++a)
    for (int b = 0; b < NX; ++b) {
      __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc[a][b]), _mm256_extractf128_ps(acc[a][b], 1));
      v = _mm_add_ps(v, _mm_movehl_ps(v, v));
      v = _mm_add_ss(v, _mm_movehdup_ps(v));
      out[a][b] = _mm_cvtss_f32(v);
    }
#else
  for (int a = 0; a < NW; ++a)
    for (int b = 0; b < NX; ++b) out[a][b] = 0.0f;
#endif
  for (; k < in; ++k)
    for (int a = 0; a < NW; ++a)
      for (int b = 0; b < NX; ++b) out[a][b] += w[static_cast<std::int64_t>(a) * in + k] * x[static_cast<std::int64_t>(b) * ldx + k];
  for (int a = 0; a < NW; ++a)
    for (int b = 0; b < NX; ++b) {
      float& dst = y[static_cast<std::int64_t>(b) * ldy + a];
      dst = accumulate ? dst + out[a][b] : out[a][b];
    }
}

/// Weight rows [o0, o1) against every input row, in tiles of 4 weight rows x 2 input rows.
inline void linear_rows(MatrixView<const float> x, const float* w, MatrixView<float> y, int o0, int o1, bool accumulate) {
  const int in = x.cols;
  int o = o0;
  auto rows_of = [&](auto nw) {
    constexpr int NW = decltype(nw)::value;
    const float* wo = w + static_cast<std::int64_t>(o) * in;
    int r = 0;
    for (; r + 2 <= x.rows; r += 2) dot_tile<NW, 2>(x.row(r), in, wo, in, y.row(r) + o, y.cols, accumulate);
    if (r < x.rows) dot_tile<NW, 1>(x.row(r), in, wo, in, y.row(r) + o, y.cols, accumulate);
  };
  for (; o + 4 <= o1; o += 4) rows_of(std::integral_constant<int, 4>{});
  for (; o < o1; ++o) rows_of(std::integral_constant<int, 1>{});
}

}  // namespace detail

/// y (+)= x W^T. x: [rows, in]; w: [out, in] row-major (checkpoint layout); y: [rows, out].
/// Up to detail::kGemmRows rows (decode), W's rows are split across threads and
/// streamed once through dot-product tiles, so the step is bound by reading the
/// weights; more rows (prefill) use Eigen's threaded GEMM.
inline void linear(MatrixView<const float> x, const float* w, MatrixView<float> y, bool accumulate = false) {
  if (x.rows >= detail::kGemmRows) {
    Eigen::Map<const RowMatrix> X(x.data, x.rows, x.cols);
    Eigen::Map<RowMatrix> Y(y.data, y.rows, y.cols);
    Eigen::Map<const RowMatrix> W(w, y.cols, x.cols);
    if (accumulate) Y.noalias() += X * W.transpose();
    else Y.noalias() = X * W.transpose();
    return;
  }
  const std::int64_t work = static_cast<std::int64_t>(x.rows) * x.cols * y.cols;
  const int threads = work < kMinParallelWork ? 1 : num_threads();
  // Blocks of weight rows, a multiple of the 4-row tile, a few per thread.
  const int block = std::max(16, (y.cols / (4 * threads) + 15) / 16 * 16);
  const int blocks = (y.cols + block - 1) / block;
#pragma omp parallel for schedule(static) if (threads > 1)
  for (int b = 0; b < blocks; ++b) detail::linear_rows(x, w, y, b * block, std::min(y.cols, (b + 1) * block), accumulate);
}

namespace detail {

/// cos and sin of RoPE frequency i at position pos, computed in fp32 as transformers does.
inline std::pair<float, float> rope_cos_sin(int i, int head_dim, int pos, float theta) {
  const float inv_freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  const float angle = static_cast<float>(pos) * inv_freq;
  return {std::cos(angle), std::sin(angle)};
}

/// rotate_half: dimension i pairs with i + half.
inline void rotate_pair(float* v, int i, int half, float c, float s) {
  const float a = v[i], b = v[i + half];
  v[i] = a * c - b * s;
  v[i + half] = b * c + a * s;
}

}  // namespace detail

/// Rotates one head vector in place to position `pos` (HF rotate_half form).
inline void rotate_half(float* v, int head_dim, int pos, float theta) {
  for (int i = 0; i < head_dim / 2; ++i) {
    const auto [c, s] = detail::rope_cos_sin(i, head_dim, pos, theta);
    detail::rotate_pair(v, i, head_dim / 2, c, s);
  }
}

/// HF "rotate_half" RoPE in place: dimension i pairs with i + head_dim/2; angle
/// pos * theta^(-2i/head_dim). Each angle is computed once per row and shared by
/// every head. x: [rows, heads * head_dim]; rows: [rows] positions.
inline void rope(MatrixView<float> x, int heads, int head_dim, const RowInfo* rows, float theta) {
  for (int r = 0; r < x.rows; ++r)
    for (int i = 0; i < head_dim / 2; ++i) {
      const auto [c, s] = detail::rope_cos_sin(i, head_dim, rows[r].pos, theta);
      for (int h = 0; h < heads; ++h) detail::rotate_pair(x.row(r) + h * head_dim, i, head_dim / 2, c, s);
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
