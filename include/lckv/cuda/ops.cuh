#pragma once
/// \file ops.cuh
/// CUDA twins of lckv/cpu/ops.hpp and the cache writes of lckv/cpu/attention.hpp:
/// same names, same argument order, plus a trailing stream. Activations are
/// fp32; weights (`W`) and KV (`T`) may be fp32, bf16 or fp16; math is fp32.
/// Every launcher checks its launch.

#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "lckv/core/buffer.hpp"
#include "lckv/core/rows.hpp"
#include "lckv/cuda/dtype.cuh"
#include "lckv/cuda/error.cuh"
#include "lckv/cuda/launch.cuh"
#include "lckv/cuda/mma.cuh"

namespace lckv::cuda {

/// Whether `p` is a multiple of `bytes`, as vector accesses of that width need (null counts as aligned).
__host__ __device__ inline bool aligned_to(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

namespace kernels {

template <class W>
__global__ void embed(const int* tokens, const W* table, float* out, int cols) {
  pdl::allow_next();
  pdl::wait();
  const int r = blockIdx.x;
  const W* src = table + static_cast<std::int64_t>(tokens[r]) * cols;
  float* dst = out + static_cast<std::int64_t>(r) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = to_float(src[c]);
}

/// N consecutive elements, moved as one access (Pack4: one 8- or 16-byte access).
template <class T, int N>
struct alignas(N * sizeof(T)) Pack {
  T v[N];
};
template <class T>
using Pack4 = Pack<T, 4>;

/// out = RMSNorm(x) rounded to O (fp32, or a GEMM's 16-bit input). One block per
/// row (CUB block reduction). With cols % 4 == 0 and aligned x, w and out, each
/// thread keeps its first Chunks 16-byte pieces of the row in registers between
/// the sum of squares and the scaling (a row of up to 4 * Chunks * Threads floats
/// is read once) and moves w and out four elements at a time; the rest of a
/// row, or a row of another width, is read twice, one element at a time. x: [rows, cols].
template <int Threads, int Chunks, class W, class O>
__global__ void __launch_bounds__(Threads) rmsnorm(const float* x, const W* w, float eps, O* out, int cols) {
  pdl::allow_next();
  pdl::wait();
  using Reduce = cub::BlockReduce<float, Threads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ float inv;
  const float* in = x + static_cast<std::int64_t>(blockIdx.x) * cols;
  O* o = out + static_cast<std::int64_t>(blockIdx.x) * cols;
  const bool vec =
      cols % 4 == 0 && aligned_to(x, 16) && aligned_to(w, sizeof(Pack4<W>)) && aligned_to(out, sizeof(Pack4<O>));
  const int n4 = vec ? cols / 4 : 0;
  float4 kept[Chunks];
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < Chunks; ++k) {
    const int c4 = threadIdx.x + k * Threads;
    kept[k] = c4 < n4 ? reinterpret_cast<const float4*>(in)[c4] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    ss += kept[k].x * kept[k].x + kept[k].y * kept[k].y + kept[k].z * kept[k].z + kept[k].w * kept[k].w;
  }
  const int rest = 4 * min(n4, Chunks * Threads);  // elements from here on are read one by one (twice)
  for (int c = rest + threadIdx.x; c < cols; c += Threads) ss += in[c] * in[c];
  const float total = Reduce(tmp).Sum(ss);
  if (threadIdx.x == 0) inv = 1.0f / sqrtf(total / static_cast<float>(cols) + eps);
  __syncthreads();
  const float r = inv;
#pragma unroll
  for (int k = 0; k < Chunks; ++k) {
    const int c4 = threadIdx.x + k * Threads;
    if (c4 < n4) {
      const Pack4<W> wv = reinterpret_cast<const Pack4<W>*>(w)[c4];
      const float v[4] = {kept[k].x, kept[k].y, kept[k].z, kept[k].w};
      Pack4<O> ov;
#pragma unroll
      for (int j = 0; j < 4; ++j) ov.v[j] = from_float<O>(to_float(wv.v[j]) * (v[j] * r));
      reinterpret_cast<Pack4<O>*>(o)[c4] = ov;
    }
  }
  for (int c = rest + threadIdx.x; c < cols; c += Threads) o[c] = from_float<O>(to_float(w[c]) * (in[c] * r));
}

/// RoPE's frequency of pair i of a head: 1 / theta^(2i / head_dim). The CPU computes
/// powf(theta, e) in fp32 (correctly rounded in glibc); double pow rounded to float
/// reproduces it. Double pow is slow: kernels that rotate many elements per block
/// take these from a table filled once.
__device__ inline float rope_inv_freq(int i, int head_dim, float theta) {
  const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
  return 1.0f / static_cast<float>(pow(static_cast<double>(theta), static_cast<double>(e)));
}

/// RoPE tables in shared memory, [head_dim] floats: fill_rope_freqs writes pair i's frequency
/// at [i] (it depends on no earlier kernel, so it runs before pdl::wait and its double pow stays
/// off the critical path); fill_rope_table, given the row's position, turns it into sin at [i] and
/// cos at [half + i] (sin 0, cos 1 when theta == 0). Both give pair i to the same thread, so no
/// barrier is needed between them; the block synchronises before reading the table.
__device__ inline void fill_rope_freqs(float* table, int head_dim, float theta) {
  if (theta > 0.0f)
    for (int i = threadIdx.x; i < head_dim / 2; i += blockDim.x) table[i] = rope_inv_freq(i, head_dim, theta);
}
__device__ inline void fill_rope_table(float* table, int pos, int head_dim, float theta) {
  const int half = head_dim / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float s = 0.0f, c = 1.0f;
    if (theta > 0.0f) sincosf(static_cast<float>(pos) * table[i], &s, &c);
    table[i] = s;
    table[half + i] = c;
  }
}

/// Pairs i .. i + P - 1 of a head x ([head_dim] of T): their first halves into a, second into b.
template <int P, class T>
__device__ __forceinline__ void load_pairs(const T* x, int i, int half, float (&a)[P], float (&b)[P]) {
  const Pack<T, P> lo = *reinterpret_cast<const Pack<T, P>*>(x + i), hi = *reinterpret_cast<const Pack<T, P>*>(x + i + half);
#pragma unroll
  for (int e = 0; e < P; ++e) {
    a[e] = to_float(lo.v[e]);
    b[e] = to_float(hi.v[e]);
  }
}
template <int P, class T>
__device__ __forceinline__ void store_pairs(T* y, int i, int half, const float (&a)[P], const float (&b)[P]) {
  Pack<T, P> lo, hi;
#pragma unroll
  for (int e = 0; e < P; ++e) {
    lo.v[e] = from_float<T>(a[e]);
    hi.v[e] = from_float<T>(b[e]);
  }
  *reinterpret_cast<Pack<T, P>*>(y + i) = lo;
  *reinterpret_cast<Pack<T, P>*>(y + i + half) = hi;
}
/// HF rotate_half of pairs i .. i + P - 1 by a table from fill_rope_table.
template <int P>
__device__ __forceinline__ void rotate_pairs(const float* table, int i, int half, float (&a)[P], float (&b)[P]) {
#pragma unroll
  for (int e = 0; e < P; ++e) {
    const float s = table[i + e], c = table[half + i + e], x = a[e], y = b[e];
    a[e] = x * c - y * s;
    b[e] = y * c + x * s;
  }
}

/// HF rotate_half RoPE in place, one block per (row, group of heads_per_block heads), each
/// thread P adjacent pairs of a head (P = 2: 8-byte accesses). x: [n, cols], heads of head_dim
/// from column 0. Grid: (n, groups); dynamic shared memory: head_dim floats.
template <int P>
__global__ void rope(float* x, int cols, int heads, int head_dim, const RowInfo* rows, float theta, int heads_per_block) {
  extern __shared__ float table[];
  fill_rope_freqs(table, head_dim, theta);
  pdl::allow_next();
  pdl::wait();
  const int half = head_dim / 2, r = static_cast<int>(blockIdx.x), h0 = static_cast<int>(blockIdx.y) * heads_per_block;
  const int per_head = half / P, units = (min(heads, h0 + heads_per_block) - h0) * per_head;
  fill_rope_table(table, rows[r].pos, head_dim, theta);
  __syncthreads();
  for (int u = threadIdx.x; u < units; u += blockDim.x) {
    const int i = (u % per_head) * P;
    float* head = x + static_cast<std::int64_t>(r) * cols + (h0 + u / per_head) * head_dim;
    float a[P], b[P];
    load_pairs<P>(head, i, half, a, b);
    rotate_pairs<P>(table, i, half, a, b);
    store_pairs<P>(head, i, half, a, b);
  }
}

/// One block per (row, group of heads_per_block heads), each thread P adjacent pairs of a head:
/// q's heads rotated from q_in (row stride q_ld) into q_out ([n, heads * D]; may be q_in), k's
/// heads rotated on their way into the slot, v copied next to them (k, v: row stride kv_ld). The
/// block fills its row's RoPE table first (fill_rope_freqs / fill_rope_table). theta == 0 stores
/// without rotating (StreamingLLM rotates at read time). Grid: (n, groups); dynamic shared
/// memory: D floats.
template <class Slot, int P>
__global__ void rope_store_kv(const float* q_in, int q_ld, float* q_out, int heads, const float* k, const float* v,
                              int kv_ld, Slot slot, const RowInfo* rows, float theta, int heads_per_block) {
  extern __shared__ float table[];
  const int D = slot.head_dim, half = D / 2, all = heads + slot.kv_heads;
  fill_rope_freqs(table, D, theta);
  pdl::allow_next();
  pdl::wait();
  const int r = static_cast<int>(blockIdx.x), h0 = static_cast<int>(blockIdx.y) * heads_per_block;
  const int per_head = half / P, units = (min(all, h0 + heads_per_block) - h0) * per_head;
  const RowInfo ri = rows[r];
  fill_rope_table(table, ri.pos, D, theta);
  __syncthreads();
  for (int u = threadIdx.x; u < units; u += blockDim.x) {
    const int h = h0 + u / per_head, i = (u % per_head) * P;
    float a[P], b[P];
    if (h < heads) {
      const float* x = q_in + static_cast<std::int64_t>(r) * q_ld + h * D;
      float* y = q_out + (static_cast<std::int64_t>(r) * heads + h) * D;
      if (theta > 0.0f || y != x) {
        load_pairs<P>(x, i, half, a, b);
        if (theta > 0.0f) rotate_pairs<P>(table, i, half, a, b);
        store_pairs<P>(y, i, half, a, b);
      }
      continue;
    }
    const int kh = h - heads;
    const std::int64_t at = static_cast<std::int64_t>(r) * kv_ld + kh * D;
    load_pairs<P>(k + at, i, half, a, b);
    if (theta > 0.0f) rotate_pairs<P>(table, i, half, a, b);
    store_pairs<P>(slot.key(ri.seq, ri.pos, kh), i, half, a, b);
    load_pairs<P>(v + at, i, half, a, b);
    store_pairs<P>(slot.value(ri.seq, ri.pos, kh), i, half, a, b);
  }
}

__device__ __forceinline__ float silu_times(float gate, float up) { return gate / (1.0f + expf(-gate)) * up; }

/// out = silu(gate) * up over [rows, cols], each operand with its own row stride;
/// out may be gate (in place) or the 16-bit input of the next GEMM. Rows on the
/// grid's y, columns on its x (no 64-bit division per element), four at a time
/// (one 8- or 16-byte access per operand) where strides and pointers allow (vec4).
template <class I, class O>
__global__ void swiglu(const I* gate, int gate_ld, const I* up, int up_ld, O* out, int out_ld, int rows, int cols,
                       bool vec4) {
  pdl::allow_next();
  pdl::wait();
  const int step = vec4 ? 4 : 1;
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const I* g = gate + static_cast<std::int64_t>(r) * gate_ld;
    const I* u = up + static_cast<std::int64_t>(r) * up_ld;
    O* o = out + static_cast<std::int64_t>(r) * out_ld;
    for (int c = (blockIdx.x * blockDim.x + threadIdx.x) * step; c < cols; c += gridDim.x * blockDim.x * step) {
      if (vec4) {
        const Pack4<I> gv = *reinterpret_cast<const Pack4<I>*>(g + c), uv = *reinterpret_cast<const Pack4<I>*>(u + c);
        Pack4<O> ov;
#pragma unroll
        for (int j = 0; j < 4; ++j) ov.v[j] = from_float<O>(silu_times(to_float(gv.v[j]), to_float(uv.v[j])));
        *reinterpret_cast<Pack4<O>*>(o + c) = ov;
      } else {
        o[c] = from_float<O>(silu_times(to_float(g[c]), to_float(u[c])));
      }
    }
  }
}

template <int = 0>
__global__ void gather_rows(const float* src, const int* index, float* dst, int cols) {
  pdl::allow_next();
  pdl::wait();
  const float* s = src + static_cast<std::int64_t>(index[blockIdx.x]) * cols;
  float* d = dst + static_cast<std::int64_t>(blockIdx.x) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) d[c] = s[c];
}

template <class T>
__global__ void convert(const float* src, T* dst, std::int64_t n) {
  pdl::allow_next();
  pdl::wait();
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t done = 0;
  // Four elements per thread and step (one 16-byte load, one 8-byte store) where both pointers
  // allow it: one element per thread ran at ~0.4 of copy bandwidth before prefill GEMMs.
  if constexpr (sizeof(T) == 2) {
    if (aligned_to(src, 16) && aligned_to(dst, 8)) {
      const std::int64_t quads = n / 4;
      for (std::int64_t i = first; i < quads; i += stride) {
        const float4 v = reinterpret_cast<const float4*>(src)[i];
        reinterpret_cast<uint2*>(dst)[i] = make_uint2(ptx::pack2<T>(v.x, v.y), ptx::pack2<T>(v.z, v.w));
      }
      done = quads * 4;
    }
  }
  for (std::int64_t i = done + first; i < n; i += stride) dst[i] = from_float<T>(src[i]);
}

/// k and v ([n, kv_heads * head_dim]) into the slot at each row's (seq, pos);
/// null k and v store zeros (zero_kv).
template <class Slot>
__global__ void store_kv(const float* k, const float* v, Slot slot, const RowInfo* rows, int n) {
  pdl::allow_next();
  pdl::wait();
  using T = std::remove_cv_t<std::remove_pointer_t<decltype(slot.key(0, 0, 0))>>;
  const int per_row = slot.kv_heads * slot.head_dim;
  const std::int64_t total = static_cast<std::int64_t>(n) * per_row;
  for (std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(t / per_row), c = static_cast<int>(t % per_row);
    const int h = c / slot.head_dim, d = c % slot.head_dim;
    const RowInfo ri = rows[r];
    slot.key(ri.seq, ri.pos, h)[d] = from_float<T>(k ? k[t] : 0.0f);
    slot.value(ri.seq, ri.pos, h)[d] = from_float<T>(v ? v[t] : 0.0f);
  }
}

}  // namespace kernels

/// Blocks for a grid-stride loop over n elements.
inline int grid_for(std::int64_t n, int threads = 256) {
  const std::int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(b < 1 ? 1 : (b > 65536 ? 65536 : b));
}

/// Blocks of 256 threads for an elementwise pass over [rows, cols]: columns on x, rows on y.
inline dim3 grid_for_rows(int rows, int cols) {
  return dim3(static_cast<unsigned>((cols + 255) / 256), static_cast<unsigned>(rows < 65535 ? rows : 65535));
}

/// out[r] = table[tokens[r]]. tokens: [n] device ids; table: [vocab, hidden]; out: [n, hidden].
template <class W>
void embed(const int* tokens, const W* table, MatrixView<float> out, cudaStream_t s) {
  if (out.rows == 0) return;
  launch("embed", kernels::embed<W>, out.rows, 256, 0, s, tokens, table, out.data, out.cols);
}

/// out = w * x / sqrt(mean(x^2) + eps) per row (CUB block reduction), rounded to O
/// (fp32, or the 16-bit input of a GEMM). x: [rows, hidden]; w: [hidden]; out: [rows, hidden] of O.
template <class W, class O>
void rmsnorm_into(MatrixView<const float> x, const W* w, float eps, O* out, cudaStream_t s) {
  if (x.rows == 0) return;
  launch("rmsnorm", kernels::rmsnorm<256, 2, W, O>, x.rows, 256, 0, s, x.data, w, eps, out, x.cols);
}
template <class W>
void rmsnorm(MatrixView<const float> x, const W* w, float eps, MatrixView<float> out, cudaStream_t s) {
  rmsnorm_into(x, w, eps, out.data, s);
}

namespace detail {
/// The RoPE kernels' launch shape: blocks of 256 threads, each thread P pairs of a head, so a
/// block takes 256 P / (head_dim / 2) heads of a row (at least one).
struct RopeGrid {
  dim3 grid;
  int heads_per_block;
};
inline RopeGrid rope_grid(int rows, int heads, int head_dim, int P) {
  const int per_block = std::max(1, 256 * P / (head_dim / 2));
  return {dim3(static_cast<unsigned>(rows), static_cast<unsigned>((heads + per_block - 1) / per_block)), per_block};
}
/// Whether the RoPE kernels may move two pairs per access (8 bytes of fp32): an even half head,
/// 8-byte aligned operands and even row strides. The KV slots' rows are aligned wherever these
/// are, as the attention kernels' 16-byte copies already need.
inline bool rope_pairs2(int head_dim, std::initializer_list<const void*> operands, std::initializer_list<int> strides) {
  if (head_dim % 4 != 0) return false;
  for (const void* p : operands)
    if (!aligned_to(p, 8)) return false;
  for (const int ld : strides)
    if (ld % 2 != 0) return false;
  return true;
}
/// Calls body(std::integral_constant<int, P>{}) once, with P = 2 pairs per access where `pairs2`,
/// else 1: the RoPE kernels' instantiation picked at run time.
template <class Body>
void with_rope_pairs(bool pairs2, Body&& body) {
  if (pairs2)
    body(std::integral_constant<int, 2>{});
  else
    body(std::integral_constant<int, 1>{});
}
}  // namespace detail

/// HF rotate_half RoPE in place. x: [rows, heads * head_dim]; rows: [rows] device.
inline void rope(MatrixView<float> x, int heads, int head_dim, const RowInfo* rows, float theta, cudaStream_t s) {
  if (x.rows == 0 || heads == 0) return;
  const std::size_t table = static_cast<std::size_t>(head_dim) * sizeof(float);
  detail::with_rope_pairs(detail::rope_pairs2(head_dim, {x.data}, {x.cols}), [&](auto pairs) {
    constexpr int P = decltype(pairs)::value;
    const auto g = detail::rope_grid(x.rows, heads, head_dim, P);
    launch("rope", kernels::rope<P>, g.grid, 256, table, s, x.data, x.cols, heads, head_dim, rows, theta, g.heads_per_block);
  });
}

namespace detail {
/// kernels::swiglu over [rows, cols], four columns per thread where every stride is a multiple of
/// four and every operand aligned for it.
template <class I, class O>
void launch_swiglu(const I* gate, int gate_ld, const I* up, int up_ld, O* out, int out_ld, int rows, int cols,
                   cudaStream_t s) {
  const bool vec4 = cols % 4 == 0 && gate_ld % 4 == 0 && up_ld % 4 == 0 && out_ld % 4 == 0 &&
                    aligned_to(gate, sizeof(kernels::Pack4<I>)) && aligned_to(up, sizeof(kernels::Pack4<I>)) &&
                    aligned_to(out, sizeof(kernels::Pack4<O>));
  launch("swiglu", kernels::swiglu<I, O>, grid_for_rows(rows, vec4 ? cols / 4 : cols), 256, 0, s, gate, gate_ld, up,
         up_ld, out, out_ld, rows, cols, vec4);
}
}  // namespace detail

/// gate = silu(gate) * up. gate, up: [rows, intermediate].
inline void swiglu(MatrixView<float> gate, MatrixView<const float> up, cudaStream_t s) {
  if (gate.size() == 0) return;
  detail::launch_swiglu(gate.data, gate.cols, up.data, up.cols, gate.data, gate.cols, gate.rows, gate.cols, s);
}

/// out = silu(gate) * up from one GEMM's output gate_up = [rows, 2 * cols] of I (gate
/// in the first cols columns, up in the next), rounded to O. out: [rows, cols] of O.
template <class I, class O>
void swiglu_packed(MatrixView<const I> gate_up, O* out, cudaStream_t s) {
  const int cols = gate_up.cols / 2;
  if (gate_up.rows == 0 || cols == 0) return;
  detail::launch_swiglu(gate_up.data, gate_up.cols, gate_up.data + cols, gate_up.cols, out, cols, gate_up.rows, cols, s);
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
  launch("gather_rows", kernels::gather_rows<0>, dst.rows, 256, 0, s, src.data, index, dst.data, dst.cols);
}

/// dst[i] = T(src[i]), round to nearest even.
template <class T>
void convert(const float* src, T* dst, std::int64_t n, cudaStream_t s) {
  if (n == 0) return;
  launch("convert", kernels::convert<T>, grid_for((n + 3) / 4), 256, 0, s, src, dst, n);
}

/// Writes rows of k, v ([rows, kv_heads * head_dim], fp32) into the slot at (seq, pos).
template <class Slot>
void store_kv(MatrixView<const float> k, MatrixView<const float> v, const Slot& slot, const RowInfo* rows, cudaStream_t s) {
  const std::int64_t n = static_cast<std::int64_t>(k.rows) * slot.kv_heads * slot.head_dim;
  if (n == 0) return;
  launch("store_kv", kernels::store_kv<Slot>, grid_for(n), 256, 0, s, k.data, v.data, slot, rows, k.rows);
}

namespace detail {
/// kernels::rope_store_kv over n rows (rope_grid's blocks), two pairs per access where rope_pairs2 allows.
template <class Slot>
void launch_rope_store_kv(const float* q_in, int q_ld, float* q_out, int heads, const float* k, const float* v, int kv_ld,
                          const Slot& slot, const RowInfo* rows, float theta, int n, cudaStream_t s) {
  const int all = heads + slot.kv_heads;
  if (n == 0 || all == 0) return;
  const std::size_t table = static_cast<std::size_t>(slot.head_dim) * sizeof(float);
  with_rope_pairs(rope_pairs2(slot.head_dim, {q_in, q_out, k, v}, {q_ld, kv_ld}), [&](auto pairs) {
    constexpr int P = decltype(pairs)::value;
    const auto g = rope_grid(n, all, slot.head_dim, P);
    launch("rope_store_kv", kernels::rope_store_kv<Slot, P>, g.grid, 256, table, s, q_in, q_ld, q_out, heads, k, v, kv_ld,
           slot, rows, theta, g.heads_per_block);
  });
}
}  // namespace detail

/// RoPE of q ([rows, heads * head_dim], in place) and k ([rows, kv_heads * head_dim]),
/// then k and v into the slot at (seq, pos): rope, rope and store_kv in one launch.
/// theta == 0 stores k unrotated and leaves q as it is.
template <class Slot>
void rope_store_kv(MatrixView<float> q, int heads, MatrixView<const float> k, MatrixView<const float> v, const Slot& slot,
                   const RowInfo* rows, float theta, cudaStream_t s) {
  detail::launch_rope_store_kv(q.data, q.cols, q.data, heads, k.data, v.data, k.cols, slot, rows, theta, q.rows, s);
}

/// rope_store_kv from one GEMM's output qkv = [rows, heads * head_dim + 2 * kv_heads * head_dim]
/// (q, k, v side by side): q rotated into q_out ([rows, heads * head_dim]), k and v into the slot.
template <class Slot>
void rope_store_kv_packed(MatrixView<const float> qkv, MatrixView<float> q_out, int heads, const Slot& slot,
                          const RowInfo* rows, float theta, cudaStream_t s) {
  const float* k = qkv.data + q_out.cols;
  detail::launch_rope_store_kv(qkv.data, qkv.cols, q_out.data, heads, k, k + slot.kv_heads * slot.head_dim, qkv.cols, slot,
                               rows, theta, qkv.rows, s);
}

/// Zeroes the slot's keys and values at the given n rows.
template <class Slot>
void zero_kv(const Slot& slot, const RowInfo* rows, int n, cudaStream_t s) {
  const std::int64_t total = static_cast<std::int64_t>(n) * slot.kv_heads * slot.head_dim;
  if (total == 0) return;
  launch("zero_kv", kernels::store_kv<Slot>, grid_for(total), 256, 0, s, static_cast<const float*>(nullptr),
         static_cast<const float*>(nullptr), slot, rows, n);
}

}  // namespace lckv::cuda
