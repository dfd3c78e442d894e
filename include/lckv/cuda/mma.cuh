#pragma once
/// \file mma.cuh
/// Warp-level tensor-core and asynchronous-copy primitives (sm_80+ PTX):
/// `mma.sync.m16n8k16` with fp32 accumulators over bf16 / fp16 operands,
/// `ldmatrix` (plain and transposed) to load B operands from shared memory,
/// 16-byte `cp.async` global -> shared copies with commit / wait groups, and
/// L2 prefetches.
///
/// Fragment layouts (g = lane / 4, c = (lane % 4) * 2), each 32-bit register
/// holding two 16-bit elements, the lower column in the low half:
///   A [16 x 16]: a[0] = (g, c..c+1), a[1] = (g+8, c..c+1), a[2] = (g, c+8..c+9), a[3] = (g+8, c+8..c+9)
///   B [16 x 8]:  b[0] = (k c..c+1, n g), b[1] = (k c+8..c+9, n g)
///   C [16 x 8]:  c[0..1] = (g, c..c+1), c[2..3] = (g+8, c..c+1), fp32

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace lckv::cuda::ptx {

__device__ __forceinline__ std::uint32_t smem_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// Two floats as one register of 16-bit T (bf16 or fp16), `lo` in the low half.
template <class T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  } else {
    static_assert(std::is_same_v<T, __half>, "16-bit KV types: bf16, fp16");
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
}

/// d += a * b for one m16n8k16 tile, operands of type T, fp32 accumulators.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same_v<T, __half>, "16-bit KV types: bf16, fp16");
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

/// Four 8x8 16-bit matrices; lanes 8i..8i+7 give the row addresses of matrix i,
/// r[i] holds its fragment (lane l: row l / 4, columns (l % 4) * 2, +1).
/// Volatile with a memory clobber: it must stay after the waits that publish the tile.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

/// As ldmatrix_x4, transposed: lane l gets rows (l % 4) * 2, +1 of column l / 4.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

/// 16 bytes global -> shared, bypassing L1; zero-filled (and `src` not read) where !valid.
__device__ __forceinline__ void cp_async_16(std::uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}

/// 4 bytes global -> shared, through L1 (.ca: .cg copies only 16 bytes); zero-filled (and `src`
/// not read) where !valid.
__device__ __forceinline__ void cp_async_4(std::uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

/// Waits until at most `Pending` of this thread's committed groups are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

/// 2^x in one MUFU.EX2 (ex2.approx.ftz: ~2^-22 relative error, results below 2^-126 flushed to 0,
/// 2^-inf = 0). exp2f adds a range check and two multiplies for subnormal results; a softmax
/// weight that small against the row's maximum changes nothing, and in the attention tiles those
/// three extra instructions per score were a sixth of the prefill kernel's instructions.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// Pulls the 128-byte line at p into L2 (a hint: no fault, no ordering).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

}  // namespace lckv::cuda::ptx
