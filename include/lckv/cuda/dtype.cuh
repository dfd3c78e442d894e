#pragma once
/// \file dtype.cuh
/// Storage types of weights and KV: float, __nv_bfloat16, __half. Arithmetic is
/// always fp32; these traits convert at the load and the store.

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <concepts>

namespace lckv::cuda {

template <class T>
struct DTypeTraits;

template <>
struct DTypeTraits<float> {
  static constexpr const char* name = "fp32";
  static constexpr cudaDataType_t cuda_type = CUDA_R_32F;
  __host__ __device__ static float to_float(float x) { return x; }
  __host__ __device__ static float from_float(float x) { return x; }
};
template <>
struct DTypeTraits<__nv_bfloat16> {
  static constexpr const char* name = "bf16";
  static constexpr cudaDataType_t cuda_type = CUDA_R_16BF;
  __host__ __device__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  __host__ __device__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};
template <>
struct DTypeTraits<__half> {
  static constexpr const char* name = "fp16";
  static constexpr cudaDataType_t cuda_type = CUDA_R_16F;
  __host__ __device__ static float to_float(__half x) { return __half2float(x); }
  __host__ __device__ static __half from_float(float x) { return __float2half_rn(x); }
};

/// A storage type the CUDA backend supports.
template <class T>
concept StorageType = std::same_as<T, float> || std::same_as<T, __nv_bfloat16> || std::same_as<T, __half>;

template <StorageType T>
__host__ __device__ inline float to_float(T x) { return DTypeTraits<T>::to_float(x); }
template <StorageType T>
__host__ __device__ inline T from_float(float x) { return DTypeTraits<T>::from_float(x); }

}  // namespace lckv::cuda
