#pragma once
/// \file gemm.cuh
/// y (+)= x W^T through cuBLAS: x fp32 [rows, in], W [out, in] row-major (the
/// checkpoint layout) in fp32, bf16 or fp16, y fp32 [rows, out], fp32
/// accumulation. With `accumulate` the residual add rides in the GEMM's
/// epilogue (beta = 1), so the model's residual stream costs no extra pass.
/// For 16-bit weights x is rounded to the weight type first (cuBLAS takes A and
/// B of one type); the fp32 path never uses TF32.

#include <cublas_v2.h>

#include <memory>

#include "lckv/core/buffer.hpp"
#include "lckv/cuda/device_memory.cuh"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/ops.cuh"

namespace lckv::cuda {

namespace kernels {

/// y[r, o] (+)= sum_i x[r, i] W[o, i] for rows <= R: one warp per output,
/// 16-byte weight loads (the bytes that bound a decode step), x read as fp32
/// (no rounding to the weight type), fp32 accumulation, warp-shuffle sums.
template <class W, int R>
__global__ void __launch_bounds__(256) gemv(const float* x, const W* w, float* y, int rows, int in, int out,
                                            bool accumulate) {
  constexpr int V = 16 / sizeof(W);
  const int lane = threadIdx.x % 32;
  const int o = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (o >= out) return;
  const W* wr = w + static_cast<std::int64_t>(o) * in;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  constexpr int U = 4;  // 16-byte weight loads in flight per lane
  for (int base = lane * V; base < in; base += 32 * V * U) {
    uint4 raw[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * 32 * V;
      raw[u] = i < in ? *reinterpret_cast<const uint4*>(wr + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * 32 * V;
      if (i >= in) break;
      const W* e = reinterpret_cast<const W*>(&raw[u]);
      float wf[V];
#pragma unroll
      for (int k = 0; k < V; ++k) wf[k] = to_float(e[k]);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r < rows) {
          const float* xr = x + static_cast<std::int64_t>(r) * in + i;
#pragma unroll
          for (int k = 0; k < V; k += 4) {
            const float4 xv = *reinterpret_cast<const float4*>(xr + k);
            acc[r] += wf[k] * xv.x + wf[k + 1] * xv.y + wf[k + 2] * xv.z + wf[k + 3] * xv.w;
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
    float v = acc[r];
#pragma unroll
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) {
      float* yo = y + static_cast<std::int64_t>(r) * out + o;
      *yo = accumulate ? *yo + v : v;
    }
  }
}

}  // namespace kernels


/// A cuBLAS handle bound to one stream, with a fixed workspace so that calls
/// can be captured into a CUDA Graph (no allocation inside cuBLAS).
class Gemm {
public:
  /// Up to this many rows, linear() uses the GEMV kernel instead of cuBLAS.
  static constexpr int kGemvRows = 8;

  explicit Gemm(cudaStream_t stream, std::size_t workspace_bytes = 32u << 20) : workspace_(workspace_bytes) {
    LCKV_CUBLAS_CHECK(cublasCreate(&handle_));
    LCKV_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    LCKV_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), workspace_.bytes()));
    LCKV_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
    stream_ = stream;
  }
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  ~Gemm() {
    if (handle_) cublasDestroy(handle_);
  }

  /// Makes room for the 16-bit copy of an activation of n elements (call outside graph capture).
  void reserve_activation(std::size_t n_elems) {
    if (n_elems * 2 > act_.bytes()) act_ = DeviceBuffer<unsigned char>(n_elems * 2);
  }

  /// y (+)= x W^T. x: [rows, in]; w: [out, in]; y: [rows, out].
  template <StorageType W>
  void linear(MatrixView<const float> x, const W* w, MatrixView<float> y, bool accumulate) {
    if (x.rows == 0) return;
    // Decode at small batch: a weight-streaming GEMV beats cuBLAS's small-M kernels and skips the rounding pass.
    if (x.rows <= kGemvRows && x.cols % (16 / sizeof(W)) == 0) {
      constexpr int warps = 8;
      kernels::gemv<W, kGemvRows><<<(y.cols + warps - 1) / warps, 32 * warps, 0, stream_>>>(x.data, w, y.data, x.rows, x.cols,
                                                                                          y.cols, accumulate);
      LCKV_CUDA_CHECK_LAUNCH("gemv");
      return;
    }
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const void* b = x.data;
    if constexpr (!std::is_same_v<W, float>) {
      const std::size_t n = static_cast<std::size_t>(x.size());
      if (n * sizeof(W) > act_.bytes())
        throw CudaError("gemm: activation scratch of " + std::to_string(act_.bytes()) + " bytes is too small for " +
                        std::to_string(n * sizeof(W)) + "; call reserve_activation first");
      W* xc = reinterpret_cast<W*>(act_.data());
      convert(x.data, xc, x.size(), stream_);
      b = xc;
    }
    // Column-major view: y^T[out, rows] = W[in, out]^T * x^T[in, rows].
    LCKV_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, y.cols, x.rows, x.cols, &alpha, w,
                                   DTypeTraits<W>::cuda_type, x.cols, b, DTypeTraits<W>::cuda_type, x.cols, &beta, y.data,
                                   CUDA_R_32F, y.cols, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  /// Plain C[m, n] = A[m, k] B[k, n]^T-free GEMM on 16-bit or fp32 operands (benchmarks: the ceiling).
  template <StorageType T>
  void gemm_rowmajor(int m, int n, int k, const T* a, const T* bt, float* c) {
    const float alpha = 1.0f, beta = 0.0f;
    // c[m, n] = a[m, k] * bt[n, k]^T
    LCKV_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, bt, DTypeTraits<T>::cuda_type, k,
                                   a, DTypeTraits<T>::cuda_type, k, &beta, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
  }

  cublasHandle_t handle() const { return handle_; }
  const void* activation_data() const { return act_.data(); }

private:
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer<unsigned char> workspace_;
  DeviceBuffer<unsigned char> act_;
};

}  // namespace lckv::cuda
