#pragma once
/// \file gemm_tc.cuh
/// A tensor-core "skinny" GEMM for decode batches of up to kSkinnyMaxRows rows:
/// y (+)= x W^T with x fp32 [rows, in], W [out, in] row-major in bf16 or fp16,
/// y fp32 [rows, out], fp32 accumulation; x is rounded to the weight type on the
/// way into the tensor cores (round to nearest, like the cuBLAS path).
///
/// At these batch sizes the GEMM is bound by streaming W once, so the design
/// keeps the weight stream deep and everything else off it:
///   - a block owns kSkinnyTileM consecutive rows of W (output features) and all
///     batch rows; grid = tiles x splits, where splits cut `in` (split-K) when
///     there are too few tiles to fill the SMs;
///   - weight tiles [128 x 64] and fp32 x tiles [rows x 64] stream through
///     shared memory with cp.async.cg in a 3- or 4-stage pipeline; W is the mma's A
///     operand (ldmatrix from XOR-swizzled rows), x the B operand (rounded to
///     16 bits while building the fragment, so no separate rounding pass);
///   - 8 warps = 4 (features, 32 each) x 2 (k16 steps of the tile), the two k
///     halves summed in shared memory at the end;
///   - split-K is deterministic: every split stores its partial tile, the last
///     split of a tile to finish (a per-tile counter) sums them in split order
///     and runs the epilogue, then re-arms the counter for the next launch.
/// GLU: a tile is 64 rows of Wg and the same 64 rows of Wu; the epilogue writes
/// y = silu(x Wg^T) * (x Wu^T) (the MLP's gate, up and SwiGLU in one launch).

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "lckv/core/buffer.hpp"
#include "lckv/core/error.hpp"
#include "lckv/cuda/device_memory.cuh"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/launch.cuh"
#include "lckv/cuda/mma.cuh"

namespace lckv::cuda {

/// Most batch rows one skinny launch takes (larger batches: cuBLAS).
constexpr int kSkinnyMaxRows = 128;
/// Rows of W (before GLU pairing) per block.
constexpr int kSkinnyTileM = 128;

namespace kernels {

namespace skinny {

constexpr int kThreads = 256;
constexpr int kTileK = 64;                         // k per pipeline stage
constexpr int kWarpsK = 2;                         // warps splitting a stage's four k16 steps
constexpr int kWarpM = kSkinnyTileM / 4;           // features per warp (two m16 tiles)
constexpr int kWStageBytes = kSkinnyTileM * kTileK * 2;  // 128 B per W row, XOR-swizzled 16-byte chunks
constexpr int kXStride = kTileK + 8;               // floats per x row: float2 fragment loads hit 32 distinct banks
constexpr int kCStride = kSkinnyTileM + 4;         // floats per row of the epilogue tile: conflict-free fragment stores

/// Pipeline depth: 3 stages from 64 rows on, so that two blocks (16 warps) still fit on an SM.
__host__ __device__ constexpr int stages(int nt) { return nt >= 8 ? 3 : 4; }

/// Shared memory of one launch with NT groups of 8 batch rows.
__host__ __device__ constexpr int smem_bytes(int nt) {
  const int pipe = stages(nt) * (kWStageBytes + nt * 8 * kXStride * 4);
  const int epi = nt * 8 * kCStride * 4;
  return pipe > epi ? pipe : epi;
}

/// The m16k16 A fragment (a0..a7 as four b32) of rows [row0, row0 + 16), k16 step `ks`, of a swizzled W stage.
__device__ __forceinline__ void load_a(const unsigned char* ws, int row0, int ks, int lane, unsigned (&a)[4]) {
  // Lanes 0-15 address rows 0-15 at k 0-7, lanes 16-31 the same rows at k 8-15: matrices 0..3 = a0a1, a2a3, a4a5, a6a7.
  const int r = row0 + (lane & 15);
  const int chunk = (ks * 2 + (lane >> 4)) ^ (r & 7);
  ptx::ldmatrix_x4(a, ptx::smem_address(ws + r * (kTileK * 2) + chunk * 16));
}

}  // namespace skinny

/// y[r, o] (+)= sum_i x[r, i] W[o, i] for r < rows <= NT * 8 (see the file comment).
/// x: [rows, in] fp32; w (and w2 for GLU): [out, in]; y: [rows, out].
/// Grid: tiles * splits blocks, the splits of a tile adjacent. With splits > 1,
/// `partials` holds [tiles * splits][rows][kSkinnyTileM] floats and `counters`
/// one zero-initialised counter per tile (left at zero again on exit).
template <class W, int NT, bool GLU>
__global__ void __launch_bounds__(skinny::kThreads) skinny_gemm(const float* __restrict__ x, const W* __restrict__ w,
                                                                const W* __restrict__ w2, float* __restrict__ y,
                                                                float* __restrict__ partials, unsigned* __restrict__ counters,
                                                                int rows, int in, int out, int splits, bool accumulate) {
  using namespace skinny;
  constexpr int BM = kSkinnyTileM;
  constexpr int TY = GLU ? BM / 2 : BM;  // outputs of y per tile
  constexpr int XStageBytes = NT * 8 * kXStride * 4;
  constexpr int StageBytes = kWStageBytes + XStageBytes;
  constexpr int kStages = stages(NT);
  extern __shared__ __align__(128) unsigned char smem[];

  pdl::allow_next();

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp % 4, wk = warp / 4;
  const int g = lane >> 2, t = lane & 3;
  const int tile = static_cast<int>(blockIdx.x) / splits, split = static_cast<int>(blockIdx.x) % splits;
  const int o0 = tile * TY;
  const int ktiles = (in + kTileK - 1) / kTileK;
  const int kbeg = static_cast<int>(static_cast<std::int64_t>(ktiles) * split / splits);
  const int nk = static_cast<int>(static_cast<std::int64_t>(ktiles) * (split + 1) / splits) - kbeg;

  // Stage `j` (k-tile kbeg + j) of W: 1024 16-byte chunks, four per thread, a row's 8 chunks in 8 consecutive threads.
  auto load_w = [&](int j) {
    unsigned char* dst = smem + (j % kStages) * StageBytes;
    const int k0 = (kbeg + j) * kTileK;
#pragma unroll
    for (int i = 0; i < kWStageBytes / 16 / kThreads; ++i) {
      const int c = tid + i * kThreads, r = c >> 3, kc = c & 7;
      const int o = o0 + (GLU && r >= TY ? r - TY : r);
      const W* src = GLU && r >= TY ? w2 : w;
      const int k = k0 + kc * 8;
      const bool ok = o < out && k < in;
      ptx::cp_async_16(ptx::smem_address(dst + r * (kTileK * 2) + ((kc ^ (r & 7)) * 16)),
                       ok ? src + static_cast<std::int64_t>(o) * in + k : src, ok);
    }
  };
  // Stage `j` of x: NT * 8 rows of 16 chunks (4 floats each), zeros past `rows` and `in`.
  auto load_x = [&](int j) {
    float* dst = reinterpret_cast<float*>(smem + (j % kStages) * StageBytes + kWStageBytes);
    const int k0 = (kbeg + j) * kTileK;
    for (int c = tid; c < NT * 8 * (kTileK / 4); c += kThreads) {
      const int r = c / (kTileK / 4), kc = c % (kTileK / 4);
      const int k = k0 + kc * 4;
      const bool ok = r < rows && k < in;
      ptx::cp_async_16(ptx::smem_address(dst + r * kXStride + kc * 4), ok ? x + static_cast<std::int64_t>(r) * in + k : x, ok);
    }
  };

  // Weights are immutable: start streaming them before waiting for the previous kernel.
#pragma unroll
  for (int j = 0; j < kStages - 1; ++j)
    if (j < nk) load_w(j);
  pdl::wait();
  // Group j holds x stage j (group 0 also the early weight stages), so group j done => stage j is in.
#pragma unroll
  for (int j = 0; j < kStages - 1; ++j) {
    if (j < nk) load_x(j);
    ptx::cp_async_commit();
  }

  float acc[2][NT][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;

  for (int j = 0; j < nk; ++j) {
    ptx::cp_async_wait<kStages - 2>();
    __syncthreads();  // stage j visible to all; stage j - 1 (overwritten next) consumed by all
    const int next = j + kStages - 1;
    if (next < nk) {
      load_w(next);
      load_x(next);
    }
    ptx::cp_async_commit();  // possibly empty: keeps one group per iteration

    const unsigned char* ws = smem + (j % kStages) * StageBytes;
    const float* xs = reinterpret_cast<const float*>(ws + kWStageBytes);
#pragma unroll
    for (int s = 0; s < kTileK / 16 / kWarpsK; ++s) {
      const int ks = wk + s * kWarpsK;
      unsigned a[2][4];
      load_a(ws, wm * kWarpM, ks, lane, a[0]);
      load_a(ws, wm * kWarpM + 16, ks, lane, a[1]);
      // No skipping of the bucket's padding rows (zeros in shared memory): branch-free, the loads
      // of all groups can be in flight together, which matters more than the idle tensor cores.
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        // B fragment: b0b1 = x[n = g][k = 2t, 2t + 1], b2b3 = the same at k + 8.
        const float* xr = xs + (nt * 8 + g) * kXStride + ks * 16 + 2 * t;
        const float2 x0 = *reinterpret_cast<const float2*>(xr), x1 = *reinterpret_cast<const float2*>(xr + 8);
        const std::uint32_t b0 = ptx::pack2<W>(x0.x, x0.y), b1 = ptx::pack2<W>(x1.x, x1.y);
        ptx::mma_16816<W>(acc[0][nt], a[0], b0, b1);
        ptx::mma_16816<W>(acc[1][nt], a[1], b0, b1);
      }
    }
  }
  ptx::cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory becomes the epilogue tile

  // c[n][m]: batch row n, local feature m. The two k halves add in a fixed order.
  float* c = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int pass = 0; pass < kWarpsK; ++pass) {
    if (wk == pass) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          if (nt * 8 < rows) {
            // Accumulator: c0, c1 at (feature g, rows 2t, 2t + 1); c2, c3 at feature g + 8.
            const int m = wm * kWarpM + mt * 16 + g, n = nt * 8 + 2 * t;
            float* p = c + n * kCStride + m;
            const float* v = acc[mt][nt];
            if (pass == 0) {
              p[0] = v[0];
              p[kCStride] = v[1];
              p[8] = v[2];
              p[kCStride + 8] = v[3];
            } else {
              p[0] += v[0];
              p[kCStride] += v[1];
              p[8] += v[2];
              p[kCStride + 8] += v[3];
            }
          }
        }
    }
    __syncthreads();
  }

  if (splits > 1) {
    // Partials move as float4 (4 consecutive features of one row), through L2 only.
    const int tile_vecs = rows * (BM / 4);
    float4* mine = reinterpret_cast<float4*>(partials) + (static_cast<std::int64_t>(tile) * splits + split) * tile_vecs;
    auto cv = [&](int e) -> float4& { return *reinterpret_cast<float4*>(c + (e / (BM / 4)) * kCStride + (e % (BM / 4)) * 4); };
    for (int e = tid; e < tile_vecs; e += kThreads) __stcg(mine + e, cv(e));
    __threadfence();  // the partial is visible device-wide before the counter says so
    __syncthreads();
    __shared__ int last;
    if (tid == 0) {
      last = atomicAdd(counters + tile, 1u) == static_cast<unsigned>(splits - 1);
      if (last) counters[tile] = 0;  // every split has counted: re-arm for the next launch
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const float4* first = reinterpret_cast<const float4*>(partials) + static_cast<std::int64_t>(tile) * splits * tile_vecs;
    for (int e = tid; e < tile_vecs; e += kThreads) {
      float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 8
      for (int k = 0; k < splits; ++k) {
        const float4 v = __ldcg(first + static_cast<std::int64_t>(k) * tile_vecs + e);
        s.x += v.x;
        s.y += v.y;
        s.z += v.z;
        s.w += v.w;
      }
      cv(e) = s;
    }
    __syncthreads();
  }

  for (int e = tid; e < rows * TY; e += kThreads) {
    const int n = e / TY, m = e % TY, o = o0 + m;
    if (o < out) {
      const float v = c[n * kCStride + m];
      float* yo = y + static_cast<std::int64_t>(n) * out + o;
      if constexpr (GLU) {
        *yo = v / (1.0f + expf(-v)) * c[n * kCStride + m + TY];
      } else {
        *yo = accumulate ? *yo + v : v;
      }
    }
  }
}

}  // namespace kernels

/// Split-K scratch of the skinny GEMM: partial tiles and per-tile counters
/// (zeroed here, re-armed by the kernel), allocated once so launches can be
/// captured into CUDA Graphs. Launches that share one workspace must be
/// ordered (one stream).
class SkinnyWorkspace {
public:
  explicit SkinnyWorkspace(int num_sms)
      : num_sms_(num_sms),
        // A launch uses at most blocks_per_sm * num_sms blocks of rows <= 8 * NT, and blocks_per_sm * 8 * NT <= 128.
        partials_(static_cast<std::size_t>(num_sms) * kSkinnyTileM * kSkinnyMaxRows),
        counters_(static_cast<std::size_t>(num_sms) * 4) {}
  int num_sms() const { return num_sms_; }
  float* partials() { return partials_.data(); }
  std::size_t partial_floats() const { return partials_.size(); }
  unsigned* counters() { return counters_.data(); }
  std::size_t num_counters() const { return counters_.size(); }

private:
  int num_sms_;
  DeviceBuffer<float> partials_;
  DeviceBuffer<unsigned> counters_;
};

namespace detail {

/// Opts the kernel into its shared memory (once) and returns how many of its blocks fit on an SM.
template <class W, int NT, bool GLU>
int skinny_blocks_per_sm() {
  static const int n = [] {
    const auto k = kernels::skinny_gemm<W, NT, GLU>;
    const int smem = kernels::skinny::smem_bytes(NT);
    LCKV_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int b = 0;
    LCKV_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, k, kernels::skinny::kThreads, smem));
    return b > 0 ? b : 1;
  }();
  return n;
}

template <class W, int NT, bool GLU>
void skinny_launch(MatrixView<const float> x, const W* w, const W* w2, MatrixView<float> y, bool accumulate,
                   SkinnyWorkspace& ws, cudaStream_t s) {
  constexpr int TY = GLU ? kSkinnyTileM / 2 : kSkinnyTileM;
  const int tiles = (y.cols + TY - 1) / TY;
  const int ktiles = (x.cols + kernels::skinny::kTileK - 1) / kernels::skinny::kTileK;
  // Split `in` only while there are fewer tiles than block slots: splits * tiles <= slots, at least
  // four k-tiles per split (the partials' traffic stays well under the weights'), and the partials
  // within the workspace.
  const int slots = skinny_blocks_per_sm<W, NT, GLU>() * ws.num_sms();
  int splits = 1;
  if (tiles * 2 <= slots && static_cast<std::size_t>(tiles) <= ws.num_counters()) {
    splits = std::min(slots / tiles, std::max(1, ktiles / 4));
    const std::size_t per_split = static_cast<std::size_t>(tiles) * x.rows * kSkinnyTileM;
    splits = static_cast<int>(std::min<std::size_t>(splits, ws.partial_floats() / per_split));
    splits = std::max(splits, 1);
  }
  launch("skinny_gemm", kernels::skinny_gemm<W, NT, GLU>, dim3(static_cast<unsigned>(tiles * splits)),
         dim3(kernels::skinny::kThreads), static_cast<std::size_t>(kernels::skinny::smem_bytes(NT)), s, x.data, w, w2,
         y.data, ws.partials(), ws.counters(), x.rows, x.cols, y.cols, splits, accumulate);
}

template <class W, bool GLU>
void skinny_dispatch(MatrixView<const float> x, const W* w, const W* w2, MatrixView<float> y, bool accumulate,
                     SkinnyWorkspace& ws, cudaStream_t s) {
  static_assert(std::is_same_v<W, __nv_bfloat16> || std::is_same_v<W, __half>, "skinny GEMM: 16-bit weights only");
  if (x.rows == 0) return;
  if (x.rows < 0 || x.rows > kSkinnyMaxRows)
    throw InvalidArgument("skinny GEMM: " + std::to_string(x.rows) + " rows (at most " +
                          std::to_string(kSkinnyMaxRows) + ")");
  auto misaligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 != 0; };
  if (x.cols % 8 != 0 || y.rows != x.rows || misaligned(x.data) || misaligned(w) || (GLU && misaligned(w2)))
    throw InvalidArgument("skinny GEMM: needs in % 8 == 0, 16-byte aligned x and W, and as many rows in y as in x (in " +
                          std::to_string(x.cols) + ", rows " + std::to_string(x.rows) + " vs " + std::to_string(y.rows) +
                          ")");
  // Buckets of 8-row groups: the kernel skips the groups past `rows` at run time.
  if (x.rows <= 8) skinny_launch<W, 1, GLU>(x, w, w2, y, accumulate, ws, s);
  else if (x.rows <= 16) skinny_launch<W, 2, GLU>(x, w, w2, y, accumulate, ws, s);
  else if (x.rows <= 32) skinny_launch<W, 4, GLU>(x, w, w2, y, accumulate, ws, s);
  else if (x.rows <= 64) skinny_launch<W, 8, GLU>(x, w, w2, y, accumulate, ws, s);
  else skinny_launch<W, 16, GLU>(x, w, w2, y, accumulate, ws, s);
}

}  // namespace detail

/// y (+)= x W^T on tensor cores. x: [rows, in] fp32, rows <= kSkinnyMaxRows, in % 8 == 0;
/// w: [out, in] bf16 or fp16; y: [rows, out]. `accumulate`: y += x W^T (the residual add).
template <class W>
void skinny_linear(MatrixView<const float> x, const W* w, MatrixView<float> y, bool accumulate, SkinnyWorkspace& ws,
                   cudaStream_t s) {
  detail::skinny_dispatch<W, false>(x, w, nullptr, y, accumulate, ws, s);
}

/// y = silu(x Wg^T) * (x Wu^T) in one launch. x: [rows, in]; wg, wu: [out, in]; y: [rows, out].
template <class W>
void skinny_gate_up_swiglu(MatrixView<const float> x, const W* wg, const W* wu, MatrixView<float> y, SkinnyWorkspace& ws,
                           cudaStream_t s) {
  detail::skinny_dispatch<W, true>(x, wg, wu, y, false, ws, s);
}

}  // namespace lckv::cuda
