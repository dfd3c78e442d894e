#pragma once
/// \file gemv.cuh
/// The weight-streaming GEMV of decode (one row of 16-bit weights, 1-8 of fp32, 1-8 of
/// either with the skinny GEMM off; each row adds accumulators, so the 2-8-row instantiations
/// take 84-168 registers per thread, at most half the warps per SM of the one-row kernel, and
/// the tensor-core skinny GEMM streams 16-bit weights faster there): y (+)= x W^T with x fp32
/// [rows, in], W [out, in] row-major (fp32, bf16, fp16), y fp32 [rows, out].
/// One launch may also
///   - normalise x first (RMSNorm: the norm weight scales x as it is read, the
///     block sums x's squares in the same pass, 1 / rms scales the sums),
///   - feed up to three weight matrices with the same x (q, k and v),
///   - rotate q and k by RoPE and write k and v into a KV cache slot instead of
///     y (RopeStore: a layer's whole attention input in one launch),
///   - or compute the MLP's silu(x Wg^T) * (x Wu^T) (gate, up, SwiGLU).
/// Launched with programmatic dependent launch (launch.cuh): before waiting for
/// the previous kernel a block already pulls its weight tile into L2.

#include <cstdint>

#include "lckv/core/buffer.hpp"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/launch.cuh"
#include "lckv/cuda/linear_io.cuh"
#include "lckv/cuda/mma.cuh"
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

/// Blocks per SM that kernels::gemv's registers must leave room for: one-row
/// tiles of 4 outputs (o_proj, down_proj) fill every SM four deep in one wave,
/// other one-row tiles three deep (four made the GLU spill and the batch-1 step 4-5% slower,
/// docs/benchmarks-cuda.md), 8-row groups two deep.
constexpr int gemv_min_blocks(int R, int TO) { return R == 1 ? (TO <= 4 ? 4 : 3) : (R == 8 ? 2 : 1); }

/// y[r, o] (+)= sum_i xn[r, i] W[o, i], xn = x or RMSNorm(x). A block of 256
/// threads owns TO consecutive outputs of one matrix and one group of up to R
/// rows (block id = tile * groups + group, so the groups that share a weight
/// tile run together and re-read it from L2). Its threads split `in` into
/// 16-byte weight chunks (chunk c of every output row goes to thread c mod 256:
/// each warp reads 512 contiguous bytes per row), keep TO * KU independent
/// weight loads in flight, and reuse each x value (fp32, from L1) for TO
/// outputs. Partial sums: warp shuffles, then one shared-memory pass.
/// GLU: the block's first TO / 2 outputs are rows of w (gate), the other TO / 2
/// the same rows of `up`, and it writes y = silu(gate) * up (`accumulate` ignored).
/// Epi: PlainStore, or RopeStore<Slot> (its first TO / 2 outputs are
/// i.. of a head, the other TO / 2 the partners i + head_dim / 2..).
template <class W, int R, int TO, bool GLU, bool NORM, class Epi = PlainStore>
__global__ void __launch_bounds__(256, gemv_min_blocks(R, TO))
    gemv(const float* __restrict__ x, LinearTargets<W> targets, int rows, int in, int groups, bool accumulate,
         const W* __restrict__ up, InputNorm<W> norm, Epi epi = {}) {
  constexpr bool ROPE = !std::is_same_v<Epi, PlainStore>;
  static_assert(!GLU || TO % 2 == 0);
  static_assert(!ROPE || (!GLU && TO % 2 == 0));
  constexpr int TY = GLU ? TO / 2 : TO;  // outputs of y per block
  constexpr int V = 16 / sizeof(W);
  constexpr int T = 256, WARPS = T / 32;
  constexpr int KU = TO >= 8 ? 1 : (TO >= 4 ? 2 : 8);  // chunks per output per thread and round
  pdl::allow_next();
  const int block = static_cast<int>(blockIdx.x);
  // This block's matrix (unrolled selects: indexing the parameter struct would copy it to local memory).
  const W* w = targets.w[0];
  float* y = targets.y[0];
  int out = targets.out[0], local = block, target = 0;
#pragma unroll
  for (int k = 1; k < LinearTargets<W>::kMax; ++k)
    if (k < targets.count && block >= targets.tile_end[k - 1]) {
      w = targets.w[k];
      y = targets.y[k];
      out = targets.out[k];
      local = block - targets.tile_end[k - 1];
      target = k;
    }
  const int group = local % groups;
  const int tile = local / groups;
  const int r0 = group * R;
  const int nr = min(R, rows - r0);
  const int chunks = in / V;
  // Output (row of w) of the block's t-th y output, t < TY.
  auto output = [&](int t) {
    if constexpr (ROPE) {
      const int half = epi.head_dim / 2, pairs = TY / 2, per_head = half / pairs;
      const int i = tile % per_head * pairs + (t < pairs ? t : t - pairs);
      return tile / per_head * epi.head_dim + (t < pairs ? i : half + i);
    } else {
      return tile * TY + t;
    }
  };
  const W* wrow[TO];
#pragma unroll
  for (int t = 0; t < TO; ++t) {
    const int o = min(output(t < TY ? t : t - TY), out - 1);
    wrow[t] = (t < TY ? w : up) + static_cast<std::int64_t>(o) * in;
  }
  // RoPE: the frequency of this thread's output in the epilogue (a double pow) needs no earlier
  // kernel, so it is worked out before waiting for one.
  float freq = 0.0f;
  if constexpr (ROPE)
    if (epi.theta > 0.0f && threadIdx.x < TY * R) freq = epi.inv_freq(output(static_cast<int>(threadIdx.x) / R));
  // Weights never change: start pulling this block's tile before the previous kernel ends.
  {
    const int lines = (in * static_cast<int>(sizeof(W)) + 127) / 128;
    for (int i = threadIdx.x; i < TO * lines; i += T) {  // (not wrow[i / lines]: a dynamic index would spill it)
      const int t = i / lines;
      const W* row = (t < TY ? w : up) + static_cast<std::int64_t>(min(output(t < TY ? t : t - TY), out - 1)) * in;
      ptx::prefetch_l2(reinterpret_cast<const char*>(row) + (i % lines) * 128);
    }
  }
  pdl::wait();

  const float* xg = x + static_cast<std::int64_t>(r0) * in;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  // Partial sums per warp: TO * R dot products, then (NORM) R sums of squares of x.
  __shared__ float partial[WARPS][TO * R + (NORM ? R : 0)];

  // RMSNorm: the sums of squares of x accumulate in the same pass as the dot products (every
  // element of x passes through exactly one thread), so no prologue delays the weight loads.
  float acc[TO][R], ss[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    ss[r] = 0.0f;
#pragma unroll
    for (int t = 0; t < TO; ++t) acc[t][r] = 0.0f;
  }

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
        float g[V];
        if constexpr (NORM) {
          const uint4 graw = *reinterpret_cast<const uint4*>(norm.weight + c * V);
          const W* e = reinterpret_cast<const W*>(&graw);
#pragma unroll
          for (int k = 0; k < V; ++k) g[k] = to_float(e[k]);
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
            if constexpr (NORM) {
#pragma unroll
              for (int k = 0; k < V; ++k) {
                ss[r] = fmaf(xv[k], xv[k], ss[r]);
                xv[k] *= g[k];
              }
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

#pragma unroll
  for (int t = 0; t < TO; ++t)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = acc[t][r];
#pragma unroll
      for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) partial[warp][t * R + r] = v;
    }
  if constexpr (NORM) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = ss[r];
#pragma unroll
      for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) partial[warp][TO * R + r] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x < TY * R) {
    const int t = threadIdx.x / R, r = threadIdx.x % R, o = output(t);
    if (o < out && r < nr) {
      float scale = 1.0f;
      if constexpr (NORM) {
        float squares = 0.0f;
#pragma unroll
        for (int k = 0; k < WARPS; ++k) squares += partial[k][TO * R + r];
        scale = 1.0f / sqrtf(squares / static_cast<float>(in) + norm.eps);
      }
      auto result = [&](int tt) {
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < WARPS; ++k) sum += partial[k][tt * R + r];
        return sum * scale;
      };
      const float sum = result(t);
      float* yo = y + static_cast<std::int64_t>(r0 + r) * out + o;
      if constexpr (ROPE) {
        constexpr int pairs = TY / 2;  // the block's outputs t and t +- pairs are partners
        epi.store(target, epi.rows[r0 + r], o, sum, [&] { return result(t < pairs ? t + pairs : t - pairs); }, yo, freq);
      } else if constexpr (GLU) {
        const float u = result(t + TY);
        *yo = sum / (1.0f + expf(-sum)) * u;
      } else {
        *yo = accumulate ? *yo + sum : sum;
      }
    }
  }
}

}  // namespace kernels

/// Launches kernels::gemv for rows <= 8 (the caller checks, and that `in` is a
/// multiple of 16 / sizeof(W)). `targets` lists the matrices (tile_end is
/// filled here); with `up` the single target is the GLU's gate matrix.
/// Outputs per block: the largest of 8 / 4 / 1 (4 at most for 8-row groups, for
/// registers) that still gives every SM >= 2 blocks; 2 at least for the GLU and
/// RopeStore, whose head_dim / 2 the pairs per block must divide.
template <class W, class Epi = PlainStore>
void gemv(const float* x, int rows, int in, LinearTargets<W> targets, bool accumulate, const W* up, InputNorm<W> norm,
          int num_sms, cudaStream_t stream, Epi epi = {}) {
  constexpr bool rope = !std::is_same_v<Epi, PlainStore>;
  const int R = rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : 8;
  const int groups = (rows + R - 1) / R;
  const bool glu = up != nullptr;
  check_aligned16("gemv", x, targets, up, norm.weight);  // its weight and x loads are 16 bytes wide
  if constexpr (rope) {
    if (glu) throw InvalidArgument("gemv: the RoPE epilogue takes no GLU");
    epi.check("gemv", targets);
  }
  auto blocks_for = [&](int to) {
    std::int64_t total = 0;
    for (int s = 0; s < targets.count; ++s) {
      const int ty = glu ? to / 2 : to;
      total += static_cast<std::int64_t>((targets.out[s] + ty - 1) / ty) * groups;
      targets.tile_end[s] = static_cast<int>(total);
    }
    return total;
  };
  const std::int64_t want = 2ll * num_sms;
  int to = glu || rope ? 2 : 1;
  for (int candidate : {8, 4}) {
    if (candidate == 8 && R == 8) continue;
    if constexpr (rope)
      if (epi.head_dim / 2 % (candidate / 2) != 0) continue;  // whole rotation pairs per block
    if (blocks_for(candidate) >= want) {
      to = candidate;
      break;
    }
  }
  const auto blocks = static_cast<unsigned>(blocks_for(to));
  auto go = [&](auto r_tag, auto to_tag, auto glu_tag, auto norm_tag) {
    constexpr int Rc = decltype(r_tag)::value, TOc = decltype(to_tag)::value;
    constexpr bool Gc = decltype(glu_tag)::value, Nc = decltype(norm_tag)::value;
    launch("gemv", kernels::gemv<W, Rc, TOc, Gc, Nc, Epi>, blocks, 256, 0, stream, x, targets, rows, in, groups,
           accumulate, up, norm, epi);
  };
  auto with_to = [&](auto r_tag, auto glu_tag, auto norm_tag) {
    using std::integral_constant;
    constexpr int Rc = decltype(r_tag)::value;
    if constexpr (Rc < 8)
      if (to == 8) return go(r_tag, integral_constant<int, 8>{}, glu_tag, norm_tag);
    if (to == 4) return go(r_tag, integral_constant<int, 4>{}, glu_tag, norm_tag);
    if constexpr (decltype(glu_tag)::value || rope) return go(r_tag, integral_constant<int, 2>{}, glu_tag, norm_tag);
    else return go(r_tag, integral_constant<int, 1>{}, glu_tag, norm_tag);
  };
  auto with_flags = [&](auto r_tag) {
    using std::bool_constant;
    const bool n = norm.weight != nullptr;
    if constexpr (!rope) {
      if (glu) return n ? with_to(r_tag, bool_constant<true>{}, bool_constant<true>{})
                        : with_to(r_tag, bool_constant<true>{}, bool_constant<false>{});
    }
    return n ? with_to(r_tag, bool_constant<false>{}, bool_constant<true>{})
             : with_to(r_tag, bool_constant<false>{}, bool_constant<false>{});
  };
  using std::integral_constant;
  switch (R) {
    case 1: with_flags(integral_constant<int, 1>{}); break;
    case 2: with_flags(integral_constant<int, 2>{}); break;
    case 4: with_flags(integral_constant<int, 4>{}); break;
    default: with_flags(integral_constant<int, 8>{}); break;
  }
}

}  // namespace lckv::cuda
