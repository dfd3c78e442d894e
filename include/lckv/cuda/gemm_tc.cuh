#pragma once
/// \file gemm_tc.cuh
/// The tensor-core decode GEMM for 1-64 rows ("skinny": few rows, so streaming
/// the weights once is the cost): y (+)= x W^T with W [out, in] row-major in bf16
/// or fp16, x [rows, in] fp32 (rounded to W's type on the way into the tensor
/// cores) or already in W's type, fp32 accumulation. It takes the targets, norm
/// and epilogues of the 1-8-row GEMV (linear_io.cuh), so a decode layer needs no
/// launches of its own for RMSNorm, RoPE or SwiGLU:
///   - RMSNorm folded in: the norm weight scales x as it enters the tensor cores,
///     the block sums x's squares from the same shared-memory tiles, and 1 / rms
///     scales the result (it is one factor per row, so it commutes with the sums);
///   - up to three matrices per launch (q, k, v) and RopeStore (RoPE, K/V into
///     the cache slot); or GLU: silu(x Wg^T) * (x Wu^T), written in fp32 or
///     rounded to W's type as the down projection's input.
///
/// Design:
///   - a block owns kSkinnyTileM = 128 output features (GLU: 64 rows of Wg and the
///     same 64 of Wu) and a group of 16 or 32 rows (SkinnyOptions::group_rows); the
///     groups of a tile are adjacent blocks, so all but the first read its weights from L2;
///   - weight tiles [128 x 64] and x tiles [16 or 32 x 64] stream through shared memory with
///     cp.async in a 4- or 5-stage pipeline (kStages), the first weight stages issued before
///     waiting for the previous kernel (launch.cuh); fp32 x is rounded (and normed) once per stage
///     into a 16-bit tile. W is the mma's A operand, x the B operand, both read with
///     ldmatrix from XOR-swizzled 128-byte rows;
///   - 8 warps = 4 (32 features each) x 2 (k16 steps of a stage), the two k halves
///     summed in shared memory;
///   - split-K inside a thread-block cluster: the S blocks of a (tile, group) each take
///     1/S of `in`, then each sums a 1/S share of the rows over the cluster's shared
///     memory (DSMEM, in rank order: deterministic) and runs the epilogue for them. No
///     partials in global memory, no counters, no second kernel. One cluster barrier
///     precedes the sums; the second (no block may leave while others read its shared
///     memory) is arrived at after them, relaxed, and waited on at the end, so the epilogue
///     runs in between. What the epilogue reads from global memory (the residual of y +=, RoPE's
///     row positions) is fetched before the reduction, not after it.

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "lckv/core/buffer.hpp"
#include "lckv/core/error.hpp"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/error.cuh"
#include "lckv/cuda/launch.cuh"
#include "lckv/cuda/linear_io.cuh"
#include "lckv/cuda/mma.cuh"
#include "lckv/cuda/ops.cuh"

namespace lckv::cuda {

/// Most rows one skinny launch takes (above: cuBLAS).
constexpr int kSkinnyMaxRows = 64;
/// Output features per tile (before GLU pairing); RopeStore needs head_dim to divide it.
constexpr int kSkinnyTileM = 128;
/// Rows per block: up to 16 rows one block of 16 per tile; above, blocks of 32 rows, the groups
/// of a tile side by side so that all but the first find its weights in L2. A 32-row block does
/// twice the tensor-core work per weight byte it copies, and a batch of 32 reads each weight tile
/// once instead of once from DRAM and once from L2.
constexpr int kSkinnyGroupRowsSmall = 16;
constexpr int kSkinnyGroupRowsLarge = 32;
/// Largest split-K cluster the launcher picks by itself (the portable cluster size).
constexpr int kSkinnyMaxSplits = 8;

/// Launch choices of the skinny GEMM.
struct SkinnyOptions {
  int num_sms = 1;  ///< device_sms()
  int splits = 0;   ///< blocks (a cluster) per tile and row group; 0: skinny_splits' choice
  int group_rows = 0;  ///< rows per block, 16 or 32; 0: 16 up to 16 rows, else 32
};

/// The split-K cluster size for `blocks` (tile, row group) pairs and `ktiles` k-tiles: the
/// fewest that give every SM a block, at most kSkinnyMaxSplits, each keeping a k-tile. (Trimming
/// it so that the grid stays within one block per SM, 120 rather than 140 blocks for q / k / v
/// at 32 rows, made the step 2-3% slower.)
inline int skinny_splits(int blocks, int ktiles, const SkinnyOptions& options) {
  if (blocks < 1) return 1;  // nothing to launch
  if (options.splits > 0) return std::max(1, std::min({options.splits, ktiles, kMaxClusterBlocks}));
  const int splits = std::min(kSkinnyMaxSplits, (options.num_sms + blocks - 1) / blocks);
  return std::max(1, std::min(splits, ktiles));
}

/// The rows per block a launch of `rows` rows uses under `options`; throws InvalidArgument for a
/// forced value other than 16 or 32.
inline int skinny_group_rows(int rows, const SkinnyOptions& options) {
  if (options.group_rows == kSkinnyGroupRowsSmall || options.group_rows == kSkinnyGroupRowsLarge)
    return options.group_rows;
  if (options.group_rows != 0)
    throw InvalidArgument("skinny GEMM: group_rows must be 0 (the launcher's choice), " +
                          std::to_string(kSkinnyGroupRowsSmall) + " or " + std::to_string(kSkinnyGroupRowsLarge) +
                          ", got " + std::to_string(options.group_rows));
  return rows <= kSkinnyGroupRowsSmall ? kSkinnyGroupRowsSmall : kSkinnyGroupRowsLarge;
}

/// One launch's operands. x: [rows, in]; targets as in the GEMV (tile_end filled by the launcher).
template <class W, class X>
struct SkinnyArgs {
  const X* x = nullptr;
  LinearTargets<W> targets;
  const W* up = nullptr;  ///< GLU: Wu, [out, in] (targets.w[0] is Wg)
  W* out16 = nullptr;     ///< GLU: the result rounded to W here, [rows, out], instead of targets.y[0]
  InputNorm<W> norm;
  int rows = 0, in = 0, splits = 1, groups = 1;  ///< groups: of the kernel's GR rows
  bool accumulate = false;  ///< plain epilogue: y += result
};

namespace kernels {

namespace skinny {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kTileK = 64;                               // k per pipeline stage
constexpr int kWarpsK = 2;                               // warps splitting a stage's four k16 steps
constexpr int kWarpM = kSkinnyTileM / 4;                 // features per warp (two m16 tiles)
constexpr int kWStageBytes = kSkinnyTileM * kTileK * 2;  // 128 B per W row, XOR-swizzled 16-byte chunks
constexpr int kCStride = kSkinnyTileM + 4;               // floats per row of the epilogue tile
constexpr int kNormStageBytes = kTileK * 2;              // the norm weight's slice of a stage

template <class X, int GR>
constexpr int kXStageBytes = GR * kTileK * static_cast<int>(sizeof(X));
template <class X, bool NORM, int GR>
constexpr int kStageBytes = kWStageBytes + kXStageBytes<X, GR> + (NORM ? kNormStageBytes : 0);
/// Pipeline depth: as many stages as fit in kPipelineBytes, 4 or 5. Two blocks per SM must fit
/// (H100: 227 KB less the static shared memory and 1 KB per block), and a fifth stage lets more
/// of the weights stream in before the previous kernel ends. Deeper at one block per SM (5-8
/// stages) was slower: with so little work per byte a block is bound by latency, and two blocks
/// per SM hide it better.
constexpr int kPipelineBytes = 104 * 1024;
template <class X, bool NORM, int GR>
constexpr int kStages = std::clamp(kPipelineBytes / kStageBytes<X, NORM, GR>, 4, 5);
/// Dynamic shared memory of a block: the pipeline, reused as the epilogue tile and behind it the
/// residual of the plain epilogue.
template <class X, bool NORM, int GR>
constexpr int kSmemBytes =
    std::max(kStages<X, NORM, GR> * kStageBytes<X, NORM, GR>, GR * (kCStride + kSkinnyTileM) * 4);

__device__ __forceinline__ float add(float a, float b) { return a + b; }
__device__ __forceinline__ float4 add(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

/// The sum over the cluster's S blocks of the value at `p` in each one's shared memory, in rank
/// order (deterministic), with up to kSkinnyMaxSplits remote loads in flight before the first add.
template <class V>
__device__ __forceinline__ V cluster_sum(const cooperative_groups::cluster_group& cluster, V* p, int S) {
  V sum{};
  for (int r0 = 0; r0 < S; r0 += kSkinnyMaxSplits) {
    V v[kSkinnyMaxSplits];
#pragma unroll
    for (int u = 0; u < kSkinnyMaxSplits; ++u)
      if (r0 + u < S) v[u] = *cluster.map_shared_rank(p, r0 + u);
#pragma unroll
    for (int u = 0; u < kSkinnyMaxSplits; ++u)
      if (r0 + u < S) sum = add(sum, v[u]);
  }
  return sum;
}

/// Byte offset of 16-byte chunk `chunk` of row `r` in a swizzled tile of 128-byte rows.
__device__ __forceinline__ int swizzled(int r, int chunk) { return r * (kTileK * 2) + ((chunk ^ (r & 7)) * 16); }

/// The m16k16 A fragment (a0..a7 as four b32) of rows [row0, row0 + 16), k16 step `ks`, of a W stage.
__device__ __forceinline__ void load_a(const unsigned char* ws, int row0, int ks, int lane, unsigned (&a)[4]) {
  // Lanes 0-15 address rows 0-15 at k 0-7, lanes 16-31 the same rows at k 8-15: matrices 0..3 = a0a1, a2a3, a4a5, a6a7.
  ptx::ldmatrix_x4(a, ptx::smem_address(ws + swizzled(row0 + (lane & 15), ks * 2 + (lane >> 4))));
}

/// B fragments of two n8 tiles (rows [row0, row0 + 16) of a 16-bit x stage), k16 step `ks`:
/// b[0], b[1] for rows row0.., b[2], b[3] for rows row0 + 8...
__device__ __forceinline__ void load_b_pair(const unsigned char* xs, int row0, int ks, int lane, unsigned (&b)[4]) {
  // Matrix i = lane / 8: rows + (i / 2) * 8, k chunk ks * 2 + i % 2 (x is [n][k], so no transpose).
  const int i = lane >> 3;
  ptx::ldmatrix_x4(b, ptx::smem_address(xs + swizzled(row0 + (i >> 1) * 8 + (lane & 7), ks * 2 + (i & 1))));
}

}  // namespace skinny

/// y[r, o] (+)= sum_i xn[r, i] W[o, i], xn = x or RMSNorm(x) (see the file comment). GR rows per
/// block. Grid: tiles * groups * splits blocks in clusters of `splits`;
/// block = (tile * groups + group) * splits + split.
template <class W, class X, int GR, bool GLU, bool NORM, class Epi>
__global__ void __launch_bounds__(skinny::kThreads, 2) skinny_gemm(SkinnyArgs<W, X> a, Epi epi) {
  using namespace skinny;
  constexpr bool ROPE = !std::is_same_v<Epi, PlainStore>;
  constexpr bool X16 = !std::is_same_v<X, float>;
  constexpr int NT = GR / 8;  // n8 tiles of a block's rows
  static_assert(!X16 || std::is_same_v<X, W>, "16-bit x must have the weights' type");
  static_assert(!(X16 && NORM) && !(GLU && ROPE) && NT % 2 == 0);
  static_assert(kWStageBytes / 16 / kThreads == 4 && GR * kTileK / 4 % kThreads == 0,
                "the copy and conversion mappings below assume 4 W chunks and 4k x elements per thread");
  constexpr int XStageBytes = kXStageBytes<X, GR>;
  constexpr int StageBytes = kStageBytes<X, NORM, GR>;
  constexpr int Stages = kStages<X, NORM, GR>;
  constexpr int BM = kSkinnyTileM;
  constexpr int TY = GLU ? BM / 2 : BM;  // outputs of y per tile
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ float row_ss[GR];  // NORM: sums of squares of x per row
  __shared__ float inv_freq[ROPE ? kSkinnyTileM / 2 : 1];  // RoPE's frequencies (head_dim divides the tile)
  __shared__ RowInfo row_info[ROPE ? GR : 1];               // RoPE: the group's rows' (seq, pos)

  pdl::allow_next();

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp % 4, wk = warp / 4;
  const int g = lane >> 2, t = lane & 3;
  const int S = a.splits;
  const int split = static_cast<int>(blockIdx.x) % S, rest = static_cast<int>(blockIdx.x) / S;
  const int tile = rest / a.groups, r0 = rest % a.groups * GR;  // r0: the group's first row
  // This tile's matrix (unrolled selects: indexing the parameter struct would copy it to local memory).
  const W* w = a.targets.w[0];
  float* y = a.targets.y[0];
  int out = a.targets.out[0], local = tile, target = 0;
#pragma unroll
  for (int k = 1; k < LinearTargets<W>::kMax; ++k)
    if (k < a.targets.count && tile >= a.targets.tile_end[k - 1]) {
      w = a.targets.w[k];
      y = a.targets.y[k];
      out = a.targets.out[k];
      local = tile - a.targets.tile_end[k - 1];
      target = k;
    }
  const int o0 = local * TY, in = a.in, rows = min(GR, a.rows - r0);
  const X* x = a.x + static_cast<std::int64_t>(r0) * in;
  const int ktiles = (in + kTileK - 1) / kTileK;
  const int kbeg = static_cast<int>(static_cast<std::int64_t>(ktiles) * split / S);
  const int nk = static_cast<int>(static_cast<std::int64_t>(ktiles) * (split + 1) / S) - kbeg;

  // Each thread copies the same chunks of every stage, so their addresses are worked out once.
  // W: 1024 16-byte chunks per stage, four per thread at rows r_w + 32 i (same swizzle), chunk kc_w.
  const int r_w = tid >> 3, kc_w = tid & 7;
  const W* w_src[4];
  bool w_ok[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = r_w + 32 * i, o = o0 + (GLU && r >= TY ? r - TY : r);
    w_ok[i] = o < out;
    w_src[i] = (GLU && r >= TY ? a.up : w) + static_cast<std::int64_t>(w_ok[i] ? o : 0) * in + kc_w * 8;
  }
  const int w_dst = swizzled(r_w, kc_w);
  // x: 16-byte chunks (fp32: 16 per row; 16-bit: 8 per row), at rows r_x + kXRowsPerPass * i.
  constexpr int kXChunks = kTileK * static_cast<int>(sizeof(X)) / 16;
  constexpr int kXPer = 16 / static_cast<int>(sizeof(X));  // elements per chunk
  constexpr int kXRowsPerPass = kThreads / kXChunks;
  constexpr int kXCopies = (GR + kXRowsPerPass - 1) / kXRowsPerPass;
  const int r_x = tid / kXChunks, kc_x = tid % kXChunks;
  bool x_thread[kXCopies], x_row[kXCopies];
  const X* x_src[kXCopies];
  int x_dst[kXCopies];
#pragma unroll
  for (int i = 0; i < kXCopies; ++i) {
    const int r = r_x + kXRowsPerPass * i;
    x_thread[i] = r < GR;
    x_row[i] = r < rows;
    x_src[i] = x + static_cast<std::int64_t>(x_row[i] ? r : 0) * in + kc_x * kXPer;
    x_dst[i] = X16 ? swizzled(r, kc_x) : (r * kTileK + kc_x * 4) * 4;
  }

  // Stage `j` (k-tile kbeg + j) of the immutable operands: W and the norm weight's 64 elements.
  auto load_w = [&](int j) {
    unsigned char* dst = smem + (j % Stages) * StageBytes;
    const int k0 = (kbeg + j) * kTileK;
    const bool k_ok = k0 + kc_w * 8 < in;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool ok = w_ok[i] && k_ok;
      ptx::cp_async_16(ptx::smem_address(dst + w_dst + i * 32 * kTileK * 2), ok ? w_src[i] + k0 : w_src[i], ok);
    }
    if constexpr (NORM) {
      if (tid < kNormStageBytes / 16) {
        const int k = k0 + tid * 8;
        ptx::cp_async_16(ptx::smem_address(dst + kWStageBytes + XStageBytes + tid * 16),
                         k < in ? a.norm.weight + k : a.norm.weight, k < in);
      }
    }
  };
  // Stage `j` of x: GR rows, zeros past `rows` and `in`.
  auto load_x = [&](int j) {
    const int k0 = (kbeg + j) * kTileK;
    unsigned char* dst = smem + (j % Stages) * StageBytes + kWStageBytes;
#pragma unroll
    for (int i = 0; i < kXCopies; ++i) {
      if (!x_thread[i]) continue;
      const bool ok = x_row[i] && k0 + kc_x * kXPer < in;
      ptx::cp_async_16(ptx::smem_address(dst + x_dst[i]), ok ? x_src[i] + k0 : x_src[i], ok);
    }
  };

  // Weights are immutable: start streaming them before waiting for the previous kernel.
#pragma unroll
  for (int j = 0; j < Stages - 1; ++j)
    if (j < nk) load_w(j);
  if constexpr (ROPE) epi.fill_inv_freq(inv_freq);  // a double pow each: off the critical path
  pdl::wait();
  // Read once here, not per output in the epilogue, where each read was a round trip to L2.
  if constexpr (ROPE)
    if (tid < rows) row_info[tid] = epi.rows[r0 + tid];
  // Group j holds x stage j (group 0 also the early weight stages), so group j done => stage j is in.
#pragma unroll
  for (int j = 0; j < Stages - 1; ++j) {
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
  // fp32 x: each stage is first rounded (NORM: scaled by the norm weight) into xb, 16-bit rows
  // swizzled like W, once per block rather than once per warp; thread tid converts elements
  // 4 * (tid % 16).. of rows tid / 16 + 16 i, and sums their squares (NORM).
  constexpr int kConvRows = GR / 16;  // rows each thread converts
  __shared__ __align__(128) unsigned char xb[X16 ? 16 : GR * kTileK * 2];
  const int r_c = tid >> 4, k_c = (tid & 15) * 4;
  float ss[kConvRows];
#pragma unroll
  for (int i = 0; i < kConvRows; ++i) ss[i] = 0.0f;

  for (int j = 0; j < nk; ++j) {
    ptx::cp_async_wait<Stages - 2>();
    __syncthreads();  // stage j visible to all; stage j - 1 (overwritten next) and xb consumed by all
    const int next = j + Stages - 1;
    if (next < nk) {
      load_w(next);
      load_x(next);
    }
    ptx::cp_async_commit();  // possibly empty: keeps one group per iteration

    const unsigned char* ws = smem + (j % Stages) * StageBytes;
    const unsigned char* xs = ws + kWStageBytes;
    if constexpr (!X16) {
#pragma unroll
      for (int i = 0; i < kConvRows; ++i) {
        const int r = r_c + 16 * i;
        float4 v = *reinterpret_cast<const float4*>(xs + (r * kTileK + k_c) * 4);
        if constexpr (NORM) {
          ss[i] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
          const W* gs = reinterpret_cast<const W*>(xs + XStageBytes) + k_c;
          v = make_float4(v.x * to_float(gs[0]), v.y * to_float(gs[1]), v.z * to_float(gs[2]), v.w * to_float(gs[3]));
        }
        const uint2 packed = make_uint2(ptx::pack2<W>(v.x, v.y), ptx::pack2<W>(v.z, v.w));
        *reinterpret_cast<uint2*>(xb + swizzled(r, k_c / 8) + (k_c % 8) * 2) = packed;
      }
      __syncthreads();  // xb holds stage j
    }
    const unsigned char* xt = X16 ? xs : xb;  // stage j of x, 16-bit, swizzled
#pragma unroll
    for (int s = 0; s < kTileK / 16 / kWarpsK; ++s) {
      const int ks = wk + s * kWarpsK;
      unsigned af[2][4];
      load_a(ws, wm * kWarpM, ks, lane, af[0]);
      load_a(ws, wm * kWarpM + 16, ks, lane, af[1]);
      // No skipping of padding rows (zeros in shared memory): branch-free.
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        unsigned b[4];
        load_b_pair(xt, np * 16, ks, lane, b);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          ptx::mma_16816<W>(acc[0][2 * np + h], af[0], b[2 * h], b[2 * h + 1]);
          ptx::mma_16816<W>(acc[1][2 * np + h], af[1], b[2 * h], b[2 * h + 1]);
        }
      }
    }
  }
  ptx::cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory becomes the epilogue tile

  // Group rows [n_begin, n_end) get this block's epilogue: all of them, or with split-K its share,
  // summed over the cluster's blocks in rank order.
  const int per = (rows + S - 1) / S;
  const int n_begin = min(rows, split * per), n_end = min(rows, n_begin + per);
  // y += result: this thread's residual entries go into the free shared memory behind the epilogue
  // tile now, so that their loads overlap the reduction instead of following it.
  constexpr bool PLAIN = !GLU && !ROPE;
  float* residual = reinterpret_cast<float*>(smem + GR * kCStride * 4);  // [(n_end - n_begin) * TY], kSmemBytes
  if constexpr (PLAIN) {
    if (a.accumulate) {
      for (int e = tid; e < (n_end - n_begin) * TY; e += kThreads) {
        const int o = o0 + e % TY;
        const float* src = y + static_cast<std::int64_t>(r0 + n_begin + e / TY) * out + o;
        ptx::cp_async_4(ptx::smem_address(residual + e), o < out ? src : y, o < out);
      }
      ptx::cp_async_commit();
    }
  }

  if constexpr (NORM) {
    // The 16 threads of a row are 16 consecutive lanes.
#pragma unroll
    for (int i = 0; i < kConvRows; ++i) {
#pragma unroll
      for (int off = 8; off > 0; off /= 2) ss[i] += __shfl_xor_sync(0xffffffffu, ss[i], off);
      if ((tid & 15) == 0) row_ss[r_c + 16 * i] = ss[i];
    }
  }
  // c[n][m]: row n, local feature m. The two k halves add in a fixed order.
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

  if (S > 1) {
    const cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every split's tile is in its shared memory
    constexpr int V4 = BM / 4;
    for (int e = tid; e < (n_end - n_begin) * V4; e += kThreads) {
      float4* p = reinterpret_cast<float4*>(c + (n_begin + e / V4) * kCStride + (e % V4) * 4);
      *p = cluster_sum(cluster, p, S);  // only this block reads or writes its rows' entries
    }
    if constexpr (NORM)
      for (int n = n_begin + tid; n < n_end; n += kThreads) row_ss[n] = cluster_sum(cluster, row_ss + n, S);
    // Done with the other blocks' shared memory. The wait is at the end: the epilogue below reads only
    // this block's rows, so it runs while the slower blocks finish their sums. The arrival is relaxed:
    // every remote value this thread loaded has been consumed by the sums above, so nothing is left
    // to order before it, and a release arrival cost ~0.7 us per launch (decode steps 1.3-3.6%,
    // docs/benchmarks-cuda.md Update 21).
    __cluster_barrier_arrive_relaxed();
    __syncthreads();  // the sums are in
  }
  if constexpr (PLAIN) ptx::cp_async_wait<0>();  // the residual (a no-op without it)

  for (int e = tid; e < (n_end - n_begin) * TY; e += kThreads) {
    const int n = n_begin + e / TY, m = e % TY, o = o0 + m;
    if (o >= out) continue;
    float scale = 1.0f;
    if constexpr (NORM) scale = 1.0f / sqrtf(row_ss[n] / static_cast<float>(in) + a.norm.eps);
    const float* cn = c + n * kCStride;
    const float v = cn[m] * scale;
    const std::int64_t yi = static_cast<std::int64_t>(r0 + n) * out + o;
    if constexpr (GLU) {
      const float h = v / (1.0f + expf(-v)) * (cn[m + TY] * scale);
      if (a.out16) a.out16[yi] = from_float<W>(h);
      else y[yi] = h;
    } else if constexpr (ROPE) {
      const int half = epi.head_dim / 2;  // a tile holds whole heads: the partner is in it
      epi.store(target, row_info[n], o, v, [&] { return cn[o % epi.head_dim < half ? m + half : m - half] * scale; },
                y + yi, epi.theta > 0.0f ? inv_freq[epi.freq_index(o)] : 0.0f);
    } else {
      y[yi] = a.accumulate ? residual[e] + v : v;
    }
  }
  if (S > 1) __cluster_barrier_wait();  // no block leaves while another still reads its shared memory
}

}  // namespace kernels

namespace detail {

template <class W, class X, int GR, bool GLU, bool NORM, class Epi>
void skinny_launch(const SkinnyArgs<W, X>& a, Epi epi, cudaStream_t s) {
  const auto kernel = kernels::skinny_gemm<W, X, GR, GLU, NORM, Epi>;
  constexpr int smem = kernels::skinny::kSmemBytes<X, NORM, GR>;
  prepare_kernel(kernel, smem, /*clusters16=*/true);
  const int blocks = a.targets.tile_end[a.targets.count - 1] * a.groups * a.splits;
  launch_clustered("skinny_gemm", kernel, dim3(static_cast<unsigned>(blocks)), static_cast<unsigned>(a.splits),
                   dim3(kernels::skinny::kThreads), static_cast<std::size_t>(smem), s, a, epi);
}

}  // namespace detail

/// Launches kernels::skinny_gemm: y_s (+)= xn W_s^T for the matrices in `targets`, xn = x or
/// RMSNorm(x; norm) (fp32 x only), stored by `epi` (PlainStore or RopeStore<Slot>). With `up`
/// the single target is the GLU's gate matrix, and `out16` (optional) takes the result rounded
/// to W instead of y. x: [rows, in], rows 1-64, in % 8 == 0, x, the weights and the norm
/// weight 16-byte aligned.
template <class W, class X, class Epi = PlainStore>
void skinny_gemm(const X* x, int rows, int in, LinearTargets<W> targets, bool accumulate, const W* up, W* out16,
                 InputNorm<W> norm, SkinnyOptions options, cudaStream_t stream, Epi epi = {}) {
  static_assert(std::is_same_v<W, __nv_bfloat16> || std::is_same_v<W, __half>, "skinny GEMM: 16-bit weights only");
  static_assert(std::is_same_v<X, float> || std::is_same_v<X, W>, "skinny GEMM: x is fp32 or of the weights' type");
  constexpr bool rope = !std::is_same_v<Epi, PlainStore>;
  const bool glu = up != nullptr, normed = norm.weight != nullptr;
  if (rows == 0) return;
  if (rows < 0 || rows > kSkinnyMaxRows || in <= 0 || in % 8 != 0 || targets.count < 1 ||
      targets.count > LinearTargets<W>::kMax)
    throw InvalidArgument("skinny GEMM: needs 1-" + std::to_string(kSkinnyMaxRows) +
                          " rows, in % 8 == 0 and 1-3 matrices (rows " + std::to_string(rows) + ", in " +
                          std::to_string(in) + ", matrices " + std::to_string(targets.count) + ")");
  check_aligned16("skinny GEMM", x, targets, up, norm.weight);
  if ((glu && (targets.count != 1 || rope)) || (out16 && !glu) || (normed && !std::is_same_v<X, float>))
    throw InvalidArgument("skinny GEMM: GLU takes one matrix and no RoPE, out16 needs GLU, the norm needs fp32 x");
  if constexpr (rope) {
    epi.check("skinny GEMM", targets);
    if (kSkinnyTileM % epi.head_dim != 0)
      throw InvalidArgument("skinny GEMM: the RoPE epilogue needs a head_dim that divides " +
                            std::to_string(kSkinnyTileM) + ", got " + std::to_string(epi.head_dim));
  }
  const int ty = glu ? kSkinnyTileM / 2 : kSkinnyTileM;
  int tiles = 0;
  for (int s = 0; s < targets.count; ++s) {
    tiles += (targets.out[s] + ty - 1) / ty;
    targets.tile_end[s] = tiles;
  }
  if (tiles == 0) return;  // y has no columns
  const int ktiles = (in + kernels::skinny::kTileK - 1) / kernels::skinny::kTileK;
  const int group_rows = skinny_group_rows(rows, options);
  const int groups = (rows + group_rows - 1) / group_rows;
  const int splits = skinny_splits(tiles * groups, ktiles, options);  // each split keeps at least one k-tile
  const SkinnyArgs<W, X> a{x, targets, up, out16, norm, rows, in, splits, groups, accumulate};
  // Only the combinations checked above are instantiated.
  constexpr bool fp32_x = std::is_same_v<X, float>;
  auto launch_rows = [&]<int GR>() {
    if (glu) {
      if constexpr (fp32_x && !rope) {
        if (normed) detail::skinny_launch<W, X, GR, true, true>(a, epi, stream);
        else detail::skinny_launch<W, X, GR, true, false>(a, epi, stream);
      }
    } else if constexpr (fp32_x) {
      if (normed) detail::skinny_launch<W, X, GR, false, true>(a, epi, stream);
      else detail::skinny_launch<W, X, GR, false, false>(a, epi, stream);
    } else {
      detail::skinny_launch<W, X, GR, false, false>(a, epi, stream);
    }
  };
  if (group_rows == kSkinnyGroupRowsSmall) launch_rows.template operator()<kSkinnyGroupRowsSmall>();
  else launch_rows.template operator()<kSkinnyGroupRowsLarge>();
}

/// y (+)= x W^T on tensor cores. x: [rows, in] fp32, rows <= kSkinnyMaxRows, in % 8 == 0;
/// w: [out, in] bf16 or fp16; y: [rows, out]. `accumulate`: y += x W^T (the residual add).
template <class W>
void skinny_linear(MatrixView<const float> x, const W* w, MatrixView<float> y, bool accumulate, SkinnyOptions options,
                   cudaStream_t s) {
  skinny_gemm<W, float>(x.data, x.rows, x.cols, LinearTargets<W>::single(w, y), accumulate, nullptr, nullptr,
                        InputNorm<W>{}, options, s);
}

/// y = silu(x Wg^T) * (x Wu^T) in one launch. x: [rows, in]; wg, wu: [out, in]; y: [rows, out].
template <class W>
void skinny_gate_up_swiglu(MatrixView<const float> x, const W* wg, const W* wu, MatrixView<float> y,
                           SkinnyOptions options, cudaStream_t s) {
  skinny_gemm<W, float>(x.data, x.rows, x.cols, LinearTargets<W>::single(wg, y), false, wu, nullptr, InputNorm<W>{},
                        options, s);
}

}  // namespace lckv::cuda
