#pragma once
/// \file attention.cuh
/// Attention over any cache slot view (contiguous, paged, ring) and any mask
/// policy, one kernel for prefill and decode:
///
/// - a block takes a tile of `rows_per_tile` query rows x the `group` query
///   heads that share one KV head (GQA heads packed: each K/V tile loaded to
///   shared memory serves all of them), and one split of the keys;
/// - keys stream through shared memory in tiles of kKeyTile with an online
///   (running max / running sum) softmax in fp32;
/// - split-KV: with few query tiles (decode), the keys of a row are cut into
///   `splits` ranges computed on the device from the row's position, so the
///   launch is independent of the context length (a CUDA Graph can replay it);
///   decode_kernel_mma merges the partials inside the row's thread-block
///   cluster (long rows: through its workspace), the others through combine_kernel;
/// - masks: the row's key spans come from the same policy structs as the CPU
///   (lckv/attention/mask.hpp), evaluated on the device per row;
/// - decode rows (one per block) go to decode_kernel_mma (16-bit KV, head_dim
///   64 / 128, GQA group <= 16: mma.sync in the FlashAttention-2 register layout,
///   per-warp cp.async pipelines) or decode_kernel (fp32 KV, CUDA cores);
/// - prefill tiles of 16-bit KV, head_dim 64 / 128 and a group dividing 16 go to
///   prefill_kernel_mma (the same register layout, 64-key tiles shared by 4 warps);
///   the rest to attention_kernel (fp32 CUDA cores);
/// - every kernel is launched with programmatic dependent launch (launch.cuh).
///
/// Measured (H200, docs/benchmarks-cuda.md): v3 (WMMA decode, one register-staged
/// tile, separate merge) read KV at 0.66-0.69 of copy bandwidth at 16K-32K x
/// batch >= 32; v1 (this file's general kernel for decode) 0.07, v2 (register
/// Q, fp32) 0.15.
///
/// Rows of one tile normally belong to one sequence (a prefill chunk); a tile
/// mixing sequences is handled one row at a time (correct, slower).

#include <cfloat>
#include <climits>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include <cooperative_groups.h>
#include <cub/block/block_reduce.cuh>

#include "lckv/attention/layer_mask.hpp"
#include "lckv/attention/mask.hpp"
#include "lckv/cache/slot_view.hpp"
#include "lckv/core/buffer.hpp"
#include "lckv/core/rows.hpp"
#include "lckv/cuda/device_memory.cuh"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/error.cuh"
#include "lckv/cuda/launch.cuh"
#include "lckv/cuda/mma.cuh"

namespace lckv::cuda {

/// A layer's mask as kernel data (MaskSpec without its host-only members).
struct DeviceMask {
  int no_diagonal = 0;
  int window = 0;
  int sink = 0;
  static DeviceMask of(const MaskSpec& m) { return {m.no_diagonal ? 1 : 0, m.window, m.sink}; }
};

/// The key spans of query position i: the CPU's policies, chosen at run time.
__host__ __device__ inline KeySpans mask_keys(const DeviceMask& m, int i) {
  if (m.window <= 0) return m.no_diagonal ? mask::NoDiagonal{}.keys(i) : mask::Causal{}.keys(i);
  if (m.sink > 0)
    return m.no_diagonal ? mask::SinkWindow<mask::NoDiagonal>{m.sink, m.window}.keys(i)
                         : mask::SinkWindow<mask::Causal>{m.sink, m.window}.keys(i);
  return m.no_diagonal ? mask::SlidingWindow<mask::NoDiagonal>{m.window}.keys(i)
                       : mask::SlidingWindow<mask::Causal>{m.window}.keys(i);
}

namespace attn {

inline constexpr int kThreads = 128;
inline constexpr int kKeyTile = 64;
inline constexpr int kMaxQueries = 64;    ///< rows_per_tile x group per block
inline constexpr int kDecodeQueries = 8;  ///< the small-register variant's limit
inline constexpr int kMaxSplits = 128;

template <class Slot>
struct Params {
  const float* q;  ///< [n, heads * D], fp32
  float* out;      ///< [n, heads * D]
  const RowInfo* rows;
  int n;
  Slot slot;
  DeviceMask mask;
  int heads;
  int group;          ///< heads / kv_heads
  int rows_per_tile;  ///< query rows per block
  int splits;
  float scale;
  float* part_o;   ///< [n, heads, splits, D] unnormalised partial outputs
  float* part_ml;  ///< [n, heads, splits, 2] running max and sum
  void* out16;     ///< decode_kernel_mma only: when set, the output goes here in the KV type instead of out
  bool older_keys_settled;  ///< AttentionLaunch::older_keys_settled
  /// decode_kernel_mma only: when set, a row's splits are not one cluster; their merge buffers
  /// lie in part_o, and [n, kv_heads] pairs of counts (arrived, left; zero before, zero again
  /// after) stand in for the cluster barrier.
  unsigned* split_counters;
};

/// Shared floats a block needs.
template <int D>
constexpr std::size_t smem_floats(int queries) {
  return static_cast<std::size_t>(queries) * D + kKeyTile * (D + 4) + kKeyTile * D +
         static_cast<std::size_t>(queries) * kKeyTile;
}

template <class T>
struct Vec16 {
  static constexpr int n = 16 / sizeof(T);
};

/// The keys one decode block scans: the row's kept keys (sink [0, S), then the
/// window from B) numbered 0..count-1, split into `splits` chunks of whole tiles;
/// this block takes [start, stop).
struct SplitRange {
  int S, B, count, start, stop;
  /// Cache position of the li-th kept key, or -1 past the end.
  __device__ int position(int li) const { return li < stop ? (li < S ? li : B + (li - S)) : -1; }
  /// Whether kept keys [li0, li0 + n) all lie in the range at consecutive positions (all sink or all window).
  __device__ bool consecutive(int li0, int n) const { return li0 + n <= stop && (li0 >= S || li0 + n <= S); }
};

/// Split `split`'s share, in whole key tiles, of the kept keys [0, S) and [B, E).
__device__ inline SplitRange split_share(int S, int B, int E, int splits, int split) {
  const int count = S + (E - B);
  const int chunk = ((count + splits - 1) / splits + kKeyTile - 1) / kKeyTile * kKeyTile;
  const int start = split * chunk;
  return {S, B, count, start, min(count, start + chunk)};
}

__device__ inline SplitRange split_range(const KeySpans& span, int splits, int split) {
  const int S = span.sink_end;
  return span.end <= span.begin ? split_share(S, S, S, splits, split)
                                : split_share(S, span.begin, span.end, splits, split);
}

/// The keys a prefill block scans for rows [ra, rb) of its tile: the union of their spans
/// ([0, S) and [B, E), numbered 0..count-1; one range [0, max(E, S)) where the sink touches
/// the window), and split `split`'s share of it in whole key tiles.
__device__ inline SplitRange union_split_range(const KeySpans* spans, int ra, int rb, int splits, int split) {
  int S = 0, B = INT_MAX, E = 0;
  for (int r = ra; r < rb; ++r) {
    const KeySpans k = spans[r];
    if (k.count() == 0) continue;
    S = max(S, k.sink_end);
    if (k.end > k.begin) {
      B = min(B, k.begin);
      E = max(E, k.end);
    }
  }
  if (B == INT_MAX) B = E = S;
  if (S >= B) {
    E = max(E, S);
    S = 0;
    B = 0;
  }
  return split_share(S, B, E, splits, split);
}

/// A decode block's result for query head h, dims [4 * ad4, 4 * ad4 + 4): the
/// normalised output when the keys were not split, else the unnormalised partial
/// with its running max m and sum l for combine_kernel.
template <int D, class Slot>
__device__ void write_decode_output(const Params<Slot>& p, int row, int h, int split, int ad4, float4 acc, float m,
                                    float l) {
  if (p.splits == 1) {
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    *reinterpret_cast<float4*>(p.out + static_cast<std::int64_t>(row) * p.heads * D + h * D + 4 * ad4) =
        make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
    return;
  }
  const std::int64_t part = (static_cast<std::int64_t>(row) * p.heads + h) * p.splits + split;
  *reinterpret_cast<float4*>(p.part_o + part * D + 4 * ad4) = acc;
  if (ad4 == 0) {
    p.part_ml[part * 2] = m;
    p.part_ml[part * 2 + 1] = l;
  }
}

/// One key tile's step of the online softmax, one warp per query (kThreads / 32
/// warps share `queries`): Ss [queries][kKeyTile] scores in, probabilities out
/// (relative to the new running max); m_s, l_s: running max and sum per query,
/// updated; c_s: the factor each query's accumulator must be rescaled by.
__device__ inline void online_softmax_tile(float* Ss, float* m_s, float* l_s, float* c_s, int queries, int warp,
                                           int lane) {
  static_assert(kKeyTile == 64, "two keys per lane");
  for (int q = warp; q < queries; q += kThreads / 32) {
    const float v0 = Ss[q * kKeyTile + lane], v1 = Ss[q * kKeyTile + lane + 32];
    float mt = fmaxf(v0, v1);
#pragma unroll
    for (int o = 16; o > 0; o /= 2) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, o));
    const float m_old = m_s[q], m_new = fmaxf(m_old, mt);
    float corr = 1.0f, p0 = 0.0f, p1 = 0.0f;
    if (m_new != -INFINITY) {
      p0 = expf(v0 - m_new);
      p1 = expf(v1 - m_new);
      corr = expf(m_old - m_new);
    }
    float sum = p0 + p1;
#pragma unroll
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    Ss[q * kKeyTile + lane] = p0;
    Ss[q * kKeyTile + lane + 32] = p1;
    __syncwarp();
    if (lane == 0) {
      m_s[q] = m_new;
      l_s[q] = l_s[q] * corr + sum;
      c_s[q] = corr;
    }
  }
}

/// One key tile's K and V rows staged through registers (16-byte loads), so the
/// next tile's loads are in flight while the current one is computed on.
template <class T, int D>
struct KvTileStager {
  static constexpr int V = Vec16<T>::n;    // elements per 16-byte load
  static constexpr int Chunks = D / V;     // loads per key row
  static constexpr int Loads = kKeyTile * Chunks / kThreads;
  static_assert(Loads * kThreads == kKeyTile * Chunks, "tile loads must divide evenly");
  uint4 k[Loads], v[Loads];

  template <class Slot>
  __device__ void load(const Slot& slot, int seq, int kvh, const SplitRange& r, int t0, int tid) {
#pragma unroll
    for (int j = 0; j < Loads; ++j) {
      const int idx = tid + j * kThreads, key = idx / Chunks, c = idx % Chunks, pos = r.position(t0 + key);
      if (pos >= 0) {
        k[j] = *reinterpret_cast<const uint4*>(slot.key(seq, pos, kvh) + c * V);
        v[j] = *reinterpret_cast<const uint4*>(slot.value(seq, pos, kvh) + c * V);
      } else {
        k[j] = make_uint4(0, 0, 0, 0);
        v[j] = make_uint4(0, 0, 0, 0);
      }
    }
  }
  /// Writes the staged rows to shared memory tiles with rows `ld` elements apart.
  __device__ void store(T* ks, T* vs, int ld, int tid) const {
#pragma unroll
    for (int j = 0; j < Loads; ++j) {
      const int idx = tid + j * kThreads, key = idx / Chunks, c = idx % Chunks;
      *reinterpret_cast<uint4*>(ks + key * ld + c * V) = k[j];
      *reinterpret_cast<uint4*>(vs + key * ld + c * V) = v[j];
    }
  }
};

template <class Slot, int D, int MaxQ>
__global__ void __launch_bounds__(kThreads) attention_kernel(Params<Slot> p) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(p.slot.key(0, 0, 0))>>;
  pdl::allow_next();
  pdl::wait();
  constexpr int V = Vec16<T>::n;           // elements per 16-byte load
  constexpr int KS = D + 4;                // padded K row (conflict-free 16-byte reads)
  constexpr int QStep = kThreads / kKeyTile;
  constexpr int QPer = (MaxQ + QStep - 1) / QStep;
  constexpr int D4 = D / 4;
  constexpr int AccPer = (MaxQ * D4 + kThreads - 1) / kThreads;
  constexpr int Loads = kKeyTile * (D / V) / kThreads;
  static_assert(Loads * kThreads == kKeyTile * (D / V), "tile loads must divide evenly");

  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int G = p.group, QT = p.rows_per_tile, NQ = QT * G;
  float* Qs = smem;
  float* Ks = Qs + static_cast<std::size_t>(NQ) * D;
  float* Vs = Ks + kKeyTile * KS;
  float* Ss = Vs + kKeyTile * D;

  __shared__ int r_seq[kMaxQueries];
  __shared__ KeySpans r_span[kMaxQueries];
  __shared__ float m_s[kMaxQueries], l_s[kMaxQueries], c_s[kMaxQueries];
  __shared__ int k_pos[kKeyTile];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int split = blockIdx.x, kvh = blockIdx.y;
  const int row0 = blockIdx.z * QT;
  const int nrows = min(QT, p.n - row0);
  const int q_stride = p.heads * D;

  for (int r = tid; r < QT; r += kThreads) {
    if (r < nrows) {
      const RowInfo ri = p.rows[row0 + r];
      r_seq[r] = ri.seq;
      r_span[r] = mask_keys(p.mask, ri.pos);
    } else {
      r_seq[r] = -1;
      r_span[r] = KeySpans{0, 0, 0};
    }
  }
  for (int i = tid; i < NQ * D; i += kThreads) {
    const int q = i / D, d = i % D, r = q / G, h = kvh * G + q % G;
    Qs[i] = r < nrows ? p.q[static_cast<std::int64_t>(row0 + r) * q_stride + h * D + d] * p.scale : 0.0f;
  }
  for (int q = tid; q < NQ; q += kThreads) {
    m_s[q] = -INFINITY;
    l_s[q] = 0.0f;
  }
  __syncthreads();

  bool uniform = true;
  for (int r = 1; r < nrows; ++r) uniform = uniform && r_seq[r] == r_seq[0];
  const int passes = uniform ? 1 : nrows;

  float4 acc[AccPer];
#pragma unroll
  for (int i = 0; i < AccPer; ++i) acc[i] = make_float4(0.f, 0.f, 0.f, 0.f);

  for (int pass = 0; pass < passes; ++pass) {
    const int ra = uniform ? 0 : pass, rb = uniform ? nrows : pass + 1;
    const SplitRange range = union_split_range(r_span, ra, rb, p.splits, split);
    const int start = range.start, stop = range.stop;
    const int seq = r_seq[ra];

    // K, V tiles: 16-byte loads into registers, one tile ahead of the math.
    uint4 kr[Loads], vr[Loads];
    auto load_tile = [&](int t0) {
#pragma unroll
      for (int j = 0; j < Loads; ++j) {
        const int idx = tid + j * kThreads, key = idx / (D / V), c = idx % (D / V), li = t0 + key;
        if (li < stop) {
          const int pos = range.position(li);
          kr[j] = *reinterpret_cast<const uint4*>(p.slot.key(seq, pos, kvh) + c * V);
          vr[j] = *reinterpret_cast<const uint4*>(p.slot.value(seq, pos, kvh) + c * V);
        } else {
          kr[j] = make_uint4(0, 0, 0, 0);
          vr[j] = make_uint4(0, 0, 0, 0);
        }
      }
    };
    if (start < stop) load_tile(start);
    for (int t0 = start; t0 < stop; t0 += kKeyTile) {
#pragma unroll
      for (int j = 0; j < Loads; ++j) {
        const int idx = tid + j * kThreads, key = idx / (D / V), c = idx % (D / V);
        const T* ke = reinterpret_cast<const T*>(&kr[j]);
        const T* ve = reinterpret_cast<const T*>(&vr[j]);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          Ks[key * KS + c * V + e] = to_float(ke[e]);
          Vs[key * D + c * V + e] = to_float(ve[e]);
        }
      }
      for (int key = tid; key < kKeyTile; key += kThreads) {
        const int li = t0 + key;
        k_pos[key] = range.position(li);
      }
      __syncthreads();
      if (t0 + kKeyTile < stop) load_tile(t0 + kKeyTile);  // in flight during the math below

      // Scores: thread = (key, every QStep-th query); K row reused from registers.
      {
        const int key = tid % kKeyTile, qo = tid / kKeyTile;
        float s[QPer];
#pragma unroll
        for (int i = 0; i < QPer; ++i) s[i] = 0.0f;
#pragma unroll 4
        for (int d4 = 0; d4 < D4; ++d4) {
          const float4 k4 = *reinterpret_cast<const float4*>(Ks + key * KS + 4 * d4);
#pragma unroll
          for (int i = 0; i < QPer; ++i) {
            const int q = qo + i * QStep;
            if (q < NQ) {
              const float4 q4 = *reinterpret_cast<const float4*>(Qs + q * D + 4 * d4);
              s[i] += q4.x * k4.x + q4.y * k4.y + q4.z * k4.z + q4.w * k4.w;
            }
          }
        }
        const int pos = k_pos[key];
#pragma unroll
        for (int i = 0; i < QPer; ++i) {
          const int q = qo + i * QStep;
          if (q < NQ) {
            const int r = q / G;
            const bool ok = pos >= 0 && r >= ra && r < rb && r_span[r].contains(pos);
            Ss[q * kKeyTile + key] = ok ? s[i] : -INFINITY;
          }
        }
      }
      __syncthreads();

      online_softmax_tile(Ss, m_s, l_s, c_s, NQ, warp, lane);
      __syncthreads();

      // O = O * corr + P V.
#pragma unroll
      for (int i = 0; i < AccPer; ++i) {
        const int idx = tid + i * kThreads, q = idx / D4, d4 = idx % D4;
        if (q < NQ) {
          const float c = c_s[q];
          float4 a = acc[i];
          a.x *= c;
          a.y *= c;
          a.z *= c;
          a.w *= c;
#pragma unroll 4
          for (int k = 0; k < kKeyTile; k += 4) {
            const float4 pr = *reinterpret_cast<const float4*>(Ss + q * kKeyTile + k);
            const float pk[4] = {pr.x, pr.y, pr.z, pr.w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float4 v4 = *reinterpret_cast<const float4*>(Vs + (k + e) * D + 4 * d4);
              a.x += pk[e] * v4.x;
              a.y += pk[e] * v4.y;
              a.z += pk[e] * v4.z;
              a.w += pk[e] * v4.w;
            }
          }
          acc[i] = a;
        }
      }
      __syncthreads();
    }
  }

  // Results.
#pragma unroll
  for (int i = 0; i < AccPer; ++i) {
    const int idx = tid + i * kThreads, q = idx / D4, d4 = idx % D4;
    if (q >= NQ) continue;
    const int r = q / G, h = kvh * G + q % G;
    if (r >= nrows) continue;
    const int row = row0 + r;
    if (p.splits == 1) {
      const float l = l_s[q], inv = l > 0.0f ? 1.0f / l : 0.0f;
      const float4 a = acc[i];
      *reinterpret_cast<float4*>(p.out + static_cast<std::int64_t>(row) * q_stride + h * D + 4 * d4) =
          make_float4(a.x * inv, a.y * inv, a.z * inv, a.w * inv);
    } else {
      const std::int64_t part = (static_cast<std::int64_t>(row) * p.heads + h) * p.splits + split;
      *reinterpret_cast<float4*>(p.part_o + part * D + 4 * d4) = acc[i];
      if (d4 == 0) {
        p.part_ml[part * 2] = m_s[q];
        p.part_ml[part * 2 + 1] = l_s[q];
      }
    }
  }
}

/// Decode specialisation (one query row per block, GQA group <= 8, head_dim 64):
/// K/V tiles stay in their storage type in shared memory (16-byte stores, no
/// conversion pass), each query's row lives in registers, 16 threads per query
/// score 4 keys each, and the next tile's loads are in flight during the math.
template <class Slot, int D>
__global__ void __launch_bounds__(kThreads, 4) decode_kernel(Params<Slot> p) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(p.slot.key(0, 0, 0))>>;
  pdl::allow_next();
  pdl::wait();
  constexpr int V = Vec16<T>::n;
  constexpr int Chunks = D / V;                            // 16-byte chunks per key row
  constexpr int RowBytes = D * static_cast<int>(sizeof(T)) + 16;  // padded: conflict-free row reads
  constexpr int Loads = kKeyTile * Chunks / kThreads;
  constexpr int TPQ = kThreads / kDecodeQueries;           // threads per query
  constexpr int KeysPer = kKeyTile / TPQ;
  static_assert(Loads * kThreads == kKeyTile * Chunks && D % 4 == 0);

  __shared__ alignas(16) unsigned char Kb[kKeyTile * RowBytes];
  __shared__ alignas(16) unsigned char Vb[kKeyTile * RowBytes];
  __shared__ alignas(16) float Ss[kDecodeQueries * kKeyTile];
  __shared__ float m_s[kDecodeQueries], l_s[kDecodeQueries], c_s[kDecodeQueries];
  __shared__ int k_pos[kKeyTile];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int split = blockIdx.x, kvh = blockIdx.y, row = blockIdx.z;
  const int G = p.group, q_stride = p.heads * D;
  const RowInfo ri = p.rows[row];
  const KeySpans span = mask_keys(p.mask, ri.pos);
  const SplitRange range = split_range(span, p.splits, split);
  const int start = range.start, stop = range.stop;

  const int q = tid / TPQ, sub = tid % TPQ;
  float qreg[D];
  if (q < G) {
    const float* src = p.q + static_cast<std::int64_t>(row) * q_stride + (kvh * G + q) * D;
#pragma unroll
    for (int d = 0; d < D; d += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + d);
      qreg[d] = v.x * p.scale;
      qreg[d + 1] = v.y * p.scale;
      qreg[d + 2] = v.z * p.scale;
      qreg[d + 3] = v.w * p.scale;
    }
  }
  if (tid < kDecodeQueries) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  const int aq = tid / (D / 4), ad4 = tid % (D / 4);  // PV: thread = (query, 4 dims)

  KvTileStager<T, D> stage;
  if (start < stop) stage.load(p.slot, ri.seq, kvh, range, start, tid);
  __syncthreads();
  for (int t0 = start; t0 < stop; t0 += kKeyTile) {
    stage.store(reinterpret_cast<T*>(Kb), reinterpret_cast<T*>(Vb), RowBytes / static_cast<int>(sizeof(T)), tid);
    if (tid < kKeyTile) k_pos[tid] = range.position(t0 + tid);
    __syncthreads();
    if (t0 + kKeyTile < stop) stage.load(p.slot, ri.seq, kvh, range, t0 + kKeyTile, tid);

    if (q < G) {
#pragma unroll
      for (int j = 0; j < KeysPer; ++j) {
        const int key = sub + j * TPQ;
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < Chunks; ++c) {
          const uint4 raw = *reinterpret_cast<const uint4*>(Kb + key * RowBytes + c * 16);
          const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
          for (int i = 0; i < V; ++i) s += qreg[c * V + i] * to_float(e[i]);
        }
        const int pos = k_pos[key];
        Ss[q * kKeyTile + key] = (pos >= 0 && span.contains(pos)) ? s : -INFINITY;
      }
    }
    __syncthreads();

    online_softmax_tile(Ss, m_s, l_s, c_s, G, warp, lane);
    __syncthreads();

    if (aq < G) {
      const float c = c_s[aq];
      acc.x *= c;
      acc.y *= c;
      acc.z *= c;
      acc.w *= c;
#pragma unroll 4
      for (int k = 0; k < kKeyTile; k += 4) {
        const float4 pr = *reinterpret_cast<const float4*>(Ss + aq * kKeyTile + k);
        const float pk[4] = {pr.x, pr.y, pr.z, pr.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const T* vrow = reinterpret_cast<const T*>(Vb + (k + e) * RowBytes) + 4 * ad4;
          acc.x += pk[e] * to_float(vrow[0]);
          acc.y += pk[e] * to_float(vrow[1]);
          acc.z += pk[e] * to_float(vrow[2]);
          acc.w += pk[e] * to_float(vrow[3]);
        }
      }
    }
    __syncthreads();
  }

  if (aq < G) write_decode_output<D>(p, row, kvh * G + aq, split, ad4, acc, m_s[aq], l_s[aq]);
}

/// One warp's steps over a key tile on tensor cores, shared by decode_kernel_mma and
/// prefill_kernel_mma (FlashAttention-2 register layout: 16 query rows as the A operand of
/// m16n8k16 MMAs; lane l holds rows l / 4 and l / 4 + 8, columns 2 (l % 4) and 2 (l % 4) + 1 of
/// every 8-wide tile). K and V tiles are [keys][D] in shared memory, 16-byte chunks XOR-swizzled
/// by key % 8 so that ldmatrix is conflict-free.
namespace tile {

/// Byte offset of 16-byte chunk `ch` of key row `key` in a swizzled [keys][D] tile.
template <int D>
__device__ __forceinline__ std::uint32_t at(int key, int ch) {
  return static_cast<std::uint32_t>(key * D * 2 + ((ch ^ (key % 8)) * 16));
}

/// s[16, 8 NT] = Q K^T of the tile at shared address kb; qa: Q's A fragments, dims [16k, 16k + 16) in qa[k].
/// ldmatrix x4 (lanes 8i.. give matrix i): keys 8 (i / 2), dims 8 (i % 2).
template <class T, int D, int NT>
__device__ __forceinline__ void scores(float (&s)[NT][4], const std::uint32_t (&qa)[D / 16][4], std::uint32_t kb,
                                       int lane) {
#pragma unroll
  for (int j = 0; j < NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
  for (int k = 0; k < D / 16; ++k)
#pragma unroll
    for (int j = 0; j < NT; j += 2) {
      std::uint32_t b[4];
      ptx::ldmatrix_x4(b, kb + at<D>(8 * j + 8 * (lane / 16) + lane % 8, 2 * k + (lane / 8) % 2));
      ptx::mma_16816<T>(s[j], qa[k], b[0], b[1]);
      ptx::mma_16816<T>(s[j + 1], qa[k], b[2], b[3]);
    }
}

/// The online softmax's step over one tile of scores (base 2, masked keys at -inf): updates the
/// running max m and sum l of rows g, g + 8 (l: this lane's columns only), rescales o, and turns s
/// into the probabilities relative to the new max.
template <int NT, int DT>
__device__ __forceinline__ void softmax_step(float (&s)[NT][4], float (&m)[2], float (&l)[2], float (&o)[DT][4]) {
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      mx[0] = fmaxf(mx[0], s[j][e]);
      mx[1] = fmaxf(mx[1], s[j][2 + e]);
    }
  float corr[2], base[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    const float mn = fmaxf(m[h], mx[h]);
    base[h] = mn == -INFINITY ? 0.0f : mn;  // all masked so far: every p is exp2(-inf) = 0
    corr[h] = ptx::ex2(m[h] - base[h]);
    m[h] = mn;
  }
  float rs[2] = {0.0f, 0.0f};
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[j][e] = ptx::ex2(s[j][e] - base[e / 2]);
      rs[e / 2] += s[j][e];
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) l[h] = l[h] * corr[h] + rs[h];
#pragma unroll
  for (int j = 0; j < DT; ++j) {
    o[j][0] *= corr[0];
    o[j][1] *= corr[0];
    o[j][2] *= corr[1];
    o[j][3] *= corr[1];
  }
}

/// o[16, D] += P V of the tile at shared address vb: score tiles 2k, 2k + 1 are P's A fragment
/// for keys [16k, 16k + 16), rounded to T. ldmatrix x4 trans (lanes 8i.. give matrix i): keys
/// 8 (i % 2), dims 8 (i / 2).
template <class T, int D, int NT>
__device__ __forceinline__ void accumulate(float (&o)[D / 8][4], const float (&s)[NT][4], std::uint32_t vb, int lane) {
#pragma unroll
  for (int k = 0; k < NT / 2; ++k) {
    const std::uint32_t pa[4] = {ptx::pack2<T>(s[2 * k][0], s[2 * k][1]), ptx::pack2<T>(s[2 * k][2], s[2 * k][3]),
                                 ptx::pack2<T>(s[2 * k + 1][0], s[2 * k + 1][1]),
                                 ptx::pack2<T>(s[2 * k + 1][2], s[2 * k + 1][3])};
#pragma unroll
    for (int j = 0; j < D / 8; j += 2) {
      std::uint32_t b[4];
      ptx::ldmatrix_x4_trans(b, vb + at<D>(16 * k + 8 * ((lane / 8) % 2) + lane % 8, j + lane / 16));
      ptx::mma_16816<T>(o[j], pa, b[0], b[1]);
      ptx::mma_16816<T>(o[j + 1], pa, b[2], b[3]);
    }
  }
}

}  // namespace tile

/// Decode on tensor cores for 16-bit KV (bf16, fp16), head_dim 64 or 128, GQA
/// group <= 16 (FlashAttention-2 register layout, one block per (split, kv head, row)):
/// - the group's query heads, padded to 16, are the A operand of m16n8k16 MMAs,
///   held in registers for the whole kernel (pre-scaled by scale * log2 e, so
///   the softmax uses exp2); S = Q K^T stays in the accumulators, is exponentiated
///   and repacked in registers as the A operand of P V: no shared-memory round
///   trip for S, P or O;
/// - each warp walks its own key tiles of the block's split (tile i of the split
///   goes to warp i % kDecodeWarps) with its own online softmax and its own
///   Stages-deep cp.async pipeline (K and V tiles, XOR-swizzled rows so
///   ldmatrix is conflict-free): no block-wide barrier per tile; tiles wholly
///   inside the row's keys skip the per-key mask and, on linear slots, the
///   per-key address arithmetic;
/// - before waiting for the previous kernel (launch.cuh), each warp pulls its
///   first tiles into L2 (a prefetch is only a hint) and, with one row per
///   sequence, starts copying the first tiles whose keys all precede the row's
///   position: the kernels it overlaps write no such key;
/// - the splits of a (row, kv head) form one thread-block cluster, and the
///   splits x warps partials are merged by one reduce-scatter (DecodeMerge):
///   each warp writes its partial, normalised, straight into the merge buffer of
///   the block that owns each slice of the output (distributed shared memory),
///   one cluster barrier, then each block merges its slice. No global
///   workspace, no arrival counters, no second launch, and no block-level
///   merge of the warps first (two barriers and a round trip through shared
///   memory fewer than merging warps, then splits: 1-8% off the decode
///   attention, docs/benchmarks-cuda.md Update 10);
/// - long rows on grids of one block per SM (Params::split_counters, from
///   AttentionLaunch::splits_through_memory) do the same through the
///   AttentionWorkspace: the merge buffers lie in global memory and a count of
///   arrivals stands in for the cluster barrier (splits_barrier), which lets
///   consecutive layers' grids overlap as clusters did not (docs/benchmarks-cuda.md
///   Update 18).
/// Q and P are rounded to the KV type for the products (as FlashAttention does);
/// the softmax, its running max / sum and the accumulation are fp32.
inline constexpr int kDecodeWarps = 4;
inline constexpr int kDecodeStages = 3;      ///< cp.async depth at two blocks per SM
/// At two blocks per SM where the merge buffer does not fit beside kDecodeStages twice (up to
/// 33 KB at G 16 / d 128, where 17 KB fit on an H100): d 128 with groups above 8, and a few
/// split counts of G 8 / d 128 and G 16 / d 64. Three stages at one block per SM instead ran
/// G 16 / d 128 at 1K x 8 41% slower, at 16K x 8 2% faster (docs/benchmarks-cuda.md Update 11).
inline constexpr int kDecodeShallowStages = 2;
inline constexpr int kDecodeDeepStages = 4;  ///< at one block per SM: grids of at most decode_deep_blocks
/// Most blocks of a decode grid that run one per SM at kDecodeDeepStages (decode_runs_deep): half
/// the SMs, so that the next kernel's blocks find SMs of their own. plan_attention sizes long
/// rows' grids by it.
constexpr long decode_deep_blocks(int num_sms) { return num_sms / 2; }
/// Rows of at least this many keys (plan_attention's `max_keys` bound) take the splits that keep
/// a decode grid within half the SMs, where there are few enough rows for that.
inline constexpr int kDecodeLongKeys = 8192;
inline constexpr int kDecodeBlocksPerSm = 2;  ///< what the shared memory allows; plan_attention fills SMs by it
inline constexpr int kDecodeMaxGroup = 16;    ///< the MMA's M
inline constexpr int kDecodeMaxSplits = kMaxClusterBlocks;  ///< a row's splits form one cluster
inline constexpr int kDecodePrefetchTiles = 4;  ///< a warp's tiles pulled into L2 before pdl::wait
/// Long decode rows merge their splits through the workspace rather than as one cluster
/// (AttentionLaunch::splits_through_memory) from this many splits, and where the rows' keys
/// (rows x plan_attention's max_keys) reach kDecodeMemoryMergeKeys. Clusters of 4-16 blocks at
/// one block per SM slowed a chain of dependent read-only launches by 16-19% (2% for one launch
/// alone: the cost is in how consecutive layers overlap), while the merge through memory adds a
/// fixed cost per layer: on an H100 it paid from 2 rows x 32K and 4 x 16K keys (-4%, 4 x 32K
/// -12%) and cost 7% at 2 x 16K, 13-35% at batch 1 and 3-5% with 2 splits (docs/benchmarks-cuda.md
/// Update 18).
inline constexpr int kDecodeMemoryMergeSplits = 4;
inline constexpr long kDecodeMemoryMergeKeys = 1L << 17;
/// (row, kv head) pairs of counts at the workspace's start, for decode grids whose splits merge
/// through memory (Params::split_counters).
inline constexpr int kDecodeSplitCounters = 256;
/// A warp's key tile: 8 KiB of K and V per stage for either head_dim.
template <int D>
inline constexpr int kWarpKeys = 2048 / D;

template <int D, int Stages = kDecodeStages>
inline constexpr std::size_t kDecodeSmemBytes = static_cast<std::size_t>(kDecodeWarps) * Stages * 2 * kWarpKeys<D> * D * 2;

/// How decode_kernel_mma merges the partials of a (row, KV head): the output's G x D elements are
/// cut into `splits` slices of `per` (a multiple of 4); block r of the cluster owns slice r and
/// receives, from each of the splits x kDecodeWarps warps, its partial of the slice (normalised by
/// its own sum) and the log-sum-exp of the `rows` (at most) query heads the slice touches.
struct DecodeMerge {
  int G, D, splits, per, rows;
  __host__ __device__ static constexpr DecodeMerge of(int G, int D, int splits) {
    const int per = ((G * D + splits - 1) / splits + 3) / 4 * 4;
    const int rows = (per - 1) / D + 2 < G ? (per - 1) / D + 2 : G;
    return {G, D, splits, per, rows};
  }
  __host__ __device__ constexpr int partials() const { return splits * kDecodeWarps; }
  __host__ __device__ int first_row(int r) const { return r * per / D; }
  /// The merge buffer: [partials][per] slices, then [partials][rows] log-sum-exps.
  __host__ __device__ constexpr std::size_t bytes() const {
    return static_cast<std::size_t>(partials()) * (per + rows) * sizeof(float);
  }
  /// The largest buffer any group <= kDecodeMaxGroup and split count needs at head_dim D.
  static constexpr std::size_t most_bytes(int D) {
    std::size_t most = 0;
    for (int s = 1; s <= kDecodeMaxSplits; ++s) most = std::max(most, of(kDecodeMaxGroup, D, s).bytes());
    return most;
  }
};

/// decode_kernel_mma's dynamic shared memory at `Stages`: the copy stages, then the merge buffer.
template <int D, int Stages>
constexpr std::size_t decode_smem_bytes(int group, int splits) {
  return kDecodeSmemBytes<D, Stages> + DecodeMerge::of(group, D, splits).bytes();
}

/// Slots whose consecutive positions are rows a fixed stride apart (no ring wrap, no pages).
template <class Slot>
inline constexpr bool kLinearPositions = false;
template <class T>
inline constexpr bool kLinearPositions<StridedSlot<T, false>> = true;

/// Copies the K and V rows of KT consecutive positions from `first` (a kLinearPositions slot) into
/// one swizzled stage, kb / vb: thread t of Threads takes 16-byte chunk t % (D / 8) of key rows
/// t / (D / 8), then every Threads / (D / 8)-th after it, from one address plus fixed steps.
template <int D, int KT, int Threads, class Slot>
__device__ __forceinline__ void copy_consecutive_tile(const Slot& slot, int seq, int first, int kvh, std::uint32_t kb,
                                                      std::uint32_t vb, int t) {
  constexpr int Chunks = D / 8, KeysPerPass = Threads / Chunks;
  static_assert(Threads % Chunks == 0 && KT % KeysPerPass == 0);
  const int key0 = t / Chunks, ch = t % Chunks;
  const std::int64_t step = static_cast<std::int64_t>(KeysPerPass) * slot.kv_heads * D;
  const auto* kp = slot.key(seq, first + key0, kvh) + 8 * ch;
  const auto* vp = slot.value(seq, first + key0, kvh) + 8 * ch;
#pragma unroll
  for (int pass = 0; pass < KT / KeysPerPass; ++pass) {
    const int key = key0 + pass * KeysPerPass;
    ptx::cp_async_16(kb + tile::at<D>(key, ch), kp + pass * step, true);
    ptx::cp_async_16(vb + tile::at<D>(key, ch), vp + pass * step, true);
  }
}

/// The blocks of a row's splits wait here for each other, as at a cluster barrier, where they are not
/// one cluster: counts[0] counts arrivals. Every block of such a grid is resident before the next
/// kernel can start (each calls pdl::allow_next first), so the wait cannot starve. A release
/// arrival and acquire polls, which __syncthreads extends to the whole block, order the merge
/// buffers' writes and reads; fences around a relaxed atomic (__threadfence, sequentially
/// consistent) did the same 0.3-1.3% slower (docs/benchmarks-cuda.md Update 19).
__device__ __forceinline__ void splits_barrier(unsigned* counts, unsigned splits) {
  __syncthreads();  // the block's merge writes precede its arrival
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counts) : "memory");
    unsigned arrived;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(arrived) : "l"(counts) : "memory");
    } while (arrived < splits);
  }
  __syncthreads();
}

/// `Memory`: the splits (at least two) merge through the workspace (Params::split_counters), not
/// as a cluster; a template parameter so that the cluster path's merge has no extra branches
/// (at run time they cost batch-1 decode 3-7%, docs/benchmarks-cuda.md Update 18).
template <class Slot, int D, int Stages, bool Memory>
__global__ void __launch_bounds__(kDecodeWarps * 32, kDecodeBlocksPerSm) decode_kernel_mma(Params<Slot> p) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(p.slot.key(0, 0, 0))>>;
  static_assert(sizeof(T) == 2 && (D == 64 || D == 128));
  constexpr int W = kDecodeWarps, KT = kWarpKeys<D>;
  constexpr int Chunks = D / 8;               // 16-byte chunks per key row
  constexpr int RowsPerPass = 32 / Chunks;    // key rows a warp's 32 lanes copy at once
  constexpr int Passes = KT / RowsPerPass;
  constexpr int NT = KT / 8;                  // S tiles (8 keys each)
  constexpr int DT = D / 8;                   // O tiles (8 dims each)
  constexpr int TileBytes = KT * D * 2;       // one K (or V) tile
  static_assert(Passes * RowsPerPass == KT && KT % 16 == 0);
  extern __shared__ float4 dsmem[];  // [warp][stage][K, V][KT][D], rows swizzled; then the DecodeMerge buffer

  pdl::allow_next();
  namespace cg = cooperative_groups;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int split = blockIdx.x, kvh = blockIdx.y, row = blockIdx.z;
  const int G = p.group, g = lane / 4, c = (lane % 4) * 2;
  const RowInfo ri = p.rows[row];  // staged before the run: no kernel in flight writes it
  const KeySpans span = mask_keys(p.mask, ri.pos);
  const SplitRange range = split_range(span, p.splits, split);
  const int tiles = range.stop > range.start ? (range.stop - range.start + KT - 1) / KT : 0;
  const int mine = tiles > warp ? (tiles - warp + W - 1) / W : 0;  // this warp's tiles: warp, warp + W, ...
  auto first_key = [&](int it) { return range.start + (warp + it * W) * KT; };
  // Every key of the tile at li0 is kept, at consecutive positions.
  auto whole = [&](int li0) { return range.consecutive(li0, KT); };

  const std::uint32_t wbase = ptx::smem_address(dsmem) + warp * Stages * 2 * TileBytes;
  auto at = [](int key, int ch) { return tile::at<D>(key, ch); };

  // Copies this warp's it-th tile into stage it % Stages; always commits a group
  // (empty past the warp's tiles) so the wait counts stay uniform.
  auto issue = [&](int it) {
    if (it < mine) {
      const int li0 = first_key(it);
      const std::uint32_t kb = wbase + (it % Stages) * 2 * TileBytes, vb = kb + TileBytes;
      const int ch = lane % Chunks, key0 = lane / Chunks;
      bool done = false;
      if constexpr (kLinearPositions<Slot>) {
        if (whole(li0)) {
          copy_consecutive_tile<D, KT, 32>(p.slot, ri.seq, range.position(li0), kvh, kb, vb, lane);
          done = true;
        }
      }
      if (!done) {
#pragma unroll
        for (int pass = 0; pass < Passes; ++pass) {
          const int key = key0 + pass * RowsPerPass, pos = range.position(li0 + key);
          const bool ok = pos >= 0;
          const T* kp = ok ? p.slot.key(ri.seq, pos, kvh) + 8 * ch : nullptr;
          const T* vp = ok ? p.slot.value(ri.seq, pos, kvh) + 8 * ch : nullptr;
          ptx::cp_async_16(kb + at(key, ch), ok ? static_cast<const void*>(kp) : p.q, ok);
          ptx::cp_async_16(vb + at(key, ch), ok ? static_cast<const void*>(vp) : p.q, ok);
        }
      }
    }
    ptx::cp_async_commit();
  };

  // Tiles whose keys all lie before the row's own position were cached by earlier runs
  // (older_keys_settled): their copies start before the previous kernel ends, in the
  // same order of cp.async groups as after it. Groups past the warp's tiles are empty.
  auto settled = [&](int it) {
    return it >= mine ||
           (p.older_keys_settled && range.position(min(first_key(it) + KT, range.stop) - 1) < ri.pos);
  };
  int early = 0;
  while (early < Stages - 1 && settled(early)) issue(early++);
  // The next tiles into L2 (a hint), the tiles just issued being on their way already.
  {
    constexpr int Lines = D * 2 / 128;  // 128-byte lines per key row
    for (int it = early; it < min(mine, kDecodePrefetchTiles); ++it)
      for (int i = lane; i < KT * Lines; i += 32) {
        const int pos = range.position(first_key(it) + i / Lines);
        if (pos >= 0) {
          ptx::prefetch_l2(p.slot.key(ri.seq, pos, kvh) + (i % Lines) * 64);
          ptx::prefetch_l2(p.slot.value(ri.seq, pos, kvh) + (i % Lines) * 64);
        }
      }
  }
  pdl::wait();  // q (just rotated), the newest cache entries and out belong to earlier kernels
  // The first of two cluster barrier phases: its wait, just before the partials are written to
  // the other blocks, makes sure that they have all started (their shared memory exists only
  // then; compute-sanitizer flags the writes without it). Relaxed, and after pdl::wait: an
  // arrival with release semantics before it made batch-1 decode steps 4-5% slower (H100,
  // docs/benchmarks-cuda.md Update 10).
  const bool clustered = !Memory && p.splits > 1;
  if (clustered) __cluster_barrier_arrive_relaxed();

  // Q[16, D] as A fragments: qa[k][.] covers dims [16k, 16k + 16); rows >= G are zero.
  std::uint32_t qa[D / 16][4];
  {
    const float qs = p.scale * 1.4426950408889634f;  // log2(e): softmax in base 2
    const float* q = p.q + static_cast<std::int64_t>(row) * p.heads * D + static_cast<std::int64_t>(kvh) * G * D;
#pragma unroll
    for (int k = 0; k < D / 16; ++k)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int qr = g + 8 * (r % 2), d = 16 * k + 8 * (r / 2) + c;
        const float2 v = qr < G ? *reinterpret_cast<const float2*>(q + qr * D + d) : make_float2(0.f, 0.f);
        qa[k][r] = ptx::pack2<T>(v.x * qs, v.y * qs);
      }
  }

  float o[DT][4];
#pragma unroll
  for (int j = 0; j < DT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g, g + 8; l: this lane's columns only

  for (int s = early; s < Stages - 1; ++s) issue(s);
  for (int it = 0; it < mine; ++it) {
    ptx::cp_async_wait<Stages - 2>();  // this lane's copies of tile it are done ...
    __syncwarp();                      // ... and every lane's; tile it - 1's stage is free
    issue(it + Stages - 1);
    const std::uint32_t kb = wbase + (it % Stages) * 2 * TileBytes, vb = kb + TileBytes;
    const int li0 = first_key(it);

    float s[NT][4];
    tile::scores<T, D, NT>(s, qa, kb, lane);

    // Keys outside the span (or past the split) -> -inf (edge tiles only).
    if (!whole(li0)) {
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int pos = range.position(li0 + 8 * j + c + e);
          if (pos < 0 || !span.contains(pos)) s[j][e] = s[j][2 + e] = -INFINITY;
        }
    }
    tile::softmax_step(s, m, l, o);
    tile::accumulate<T, D, NT>(o, s, vb, lane);
  }
  ptx::cp_async_wait<0>();
  // This warp's partial, normalised: O / l, and the log-sum-exp m + log2 l (base 2) of rows g, g + 8.
  float lse[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
    lse[h] = l[h] > 0.0f ? m[h] + log2f(l[h]) : -INFINITY;
#pragma unroll
    for (int j = 0; j < DT; ++j) {
      o[j][2 * h] *= inv;
      o[j][2 * h + 1] *= inv;
    }
  }

  // Reduce-scatter: every warp writes its share of slice r straight into block r's merge buffer
  // (distributed shared memory across the cluster; its own block's without splits; in the
  // workspace where the splits are not a cluster).
  if (clustered) __cluster_barrier_wait();  // every block of the cluster has started
  const DecodeMerge mg = DecodeMerge::of(G, D, p.splits);
  const int P = mg.partials(), src = split * W + warp;
  const std::int64_t pair = static_cast<std::int64_t>(row) * gridDim.y + kvh;  // this (row, kv head)
  float* const own = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(dsmem) + kDecodeSmemBytes<D, Stages>);
  auto buffer = [&](int r) -> float* {
    if constexpr (Memory) return p.part_o + (pair * p.splits + r) * static_cast<std::int64_t>(mg.bytes() / sizeof(float));
    else return p.splits == 1 ? own : cg::this_cluster().map_shared_rank(own, r);
  };
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int qr = g + 8 * h;
    if (qr >= G) continue;
    // Element e = qr * D + 8 j + c lies in slice e / per at offset e % per (e even, per a
    // multiple of 4: e + 1 is in the same slice); stepping j moves e by 8.
    int slice = (qr * D + c) / mg.per, off = qr * D + c - slice * mg.per;
#pragma unroll
    for (int j = 0; j < DT; ++j, off += 8) {
      while (off >= mg.per) {
        off -= mg.per;
        ++slice;
      }
      *reinterpret_cast<float2*>(buffer(slice) + src * mg.per + off) = make_float2(o[j][2 * h], o[j][2 * h + 1]);
    }
    if (lane % 4 == 0)
      for (int r = qr * D / mg.per; r <= ((qr + 1) * D - 1) / mg.per; ++r)
        buffer(r)[P * mg.per + src * mg.rows + (qr - mg.first_row(r))] = lse[h];
  }
  if constexpr (Memory) splits_barrier(p.split_counters + 2 * pair, static_cast<unsigned>(p.splits));
  else if (clustered) cg::this_cluster().sync();  // every partial has arrived; nothing remote is touched after this
  else __syncthreads();

  // This block's slice: each element merged over the P partials by `tpe` neighbouring lanes.
  const int rank = Memory ? split : clustered ? static_cast<int>(cg::this_cluster().block_rank()) : 0;
  const float* merge = Memory ? buffer(rank) : own;
  const int e0 = rank * mg.per, n = max(0, min(G * D, e0 + mg.per) - e0);
  int tpe = 1;
  while (tpe < 32 && 2 * tpe <= P && 2 * tpe * n <= W * 32) tpe *= 2;
  const float* lses = merge + P * mg.per;  // [P][rows]
  const std::int64_t out0 = (static_cast<std::int64_t>(row) * p.heads + kvh * G) * D + e0;  // the slice's first output
  for (int base = 0; base < n * tpe; base += W * 32) {  // block-uniform: whole warps reach the shuffles
    const int idx = base + static_cast<int>(threadIdx.x), e = idx / tpe, sub = idx % tpe;
    float M = -INFINITY, L = 0.0f, O = 0.0f;
    if (idx < n * tpe) {
      const int lr = (e0 + e) / D - mg.first_row(rank);
      constexpr int U = 16;  // partials whose loads are in flight at once
      for (int i0 = sub; i0 < P; i0 += U * tpe) {
        float ls[U], os[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int i = i0 + u * tpe;
          ls[u] = i < P ? lses[i * mg.rows + lr] : -INFINITY;
          os[u] = i < P ? merge[i * mg.per + e] : 0.0f;
        }
        float Mn = M;
#pragma unroll
        for (int u = 0; u < U; ++u) Mn = fmaxf(Mn, ls[u]);
        if (Mn == -INFINITY) continue;  // no keys yet
        const float a = exp2f(M - Mn);
        L *= a;
        O *= a;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const float w = exp2f(ls[u] - Mn);
          L += w;
          O += w * os[u];
        }
        M = Mn;
      }
    }
    for (int off = 1; off < tpe; off *= 2) {
      const float M2 = __shfl_xor_sync(0xffffffffu, M, off), L2 = __shfl_xor_sync(0xffffffffu, L, off);
      const float O2 = __shfl_xor_sync(0xffffffffu, O, off), Mn = fmaxf(M, M2);
      const float a = M == -INFINITY ? 0.0f : exp2f(M - Mn), b = M2 == -INFINITY ? 0.0f : exp2f(M2 - Mn);
      L = L * a + L2 * b;
      O = O * a + O2 * b;
      M = Mn;
    }
    if (idx < n * tpe && sub == 0) {
      const float v = L > 0.0f ? O / L : 0.0f;
      if (p.out16) static_cast<T*>(p.out16)[out0 + e] = from_float<T>(v);  // the next GEMM's 16-bit input
      else p.out[out0 + e] = v;
    }
  }
  if constexpr (Memory) {  // the last block to leave sets both counts back to zero for the next launch
    __syncthreads();
    unsigned* counts = p.split_counters + 2 * pair;
    if (threadIdx.x == 0 && atomicAdd(counts + 1, 1u) == static_cast<unsigned>(p.splits) - 1) counts[0] = counts[1] = 0;
  }
}

/// Prefill on tensor cores for 16-bit KV, head_dim 64 or 128, GQA group G dividing 16:
/// - a block takes rows_per_tile = 64 / G query rows (positions) x the G heads of one KV head;
///   each of its 4 warps holds 16 (position, head) pairs, 16 / G positions, as the A operand of
///   m16n8k16 MMAs in registers for the whole kernel (pre-scaled by scale * log2 e);
/// - 64-key K / V tiles stream through shared memory (cp.async, kPrefillStages deep) and serve
///   all four warps; S, P and O stay in registers (the tile:: steps of decode_kernel_mma);
/// - keys are the union of the rows' spans; tiles not wholly inside every row's span are
///   masked per (row, key); a tile mixing sequences runs one row at a time, as attention_kernel;
/// - split keys write partials (natural-log max) for combine_kernel; unsplit, the output goes
///   to out16 rounded to the KV type when given (the o_proj GEMM's input), else to out.
inline constexpr int kPrefillWarps = 4;
inline constexpr int kPrefillKeys = 64;
inline constexpr int kPrefillStages = 3;
static_assert(kPrefillWarps * 16 == kMaxQueries && kPrefillKeys == kKeyTile);
template <int D>
inline constexpr std::size_t kPrefillSmemBytes = static_cast<std::size_t>(kPrefillStages) * 2 * kPrefillKeys * D * 2;

/// Whether every position of [a, b) is a key of `span`.
__device__ inline bool covers(const KeySpans& span, int a, int b) {
  return b <= span.sink_end || (a >= span.begin && b <= span.end);
}

template <class Slot, int D>
__global__ void __launch_bounds__(kPrefillWarps * 32) prefill_kernel_mma(Params<Slot> p) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(p.slot.key(0, 0, 0))>>;
  static_assert(sizeof(T) == 2 && (D == 64 || D == 128));
  constexpr int W = kPrefillWarps, KT = kPrefillKeys, Stages = kPrefillStages;
  constexpr int NT = KT / 8, DT = D / 8, Chunks = D / 8, TileBytes = KT * D * 2;
  extern __shared__ float4 psmem[];  // [stage][K, V][KT][D], rows swizzled
  __shared__ int r_seq[kMaxQueries];
  __shared__ KeySpans r_span[kMaxQueries];

  pdl::allow_next();
  pdl::wait();  // q and the newest keys come from the kernels just before
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int split = blockIdx.x, kvh = blockIdx.y;
  const int G = p.group, per_warp = 16 / G, QT = p.rows_per_tile;
  // Last query tile first: under a causal mask the later rows scan the most keys, so the grid's
  // last wave holds the shortest blocks (5.7% off the attention at 8 x 1024, H100).
  const int row0 = (gridDim.z - 1 - blockIdx.z) * QT, nrows = min(QT, p.n - row0);
  for (int r = tid; r < QT; r += W * 32) {
    const RowInfo ri = r < nrows ? p.rows[row0 + r] : RowInfo{-1, 0};
    r_seq[r] = ri.seq;
    r_span[r] = r < nrows ? mask_keys(p.mask, ri.pos) : KeySpans{0, 0, 0};
  }
  __syncthreads();
  bool uniform = true;
  for (int r = 1; r < nrows; ++r) uniform = uniform && r_seq[r] == r_seq[0];

  // This lane's A rows g and g + 8: (position, head) = (qr / G, qr % G) of the warp's 16.
  const int g = lane / 4, c = (lane % 4) * 2;
  int lr[2];    // the row's index in the block's tile
  bool lv[2];   // the row exists
  KeySpans sp[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    lr[h] = warp * per_warp + (g + 8 * h) / G;
    lv[h] = lr[h] < nrows;
    sp[h] = lv[h] ? r_span[lr[h]] : KeySpans{0, 0, 0};
  }
  std::uint32_t qa[D / 16][4];
  {
    const float qs = p.scale * 1.4426950408889634f;  // log2(e): softmax in base 2
#pragma unroll
    for (int k = 0; k < D / 16; ++k)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int h = r % 2, qr = g + 8 * h, d = 16 * k + 8 * (r / 2) + c;
        const float* q = p.q + (static_cast<std::int64_t>(row0 + lr[h]) * p.heads + kvh * G + qr % G) * D + d;
        const float2 v = lv[h] ? *reinterpret_cast<const float2*>(q) : make_float2(0.f, 0.f);
        qa[k][r] = ptx::pack2<T>(v.x * qs, v.y * qs);
      }
  }

  float o[DT][4];
#pragma unroll
  for (int j = 0; j < DT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const std::uint32_t base = ptx::smem_address(psmem);

  const int passes = uniform ? 1 : nrows;
  for (int pass = 0; pass < passes; ++pass) {
    const int ra = uniform ? 0 : pass, rb = uniform ? nrows : pass + 1;
    const SplitRange range = union_split_range(r_span, ra, rb, p.splits, split);
    const int start = range.start, stop = range.stop;
    const int tiles = start < stop ? (stop - start + KT - 1) / KT : 0;
    const int seq = r_seq[ra];
    bool active[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) active[h] = lv[h] && lr[h] >= ra && lr[h] < rb;

    auto issue = [&](int it) {  // tile it into stage it % Stages; always commits a group
      if (it < tiles) {
        const std::uint32_t kb = base + (it % Stages) * 2 * TileBytes, vb = kb + TileBytes;
        const int li0 = start + it * KT;
        bool done = false;
        if constexpr (kLinearPositions<Slot>) {
          if (range.consecutive(li0, KT)) {
            copy_consecutive_tile<D, KT, W * 32>(p.slot, seq, range.position(li0), kvh, kb, vb, tid);
            done = true;
          }
        }
        if (!done)
          for (int i = tid; i < KT * Chunks; i += W * 32) {
            const int key = i / Chunks, ch = i % Chunks, pos = range.position(li0 + key);
            const bool ok = pos >= 0;
            const void* kp = ok ? static_cast<const void*>(p.slot.key(seq, pos, kvh) + 8 * ch) : p.q;
            const void* vp = ok ? static_cast<const void*>(p.slot.value(seq, pos, kvh) + 8 * ch) : p.q;
            ptx::cp_async_16(kb + tile::at<D>(key, ch), kp, ok);
            ptx::cp_async_16(vb + tile::at<D>(key, ch), vp, ok);
          }
      }
      ptx::cp_async_commit();
    };
    for (int it = 0; it < Stages - 1; ++it) issue(it);
    for (int it = 0; it < tiles; ++it) {
      ptx::cp_async_wait<Stages - 2>();  // this thread's copies of tile it are done ...
      __syncthreads();                   // ... and everyone's; every warp is past tile it - 1
      issue(it + Stages - 1);
      const std::uint32_t kb = base + (it % Stages) * 2 * TileBytes, vb = kb + TileBytes;
      const int li0 = start + it * KT;

      float s[NT][4];
      tile::scores<T, D, NT>(s, qa, kb, lane);
      // Consecutive positions (no sink / window seam) inside every active row's span: no mask.
      bool whole = uniform && range.consecutive(li0, KT);
      if (whole) {
        const int p0 = range.position(li0);
        whole = (!active[0] || covers(sp[0], p0, p0 + KT)) && (!active[1] || covers(sp[1], p0, p0 + KT));
      }
      if (!__all_sync(0xffffffffu, whole)) {
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int pos = range.position(li0 + 8 * j + c + e);
#pragma unroll
            for (int h = 0; h < 2; ++h)
              if (!active[h] || pos < 0 || !sp[h].contains(pos)) s[j][2 * h + e] = -INFINITY;
          }
      }
      tile::softmax_step(s, m, l, o);
      tile::accumulate<T, D, NT>(o, s, vb, lane);
    }
    ptx::cp_async_wait<0>();
    __syncthreads();  // the next pass refills the stages
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (!lv[h]) continue;
    const std::int64_t out_head = static_cast<std::int64_t>(row0 + lr[h]) * p.heads + kvh * G + (g + 8 * h) % G;
    if (p.splits == 1) {
      const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
#pragma unroll
      for (int j = 0; j < DT; ++j) {
        const float a = o[j][2 * h] * inv, b = o[j][2 * h + 1] * inv;
        if (p.out16)
          *reinterpret_cast<std::uint32_t*>(static_cast<T*>(p.out16) + out_head * D + 8 * j + c) = ptx::pack2<T>(a, b);
        else
          *reinterpret_cast<float2*>(p.out + out_head * D + 8 * j + c) = make_float2(a, b);
      }
    } else {
      const std::int64_t part = out_head * p.splits + split;
#pragma unroll
      for (int j = 0; j < DT; ++j)
        *reinterpret_cast<float2*>(p.part_o + part * D + 8 * j + c) = make_float2(o[j][2 * h], o[j][2 * h + 1]);
      if (lane % 4 == 0) {
        p.part_ml[part * 2] = m[h] * 0.6931471805599453f;  // base 2 -> natural, as combine_kernel reads it
        p.part_ml[part * 2 + 1] = l[h];
      }
    }
  }
}

/// StreamingLLM (MaskSpec::rope_theta_on_read > 0): q and the cached keys are
/// unrotated; each is rotated here by its cache position (KeySpans::cache_position,
/// query_cache_position), which depends on the query row, so this path is one
/// warp per (row, query head) walking its keys with an online softmax in fp32.
/// Lane l owns dims l, l + 32, ...; rotate_half pairs i with i + D/2, both in lane l.
template <class Slot, int D>
__global__ void __launch_bounds__(32) attention_rotated_kernel(Params<Slot> p, float theta) {
  constexpr int N = D / 32, H = N / 2;  // dims per lane, of which H in the first half
  pdl::allow_next();
  pdl::wait();
  const int lane = threadIdx.x, row = blockIdx.x / p.heads, h = blockIdx.x % p.heads, kvh = h / p.group;
  const RowInfo ri = p.rows[row];
  const KeySpans span = mask_keys(p.mask, ri.pos);
  float* out = p.out + static_cast<std::int64_t>(row) * p.heads * D + h * D;
  if (span.count() == 0) {
#pragma unroll
    for (int k = 0; k < N; ++k) out[lane + 32 * k] = 0.0f;
    return;
  }
  float inv_freq[H];
#pragma unroll
  for (int k = 0; k < H; ++k) {
    const float e = static_cast<float>(2 * (lane + 32 * k)) / static_cast<float>(D);
    inv_freq[k] = 1.0f / static_cast<float>(pow(static_cast<double>(theta), static_cast<double>(e)));
  }
  auto rotate = [&](float* v, int pos) {
#pragma unroll
    for (int k = 0; k < H; ++k) {
      float sn, cs;
      sincosf(static_cast<float>(pos) * inv_freq[k], &sn, &cs);
      const float a = v[k], b = v[k + H];
      v[k] = a * cs - b * sn;
      v[k + H] = b * cs + a * sn;
    }
  };
  float q[N];
  const float* qp = p.q + static_cast<std::int64_t>(row) * p.heads * D + h * D;
#pragma unroll
  for (int k = 0; k < N; ++k) q[k] = qp[lane + 32 * k];
  rotate(q, span.query_cache_position(ri.pos));
  float m = -INFINITY, l = 0.0f, o[N];
#pragma unroll
  for (int k = 0; k < N; ++k) o[k] = 0.0f;
  auto visit = [&](int j) {
    const auto* kp = p.slot.key(ri.seq, j, kvh);
    const auto* vp = p.slot.value(ri.seq, j, kvh);
    float kv[N];
#pragma unroll
    for (int k = 0; k < N; ++k) kv[k] = to_float(kp[lane + 32 * k]);
    rotate(kv, span.cache_position(j));
    float dot = 0.0f;
#pragma unroll
    for (int k = 0; k < N; ++k) dot += q[k] * kv[k];
#pragma unroll
    for (int off = 16; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    const float sc = dot * p.scale, m_new = fmaxf(m, sc), corr = expf(m - m_new), pj = expf(sc - m_new);
    l = l * corr + pj;
#pragma unroll
    for (int k = 0; k < N; ++k) o[k] = o[k] * corr + pj * to_float(vp[lane + 32 * k]);
    m = m_new;
  };
  for (int j = 0; j < span.sink_end; ++j) visit(j);
  for (int j = span.begin; j < span.end; ++j) visit(j);
#pragma unroll
  for (int k = 0; k < N; ++k) out[lane + 32 * k] = o[k] / l;
}

/// Merges split partials: out = sum_s o_s e^{m_s - M} / sum_s l_s e^{m_s - M}.
/// One block of D threads per (row, head): the split weights are computed in
/// parallel, then each thread sums its dimension over the splits with the
/// loads unrolled (a serial dependent loop here cost more than the attention).
template <int D>
__global__ void __launch_bounds__(D) combine_kernel(const float* part_o, const float* part_ml, float* out, int heads,
                                                    int splits) {
  using Reduce = cub::BlockReduce<float, D>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ float w[kMaxSplits];
  __shared__ float M_s, L_s;
  pdl::allow_next();
  pdl::wait();
  const int row = blockIdx.x / heads, h = blockIdx.x % heads, d = threadIdx.x;
  const std::int64_t base = (static_cast<std::int64_t>(row) * heads + h) * splits;
  float m = -INFINITY;
  for (int s = d; s < splits; s += D) m = fmaxf(m, part_ml[(base + s) * 2]);
  const float M = Reduce(tmp).Reduce(m, [](float a, float b) { return fmaxf(a, b); });
  if (d == 0) M_s = M;
  __syncthreads();
  float l = 0.0f;
  for (int s = d; s < splits; s += D) {
    const float ms = part_ml[(base + s) * 2];
    const float ws = (M_s == -INFINITY || ms == -INFINITY) ? 0.0f : expf(ms - M_s);
    w[s] = ws;
    l += part_ml[(base + s) * 2 + 1] * ws;
  }
  const float L = Reduce(tmp).Sum(l);
  if (d == 0) L_s = L;
  __syncthreads();
  float o = 0.0f;
#pragma unroll 8
  for (int s = 0; s < splits; ++s) o += part_o[(base + s) * D + d] * w[s];
  out[static_cast<std::int64_t>(row) * heads * D + h * D + d] = L_s > 0.0f ? o / L_s : 0.0f;
}

}  // namespace attn

/// How one attention call is cut into blocks.
struct AttentionLaunch {
  int rows_per_tile = 1;
  int splits = 1;
  /// One row per sequence (decode): no kernel this one may overlap writes a key at a
  /// position below a row's own, so decode blocks copy those keys before waiting for it.
  bool older_keys_settled = false;
  /// Decode rows on tensor cores whose grid runs one block per SM: the splits merge through the
  /// workspace instead of as one cluster (decode_kernel_mma, plan_attention).
  bool splits_through_memory = false;
};

/// Throws InvalidArgument unless `kv_heads` >= 1 divides `heads` >= 1 (a GQA group per KV head).
inline void check_heads(int heads, int kv_heads) {
  if (heads < 1 || kv_heads < 1 || heads % kv_heads != 0)
    throw InvalidArgument("cuda attention: heads = " + std::to_string(heads) + " is not a positive multiple of kv_heads = " +
                          std::to_string(kv_heads));
}

/// Whether prefill tiles over `slot` with `heads` query heads run on tensor cores
/// (prefill_kernel_mma): 16-bit KV, head_dim 64 or 128, a GQA group dividing 16.
template <class Slot>
bool prefill_on_tensor_cores(const Slot& slot, int heads) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(slot.key(0, 0, 0))>>;
  const int group = slot.kv_heads > 0 ? heads / slot.kv_heads : 0;
  return sizeof(T) == 2 && group > 0 && 16 % group == 0 && (slot.head_dim == 64 || slot.head_dim == 128);
}

/// Picks the tiling. Prefill (rows come in runs of one sequence): whole query
/// tiles, and key splits up to a few blocks per SM (`prefill_mma`, tiles on tensor
/// cores: only up to one block per SM, since there the split merge costs about as
/// much as the attention itself: 1K rows x 1, H100, docs/benchmarks-cuda.md).
/// Decode (one row per block), at most one split per 512 keys and kDecodeMaxSplits
/// in all: with few rows the split merge, not the key stream, sets the time
/// (forced-split sweep on an H100, docs/benchmarks-cuda.md: 1K keys x 1 row
/// fastest at 4 splits, 16K x 1 at 16, where the uncapped plan took 16 and 60).
/// - Long rows (kDecodeLongKeys) of few (row, kv head) pairs: as many splits as
///   keep the grid within half the SMs, so that every block runs alone on its SM
///   with the deep pipeline (decode_runs_deep) and the next kernel's blocks find
///   free SMs. At 2-16 rows x 4K-32K keys that was 3-16% faster than filling
///   both block slots of every SM (8 x 16K: 2 splits 1087 us, 8 splits 1240;
///   16 x 32K: 1 split 3993 us, 4 splits 4537; Update 14).
/// - Otherwise the fewest splits whose blocks fill the SMs' decode_kernel_mma
///   slots evenly (>= 90% of the last wave busy), since every split of a row
///   costs the same.
/// `max_keys` (a bound on any row's key count, e.g. a power of two above the
/// longest position) keeps at least two key tiles per split. No rows: the default plan
/// (cuda::attention launches nothing). Throws InvalidArgument unless kv_heads >= 1 divides
/// heads >= 1.
inline AttentionLaunch plan_attention(int n, int heads, int kv_heads, bool prefill_rows, int num_sms,
                                      int max_keys = 1 << 30, bool prefill_mma = false) {
  AttentionLaunch l;
  check_heads(heads, kv_heads);
  if (n <= 0) return l;
  const int group = heads / kv_heads;
  l.rows_per_tile = prefill_rows ? std::max(1, attn::kMaxQueries / group) : 1;
  l.older_keys_settled = !prefill_rows;
  const int tiles = (n + l.rows_per_tile - 1) / l.rows_per_tile;
  const long blocks = static_cast<long>(tiles) * kv_heads;
  const int most = std::max(1, std::min(attn::kMaxSplits, max_keys / (2 * attn::kKeyTile)));
  if (prefill_rows) {
    const long want = (prefill_mma ? 1L : 4L) * num_sms;
    l.splits = blocks >= want ? 1 : static_cast<int>(std::min<long>(attn::kMaxSplits, (want + blocks - 1) / blocks));
    l.splits = std::min(l.splits, most);
    return l;
  }
  const int decode_most = std::max(1, std::min({most, max_keys / 512, attn::kDecodeMaxSplits}));
  const long alone = attn::decode_deep_blocks(num_sms) / blocks;  // splits that keep the grid deep
  if (max_keys >= attn::kDecodeLongKeys && alone >= 1) {
    l.splits = static_cast<int>(std::min<long>(decode_most, alone));
    l.splits_through_memory = l.splits >= attn::kDecodeMemoryMergeSplits &&
                              static_cast<long>(n) * max_keys >= attn::kDecodeMemoryMergeKeys;
    return l;
  }
  const long slots = static_cast<long>(num_sms) * attn::kDecodeBlocksPerSm;
  double best = 0.0;
  for (int s = 1; s <= decode_most; ++s) {
    const long b = blocks * s, waves = (b + slots - 1) / slots;
    const double busy = static_cast<double>(b) / static_cast<double>(waves * slots);
    if (busy > best + 1e-9) {
      best = busy;
      l.splits = s;
    }
    if (busy >= 0.9) break;
  }
  return l;
}

/// Workspace floats plan `l` needs for n rows, a bound for every path: with splits, the decode
/// kernel's counts (2 x attn::kDecodeSplitCounters), then the split partials, or the decode
/// kernel's merge buffers where its splits are not a cluster.
inline std::size_t attention_workspace_floats(int n, int heads, int head_dim, const AttentionLaunch& l) {
  if (l.splits == 1) return 0;
  std::size_t per_row = static_cast<std::size_t>(heads) * l.splits * (head_dim + 2);
  if (l.rows_per_tile == 1) {  // decode rows: one merge buffer per split of each (row, kv head)
    const int splits = std::min(l.splits, attn::kDecodeMaxSplits);
    for (int g = 1; g <= std::min(heads, attn::kDecodeMaxGroup); ++g)
      if (heads % g == 0)
        per_row = std::max(per_row, static_cast<std::size_t>(heads / g) * splits *
                                        (attn::DecodeMerge::of(g, head_dim, splits).bytes() / sizeof(float)));
  }
  return 2 * attn::kDecodeSplitCounters + static_cast<std::size_t>(n) * per_row;
}

/// cuda::attention's scratch memory: the decode kernel's arrival counts, then the split
/// partials. It owns its memory because the counts must be zero before every launch: they are
/// allocated zeroed and every launch leaves them zero, which a caller's own buffer would not
/// guarantee (wrong results without an error). Launches that share one must be ordered (one per
/// stream).
class AttentionWorkspace {
public:
  AttentionWorkspace() = default;
  /// Room for at least `floats` (attention_workspace_floats); allocates, zeroed, only when it
  /// grows, so a workspace reserved before a graph capture allocates nothing inside it.
  void reserve(std::size_t floats) {
    if (floats <= buffer_.size()) return;
    buffer_ = DeviceBuffer<float>(floats);
    // Its zeroing went to the legacy stream: done before a launch on any stream, blocking or not.
    LCKV_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }
  std::size_t floats() const { return buffer_.size(); }
  const void* data() const { return buffer_.data(); }
  /// [kCounterFloats]: a count of arrivals and one of departures per (row, kv head).
  unsigned* counters() { return buffer_.size() ? reinterpret_cast<unsigned*>(buffer_.data()) : nullptr; }
  /// [partial_floats()] after the counts: written by every launch before it is read (tests poison
  /// it). None while the workspace holds no more than the counts (a reserve below any plan's size).
  float* partials() { return partial_floats() ? buffer_.data() + kCounterFloats : nullptr; }
  std::size_t partial_floats() const { return buffer_.size() > kCounterFloats ? buffer_.size() - kCounterFloats : 0; }

private:
  static constexpr std::size_t kCounterFloats = 2 * attn::kDecodeSplitCounters;
  static_assert(sizeof(unsigned) == sizeof(float));
  DeviceBuffer<float> buffer_;
};

template <class Slot, int D, int MaxQ>
void launch_attention_q(const attn::Params<Slot>& p, int kv_heads, cudaStream_t s) {
  const int nq = p.rows_per_tile * p.group;
  const std::size_t smem = attn::smem_floats<D>(nq) * sizeof(float);
  prepare_kernel(attn::attention_kernel<Slot, D, MaxQ>, static_cast<int>(attn::smem_floats<D>(MaxQ) * sizeof(float)));
  const dim3 grid(p.splits, kv_heads, (p.n + p.rows_per_tile - 1) / p.rows_per_tile);
  launch("attention_kernel", attn::attention_kernel<Slot, D, MaxQ>, grid, attn::kThreads, smem, s, p);
}

template <int D, class Slot>
void launch_combine(const attn::Params<Slot>& p, cudaStream_t s) {
  launch("attention combine_kernel", attn::combine_kernel<D>, p.n * p.heads, D, 0, s,
         static_cast<const float*>(p.part_o), static_cast<const float*>(p.part_ml), p.out, p.heads, p.splits);
}

/// decode_kernel_mma's dynamic shared memory at `Stages` for params p: the copy stages and the
/// merge buffer; raises the kernel's limits to the largest such size (and allows 16-block
/// clusters) on first use.
template <class Slot, int D, int Stages, bool Memory = false>
std::size_t decode_mma_smem(const attn::Params<Slot>& p) {
  constexpr std::size_t stages = attn::kDecodeSmemBytes<D, Stages>;
  constexpr std::size_t most = stages + attn::DecodeMerge::most_bytes(D);
  prepare_kernel(attn::decode_kernel_mma<Slot, D, Stages, Memory>, static_cast<int>(most), /*clusters16=*/true);
  return attn::decode_smem_bytes<D, Stages>(p.group, p.splits);
}

/// Whether decode_kernel_mma blocks at `Stages` with p's merge buffer fit kDecodeBlocksPerSm
/// times on an SM, as plan_attention counts on.
template <class Slot, int D, int Stages>
bool decode_fits_twice(const attn::Params<Slot>& p) {
  return attn::decode_smem_bytes<D, Stages>(p.group, p.splits) <= dynamic_smem_per_block(attn::kDecodeBlocksPerSm);
}

/// decode_kernel_mma with `Stages`-deep copy pipelines over `grid`, the splits of a row
/// (grid.x) as one cluster, or merging through memory (`Memory`, p.split_counters set).
template <class Slot, int D, int Stages, bool Memory = false>
void launch_decode_mma(const attn::Params<Slot>& p, dim3 grid, cudaStream_t s) {
  launch_clustered("decode_kernel_mma", attn::decode_kernel_mma<Slot, D, Stages, Memory>, grid, Memory ? 1 : grid.x,
                   attn::kDecodeWarps * 32, decode_mma_smem<Slot, D, Stages, Memory>(p), s, p);
}

/// prefill_kernel_mma over p's query tiles (rows_per_tile rows each), then combine_kernel for split
/// keys (which writes the fp32 output).
template <class Slot, int D>
void launch_prefill_mma(const attn::Params<Slot>& p, int kv_heads, cudaStream_t s) {
  constexpr std::size_t smem = attn::kPrefillSmemBytes<D>;
  prepare_kernel(attn::prefill_kernel_mma<Slot, D>, static_cast<int>(smem));
  const dim3 grid(p.splits, kv_heads, (p.n + p.rows_per_tile - 1) / p.rows_per_tile);
  launch("prefill_kernel_mma", attn::prefill_kernel_mma<Slot, D>, grid, attn::kPrefillWarps * 32, smem, s, p);
  if (p.splits > 1) launch_combine<D>(p, s);
}

/// Whether a decode grid takes the deeper pipeline: its shared memory leaves one block per SM,
/// which pays off only when the grid covers at most half the SMs (attn::decode_deep_blocks:
/// batch 1-2, and long rows up to batch 16, which plan_attention splits to fit; a warp's own
/// copies in flight set the time; at batch 8 / 1K it ran 50% slower, docs/benchmarks-cuda.md).
inline bool decode_grid_runs_deep(dim3 grid) {
  return static_cast<long>(grid.x) * grid.y * grid.z <= attn::decode_deep_blocks(device_sms());
}

/// Whether every cluster of a deep decode grid (a row's grid.x splits) fits on the device at
/// once: a cluster's blocks share a GPC.
template <class Slot, int D>
bool decode_clusters_fit_deep(const attn::Params<Slot>& p, dim3 grid) {
  if (grid.x == 1) return true;
  // Clusters the device holds at once, per cluster size (the answer depends on nothing else: at
  // the deep setting one block fills an SM whatever its merge buffer); 0: not asked yet. Threads
  // that race here compute the same value.
  static std::atomic<int> fits[attn::kDecodeMaxSplits + 1] = {};
  int most = fits[grid.x].load(std::memory_order_relaxed);
  if (most == 0) {
    constexpr int Deep = attn::kDecodeDeepStages;
    cudaLaunchAttribute cluster;
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim = {grid.x, 1, 1};
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = attn::kDecodeWarps * 32;
    config.dynamicSmemBytes = decode_mma_smem<Slot, D, Deep>(p);
    config.attrs = &cluster;
    config.numAttrs = 1;
    LCKV_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&most, attn::decode_kernel_mma<Slot, D, Deep, false>, &config));
    if (most == 0) most = -1;  // remembered: this cluster size cannot run at the deep setting
    fits[grid.x].store(most, std::memory_order_relaxed);
  }
  return most > 0 && static_cast<long>(grid.y) * grid.z <= most;
}

/// Decode rows (one per block) of 16-bit KV go to decode_kernel_mma (splits, at most
/// kDecodeMaxSplits, merged inside a cluster, or through the workspace with its counts at
/// `split_counters` where the plan asks for it and the grid runs deep; 4 stages deep for small
/// grids, else 3, or 2 where 3 with the merge buffer would not fit twice per SM), of fp32 KV at
/// head_dim 64 to decode_kernel; prefill tiles and the rest to attention_kernel, a
/// small-register variant when few queries share a tile.
template <class Slot, int D>
bool launch_attention_d(attn::Params<Slot> p, int kv_heads, unsigned* split_counters, cudaStream_t s) {
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(p.slot.key(0, 0, 0))>>;
  if (p.rows_per_tile == 1) {
    if constexpr (sizeof(T) == 2) {
      if (p.group <= attn::kDecodeMaxGroup) {
        constexpr int Deep = attn::kDecodeDeepStages;
        p.splits = std::min(p.splits, attn::kDecodeMaxSplits);  // a cluster holds a row's splits
        const dim3 grid(p.splits, kv_heads, p.n);
        const bool deep = decode_grid_runs_deep(grid);
        // A deep grid with splits has at most half the SMs' blocks, so far fewer (row, kv head)
        // pairs than counts; the bound keeps the counts' indices in range whatever the device.
        if (deep && p.splits > 1 && split_counters && p.n * kv_heads <= attn::kDecodeSplitCounters) {
          p.split_counters = split_counters;
          launch_decode_mma<Slot, D, Deep, true>(p, grid, s);
        } else if (deep && decode_clusters_fit_deep<Slot, D>(p, grid))
          launch_decode_mma<Slot, D, Deep>(p, grid, s);
        else if (decode_fits_twice<Slot, D, attn::kDecodeStages>(p))
          launch_decode_mma<Slot, D, attn::kDecodeStages>(p, grid, s);
        else
          launch_decode_mma<Slot, D, attn::kDecodeShallowStages>(p, grid, s);
        return p.out16 != nullptr;
      }
    } else if constexpr (D == 64) {
      if (p.group <= attn::kDecodeQueries) {
        launch("decode_kernel", attn::decode_kernel<Slot, D>, dim3(p.splits, kv_heads, p.n), attn::kThreads, 0, s, p);
        if (p.splits > 1) launch_combine<D>(p, s);
        return false;
      }
    }
  }
  if constexpr (sizeof(T) == 2) {
    if (p.rows_per_tile > 1 && p.rows_per_tile * p.group == attn::kMaxQueries && prefill_on_tensor_cores(p.slot, p.heads)) {
      launch_prefill_mma<Slot, D>(p, kv_heads, s);
      return p.out16 != nullptr && p.splits == 1;
    }
  }
  if (p.rows_per_tile * p.group <= attn::kDecodeQueries) launch_attention_q<Slot, D, attn::kDecodeQueries>(p, kv_heads, s);
  else launch_attention_q<Slot, D, attn::kMaxQueries>(p, kv_heads, s);
  if (p.splits > 1) launch_combine<D>(p, s);
  return false;
}

/// out[r, h] = softmax over the keys mask allows at rows[r].pos of q.K / sqrt(d), times V;
/// zero where it allows none. q, out: [n, heads * head_dim] device fp32; rows: [n] device.
/// With splits (l.splits > 1), `workspace` must hold attention_workspace_floats(...) floats
/// (AttentionWorkspace::reserve). With `out16`
/// ([n, heads * head_dim] of the KV type), decode rows on tensor cores write their output
/// there, rounded, instead of `out` (the o_proj GEMM's input without a rounding pass);
/// returns whether they did (false: the output is in `out`).
template <class Slot>
bool attention(MatrixView<const float> q, const Slot& slot, const RowInfo* rows, const MaskSpec& mask, int heads,
               MatrixView<float> out, const AttentionLaunch& l, AttentionWorkspace& workspace, cudaStream_t s,
               void* out16 = nullptr) {
  if (q.rows == 0) return false;
  check_heads(heads, slot.kv_heads);
  const int group = heads / slot.kv_heads;
  if (group * l.rows_per_tile > attn::kMaxQueries)
    throw InvalidArgument("cuda attention: " + std::to_string(group) + " query heads per KV head x " +
                          std::to_string(l.rows_per_tile) + " rows exceeds " + std::to_string(attn::kMaxQueries));
  if (l.splits < 1 || l.splits > attn::kMaxSplits)
    throw InvalidArgument("cuda attention: splits = " + std::to_string(l.splits) + ", expected 1.." +
                          std::to_string(attn::kMaxSplits));
  if (l.splits > 1) {
    const std::size_t need = attention_workspace_floats(q.rows, heads, slot.head_dim, l);
    if (workspace.floats() < need)
      throw InvalidArgument("cuda attention: the workspace holds " + std::to_string(workspace.floats()) +
                            " floats, " + std::to_string(need) + " expected for " + std::to_string(q.rows) +
                            " rows at " + std::to_string(l.splits) + " splits (AttentionWorkspace::reserve)");
  }
  float* partials = l.splits > 1 ? workspace.partials() : nullptr;
  attn::Params<Slot> p{q.data,
                       out.data,
                       rows,
                       q.rows,
                       slot,
                       DeviceMask::of(mask),
                       heads,
                       group,
                       l.rows_per_tile,
                       l.splits,
                       1.0f / std::sqrt(static_cast<float>(slot.head_dim)),
                       partials,
                       partials ? partials + static_cast<std::size_t>(q.rows) * heads * l.splits * slot.head_dim : nullptr,
                       out16,
                       l.older_keys_settled,
                       nullptr};
  unsigned* const split_counters = l.splits > 1 && l.splits_through_memory ? workspace.counters() : nullptr;
  if (mask.rope_theta_on_read > 0.0f) {
    auto rotated = [&](auto d) {
      constexpr int D = decltype(d)::value;
      launch("attention_rotated_kernel", attn::attention_rotated_kernel<Slot, D>, q.rows * heads, 32, 0, s, p,
             mask.rope_theta_on_read);
    };
    if (slot.head_dim == 64) rotated(std::integral_constant<int, 64>{});
    else if (slot.head_dim == 128) rotated(std::integral_constant<int, 128>{});
    else
      throw InvalidArgument("cuda attention: head_dim = " + std::to_string(slot.head_dim) +
                            " is not compiled in (supported: 64, 128)");
    return false;
  }
  switch (slot.head_dim) {
    case 64: return launch_attention_d<Slot, 64>(p, slot.kv_heads, split_counters, s);
    case 128: return launch_attention_d<Slot, 128>(p, slot.kv_heads, split_counters, s);
    default:
      throw InvalidArgument("cuda attention: head_dim = " + std::to_string(slot.head_dim) +
                            " is not compiled in (supported: 64, 128)");
  }
}

}  // namespace lckv::cuda
