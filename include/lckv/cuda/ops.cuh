#pragma once
/// \file ops.cuh
/// CUDA twins of lckv/cpu/ops.hpp and the cache writes of lckv/cpu/attention.hpp:
/// same names, same argument order, plus a trailing stream. Activations are
/// fp32; weights (`W`) and KV (`T`) may be fp32, bf16 or fp16; math is fp32.
/// Every launcher checks its launch.

#include <cub/block/block_reduce.cuh>

#include <cstdint>
#include <type_traits>

#include "lckv/core/buffer.hpp"
#include "lckv/core/rows.hpp"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/error.cuh"

namespace lckv::cuda {

namespace kernels {

template <class W>
__global__ void embed(const int* tokens, const W* table, float* out, int cols) {
  const int r = blockIdx.x;
  const W* src = table + static_cast<std::int64_t>(tokens[r]) * cols;
  float* dst = out + static_cast<std::int64_t>(r) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = to_float(src[c]);
}

template <int Threads, class W>
__global__ void __launch_bounds__(Threads) rmsnorm(const float* x, const W* w, float eps, float* out, int cols) {
  using Reduce = cub::BlockReduce<float, Threads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ float inv;
  const float* in = x + static_cast<std::int64_t>(blockIdx.x) * cols;
  float* o = out + static_cast<std::int64_t>(blockIdx.x) * cols;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < cols; c += Threads) ss += in[c] * in[c];
  const float total = Reduce(tmp).Sum(ss);
  if (threadIdx.x == 0) inv = 1.0f / sqrtf(total / static_cast<float>(cols) + eps);
  __syncthreads();
  for (int c = threadIdx.x; c < cols; c += Threads) o[c] = to_float(w[c]) * (in[c] * inv);
}

template <int = 0>
__global__ void rope(float* x, int cols, int heads, int head_dim, const RowInfo* rows, float theta, int n) {
  const int half = head_dim / 2;
  const std::int64_t total = static_cast<std::int64_t>(n) * heads * half;
  for (std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(t % half);
    const int h = static_cast<int>((t / half) % heads);
    const int r = static_cast<int>(t / (static_cast<std::int64_t>(half) * heads));
    // The CPU computes powf(theta, e) in fp32 (correctly rounded in glibc);
    // double pow rounded to float reproduces it.
    const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float inv_freq = 1.0f / static_cast<float>(pow(static_cast<double>(theta), static_cast<double>(e)));
    const float angle = static_cast<float>(rows[r].pos) * inv_freq;
    float s, c;
    sincosf(angle, &s, &c);
    float* v = x + static_cast<std::int64_t>(r) * cols + h * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

template <int = 0>
__global__ void swiglu(float* gate, const float* up, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

template <int = 0>
__global__ void gather_rows(const float* src, const int* index, float* dst, int cols) {
  const float* s = src + static_cast<std::int64_t>(index[blockIdx.x]) * cols;
  float* d = dst + static_cast<std::int64_t>(blockIdx.x) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) d[c] = s[c];
}

template <class T>
__global__ void convert(const float* src, T* dst, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst[i] = from_float<T>(src[i]);
}

template <class Slot>
__global__ void store_kv(const float* k, const float* v, Slot slot, const RowInfo* rows, int n) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(slot.key(0, 0, 0))>>;
  const int per_row = slot.kv_heads * slot.head_dim;
  const std::int64_t total = static_cast<std::int64_t>(n) * per_row;
  for (std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(t / per_row), c = static_cast<int>(t % per_row);
    const int h = c / slot.head_dim, d = c % slot.head_dim;
    const RowInfo ri = rows[r];
    slot.key(ri.seq, ri.pos, h)[d] = from_float<T>(k[t]);
    slot.value(ri.seq, ri.pos, h)[d] = from_float<T>(v[t]);
  }
}

template <class Slot>
__global__ void zero_kv(Slot slot, const RowInfo* rows, int n) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(slot.key(0, 0, 0))>>;
  const int per_row = slot.kv_heads * slot.head_dim;
  const std::int64_t total = static_cast<std::int64_t>(n) * per_row;
  for (std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(t / per_row), c = static_cast<int>(t % per_row);
    const int h = c / slot.head_dim, d = c % slot.head_dim;
    const RowInfo ri = rows[r];
    slot.key(ri.seq, ri.pos, h)[d] = from_float<T>(0.0f);
    slot.value(ri.seq, ri.pos, h)[d] = from_float<T>(0.0f);
  }
}

}  // namespace kernels

/// Blocks for a grid-stride loop over n elements.
inline int grid_for(std::int64_t n, int threads = 256) {
  const std::int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(b < 1 ? 1 : (b > 65536 ? 65536 : b));
}

/// out[r] = table[tokens[r]]. tokens: [n] device ids; table: [vocab, hidden]; out: [n, hidden].
template <class W>
void embed(const int* tokens, const W* table, MatrixView<float> out, cudaStream_t s) {
  if (out.rows == 0) return;
  kernels::embed<<<out.rows, 256, 0, s>>>(tokens, table, out.data, out.cols);
  LCKV_CUDA_CHECK_LAUNCH("embed");
}

/// out = w * x / sqrt(mean(x^2) + eps), per row (CUB block reduction). x, out: [rows, hidden]; w: [hidden].
template <class W>
void rmsnorm(MatrixView<const float> x, const W* w, float eps, MatrixView<float> out, cudaStream_t s) {
  if (x.rows == 0) return;
  kernels::rmsnorm<256><<<x.rows, 256, 0, s>>>(x.data, w, eps, out.data, x.cols);
  LCKV_CUDA_CHECK_LAUNCH("rmsnorm");
}

/// HF rotate_half RoPE in place. x: [rows, heads * head_dim]; rows: [rows] device.
inline void rope(MatrixView<float> x, int heads, int head_dim, const RowInfo* rows, float theta, cudaStream_t s) {
  const std::int64_t n = static_cast<std::int64_t>(x.rows) * heads * (head_dim / 2);
  if (n == 0) return;
  kernels::rope<<<grid_for(n), 256, 0, s>>>(x.data, x.cols, heads, head_dim, rows, theta, x.rows);
  LCKV_CUDA_CHECK_LAUNCH("rope");
}

/// gate = silu(gate) * up. gate, up: [rows, intermediate].
inline void swiglu(MatrixView<float> gate, MatrixView<const float> up, cudaStream_t s) {
  if (gate.size() == 0) return;
  kernels::swiglu<<<grid_for(gate.size()), 256, 0, s>>>(gate.data, up.data, gate.size());
  LCKV_CUDA_CHECK_LAUNCH("swiglu");
}

/// dst = src (same shape).
inline void copy(MatrixView<const float> src, MatrixView<float> dst, cudaStream_t s) {
  if (src.size() == 0) return;
  LCKV_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, static_cast<std::size_t>(src.size()) * sizeof(float),
                                  cudaMemcpyDeviceToDevice, s));
}

/// dst[i] = src[index[i]]. index: [dst.rows] device.
inline void gather_rows(MatrixView<const float> src, const int* index, MatrixView<float> dst, cudaStream_t s) {
  if (dst.rows == 0) return;
  kernels::gather_rows<<<dst.rows, 256, 0, s>>>(src.data, index, dst.data, dst.cols);
  LCKV_CUDA_CHECK_LAUNCH("gather_rows");
}

/// dst[i] = T(src[i]), round to nearest even.
template <class T>
void convert(const float* src, T* dst, std::int64_t n, cudaStream_t s) {
  if (n == 0) return;
  kernels::convert<<<grid_for(n), 256, 0, s>>>(src, dst, n);
  LCKV_CUDA_CHECK_LAUNCH("convert");
}

/// Writes rows of k, v ([rows, kv_heads * head_dim], fp32) into the slot at (seq, pos).
template <class Slot>
void store_kv(MatrixView<const float> k, MatrixView<const float> v, const Slot& slot, const RowInfo* rows, cudaStream_t s) {
  const std::int64_t n = static_cast<std::int64_t>(k.rows) * slot.kv_heads * slot.head_dim;
  if (n == 0) return;
  kernels::store_kv<<<grid_for(n), 256, 0, s>>>(k.data, v.data, slot, rows, k.rows);
  LCKV_CUDA_CHECK_LAUNCH("store_kv");
}

/// Zeroes the slot's keys and values at the given n rows.
template <class Slot>
void zero_kv(const Slot& slot, const RowInfo* rows, int n, cudaStream_t s) {
  const std::int64_t total = static_cast<std::int64_t>(n) * slot.kv_heads * slot.head_dim;
  if (total == 0) return;
  kernels::zero_kv<<<grid_for(total), 256, 0, s>>>(slot, rows, n);
  LCKV_CUDA_CHECK_LAUNCH("zero_kv");
}

}  // namespace lckv::cuda
