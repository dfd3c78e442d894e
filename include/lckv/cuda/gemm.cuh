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

/// A 16-byte weight load that bypasses L1 (weights are read once; x stays in L1).
__device__ __forceinline__ uint4 load_weights16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

/// v2: y[r, o] (+)= sum_i x[r, i] W[o, i]. A block of 256 threads owns TO
/// consecutive outputs and one group of up to R rows (block id = tile *
/// groups + group, so the groups that share a weight tile run together and
/// re-read it from L2). Its threads split `in` into 16-byte weight chunks
/// (chunk c of every output row goes to thread c mod 256: each warp reads 512
/// contiguous bytes per row), each thread keeps TO * KU independent weight loads
/// in flight, and reuses each x value it loads (fp32, from L1) for TO outputs.
/// Partial sums: warp shuffles, then one shared-memory pass over the 8 warps.
/// GLU: the block's first TO / 2 outputs are rows of `w` (gate), the other
/// TO / 2 the same rows of `w2` (up), and it writes y = silu(gate) * up
/// (the MLP's gate, up and SwiGLU in one launch; `accumulate` is ignored).
template <class W, int R, int TO, bool GLU = false>
__global__ void __launch_bounds__(256) gemv(const float* __restrict__ x, const W* __restrict__ w, float* __restrict__ y,
                                            int rows, int in, int out, int groups, bool accumulate,
                                            const W* __restrict__ w2 = nullptr) {
  static_assert(!GLU || TO % 2 == 0);
  constexpr int TY = GLU ? TO / 2 : TO;  // outputs of y per block
  constexpr int V = 16 / sizeof(W);
  constexpr int T = 256, WARPS = T / 32;
  constexpr int KU = TO >= 8 ? 1 : (TO >= 4 ? 2 : 8);  // chunks per output per thread and round
  const int group = static_cast<int>(blockIdx.x % groups);
  const int o0 = static_cast<int>(blockIdx.x / groups) * TY;
  const int r0 = group * R;
  const int nr = min(R, rows - r0);
  const int chunks = in / V;
  const float* xg = x + static_cast<std::int64_t>(r0) * in;
  const W* wrow[TO];
#pragma unroll
  for (int t = 0; t < TO; ++t) {
    const int o = min(o0 + (t < TY ? t : t - TY), out - 1);
    wrow[t] = (t < TY ? w : w2) + static_cast<std::int64_t>(o) * in;
  }
  float acc[TO][R];
#pragma unroll
  for (int t = 0; t < TO; ++t)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[t][r] = 0.0f;

  for (int c0 = threadIdx.x; c0 < chunks; c0 += T * KU) {
    uint4 raw[KU][TO];
#pragma unroll
    for (int u = 0; u < KU; ++u) {
      const int c = c0 + u * T;
#pragma unroll
      for (int t = 0; t < TO; ++t) raw[u][t] = c < chunks ? load_weights16(wrow[t] + c * V) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < KU; ++u) {
      const int c = c0 + u * T;
      if (c < chunks) {
        float wf[TO][V];
#pragma unroll
        for (int t = 0; t < TO; ++t) {
          const W* e = reinterpret_cast<const W*>(&raw[u][t]);
#pragma unroll
          for (int k = 0; k < V; ++k) wf[t][k] = to_float(e[k]);
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
          if (r < nr) {
            const float4* xr = reinterpret_cast<const float4*>(xg + static_cast<std::int64_t>(r) * in + c * V);
            float xv[V];
#pragma unroll
            for (int k = 0; k < V / 4; ++k) {
              const float4 q = __ldg(xr + k);
              xv[4 * k] = q.x;
              xv[4 * k + 1] = q.y;
              xv[4 * k + 2] = q.z;
              xv[4 * k + 3] = q.w;
            }
#pragma unroll
            for (int t = 0; t < TO; ++t)
#pragma unroll
              for (int k = 0; k < V; ++k) acc[t][r] = fmaf(wf[t][k], xv[k], acc[t][r]);
          }
        }
      }
    }
  }

  __shared__ float partial[WARPS][TO * R];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int t = 0; t < TO; ++t)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = acc[t][r];
#pragma unroll
      for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) partial[warp][t * R + r] = v;
    }
  __syncthreads();
  if (threadIdx.x < TY * R) {
    const int t = threadIdx.x / R, r = threadIdx.x % R, o = o0 + t;
    if (o < out && r < nr) {
      float s = 0.0f;
#pragma unroll
      for (int k = 0; k < WARPS; ++k) s += partial[k][threadIdx.x];
      float* yo = y + static_cast<std::int64_t>(r0 + r) * out + o;
      if constexpr (GLU) {
        float u = 0.0f;
#pragma unroll
        for (int k = 0; k < WARPS; ++k) u += partial[k][threadIdx.x + TY * R];
        *yo = s / (1.0f + expf(-s)) * u;
      } else {
        *yo = accumulate ? *yo + s : s;
      }
    }
  }
}

/// v1 (kept for same-card comparisons, `Gemm::set_gemv_version(1)`):
/// y[r, o] (+)= sum_i x[r, i] W[o, i] for rows <= R: one warp per output,
/// 16-byte weight loads (the bytes that bound a decode step), x read as fp32
/// (no rounding to the weight type), fp32 accumulation, warp-shuffle sums.
template <class W, int R>
__global__ void __launch_bounds__(256) gemv_v1(const float* x, const W* w, float* y, int rows, int in, int out,
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
  /// Up to this many rows, linear() uses the GEMV kernel instead of cuBLAS. kernels::gemv can
  /// also take more rows in groups of 8 (each group re-reads the weight tile), but measured on an
  /// H100 at 32 rows that ran at ~0.10 of copy bandwidth vs cuBLAS's 0.25-0.78, so it stays at 8.
  static constexpr int kGemvRows = 8;

  explicit Gemm(cudaStream_t stream, std::size_t workspace_bytes = 32u << 20) : workspace_(workspace_bytes) {
    LCKV_CUBLAS_CHECK(cublasCreate(&handle_));
    LCKV_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    LCKV_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), workspace_.bytes()));
    LCKV_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
    stream_ = stream;
    int dev = 0;
    LCKV_CUDA_CHECK(cudaGetDevice(&dev));
    LCKV_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, dev));
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
    if (x.rows <= gemv_rows() && x.cols % (16 / sizeof(W)) == 0) {
      if (gemv_version_ == 1) {
        constexpr int warps = 8;
        kernels::gemv_v1<W, 8><<<(y.cols + warps - 1) / warps, 32 * warps, 0, stream_>>>(x.data, w, y.data, x.rows, x.cols,
                                                                                        y.cols, accumulate);
        LCKV_CUDA_CHECK_LAUNCH("gemv_v1");
      } else if (x.rows <= 1) {
        gemv<W, 1>(x, w, y, accumulate);
      } else if (x.rows <= 2) {
        gemv<W, 2>(x, w, y, accumulate);
      } else if (x.rows <= 4) {
        gemv<W, 4>(x, w, y, accumulate);
      } else {
        gemv<W, 8>(x, w, y, accumulate);
      }
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

  /// Whether gate_up_swiglu fuses for this many rows (else: two linear() calls and cuda::swiglu).
  bool fuses_glu(int rows) const { return fuse_glu_ && gemv_version_ == 2 && rows <= kGemvRows; }
  void set_fuse_glu(bool on) { fuse_glu_ = on; }

  /// gate = silu(x Wg^T) * (x Wu^T): the MLP's two projections and SwiGLU in one GEMV launch
  /// (rows <= kGemvRows); otherwise two linear() calls and cuda::swiglu, `up` as scratch.
  template <StorageType W>
  void gate_up_swiglu(MatrixView<const float> x, const W* wg, const W* wu, MatrixView<float> gate, MatrixView<float> up) {
    if (x.rows == 0) return;
    if (fuses_glu(x.rows) && x.cols % (16 / sizeof(W)) == 0) {
      if (x.rows <= 1) {
        glu<W, 1>(x, wg, wu, gate);
      } else if (x.rows <= 2) {
        glu<W, 2>(x, wg, wu, gate);
      } else if (x.rows <= 4) {
        glu<W, 4>(x, wg, wu, gate);
      } else {
        glu<W, 8>(x, wg, wu, gate);
      }
      return;
    }
    linear(x, wg, gate, false);
    linear(x, wu, up, false);
    swiglu(gate, MatrixView<const float>{up.data, up.rows, up.cols}, stream_);
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

  /// 2 (default): kernels::gemv; 1: kernels::gemv_v1 for <= 8 rows (benchmarks: the old kernel on the same card).
  void set_gemv_version(int v) { gemv_version_ = v == 1 ? 1 : 2; }
  int gemv_version() const { return gemv_version_; }
  int gemv_rows() const { return gemv_version_ == 1 ? 8 : kGemvRows; }

  cublasHandle_t handle() const { return handle_; }
  const void* activation_data() const { return act_.data(); }

private:
  /// Outputs per block: the largest of 8 / 4 / 1 (4 at most for 8-row groups,
  /// for registers) that still gives >= 2 blocks per SM.
  template <StorageType W, int R>
  void gemv(MatrixView<const float> x, const W* w, MatrixView<float> y, bool accumulate) {
    const int groups = (x.rows + R - 1) / R;
    const std::int64_t want = 2ll * num_sms_;
    auto tiles = [&](int to) { return static_cast<std::int64_t>((y.cols + to - 1) / to) * groups; };
    if constexpr (R < 8) {
      if (tiles(8) >= want) {
        launch_gemv<W, R, 8>(x, w, y, groups, tiles(8), accumulate);
        return;
      }
    }
    if (tiles(4) >= want) {
      launch_gemv<W, R, 4>(x, w, y, groups, tiles(4), accumulate);
    } else {
      launch_gemv<W, R, 1>(x, w, y, groups, tiles(1), accumulate);
    }
  }
  template <StorageType W, int R>
  void glu(MatrixView<const float> x, const W* wg, const W* wu, MatrixView<float> y) {
    const int groups = (x.rows + R - 1) / R;
    const std::int64_t want = 2ll * num_sms_;
    auto tiles = [&](int ty) { return static_cast<std::int64_t>((y.cols + ty - 1) / ty) * groups; };
    if constexpr (R < 8) {
      if (tiles(4) >= want) {
        launch_gemv<W, R, 8, true>(x, wg, y, groups, tiles(4), false, wu);
        return;
      }
    }
    if (tiles(2) >= want) {
      launch_gemv<W, R, 4, true>(x, wg, y, groups, tiles(2), false, wu);
    } else {
      launch_gemv<W, R, 2, true>(x, wg, y, groups, tiles(1), false, wu);
    }
  }
  template <StorageType W, int R, int TO, bool GLU = false>
  void launch_gemv(MatrixView<const float> x, const W* w, MatrixView<float> y, int groups, std::int64_t blocks,
                   bool accumulate, const W* w2 = nullptr) {
    kernels::gemv<W, R, TO, GLU><<<static_cast<unsigned>(blocks), 256, 0, stream_>>>(x.data, w, y.data, x.rows, x.cols,
                                                                                       y.cols, groups, accumulate, w2);
    LCKV_CUDA_CHECK_LAUNCH("gemv");
  }

  cublasHandle_t handle_ = nullptr;
  int num_sms_ = 1;
  int gemv_version_ = 2;
  bool fuse_glu_ = true;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer<unsigned char> workspace_;
  DeviceBuffer<unsigned char> act_;
};

}  // namespace lckv::cuda
