#pragma once
/// \file error.cuh
/// Checked CUDA and cuBLAS calls. Every failure becomes a CudaError naming the
/// call, where it was made and the library's error string.
///
/// \code
///   LCKV_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
///   my_kernel<<<grid, block, 0, stream>>>(...);
///   LCKV_CUDA_CHECK_LAUNCH("my_kernel");
/// \endcode

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "lckv/core/error.hpp"

namespace lckv::cuda {

/// A CUDA runtime or cuBLAS call that failed.
class CudaError : public Error {
public:
  using Error::Error;
};

inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_<unknown>";
  }
}

namespace detail {
inline std::string where(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

inline void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();  // a non-sticky error must not be blamed on a later launch check
  throw CudaError(std::string(call) + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") at " +
                  where(file, line));
}
inline void check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw CudaError(std::string(call) + " failed: " + cublas_status_name(s) + " at " + where(file, line));
}
/// A failed launch of `kernel`, made at `at` (file:line) when known.
[[noreturn]] inline void throw_launch_error(const char* kernel, cudaError_t e, const std::string& at) {
  throw CudaError(std::string("launch of ") + kernel + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                  ")" + (at.empty() ? "" : " at " + at));
}
/// After a kernel launch: launch-configuration errors are reported at once.
inline void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw_launch_error(kernel, e, where(file, line));
}
}  // namespace detail

}  // namespace lckv::cuda

/// Throws lckv::cuda::CudaError naming `call` unless it returns success.
#define LCKV_CUDA_CHECK(call) ::lckv::cuda::detail::check((call), #call, __FILE__, __LINE__)
/// The same for cuBLAS status codes.
#define LCKV_CUBLAS_CHECK(call) ::lckv::cuda::detail::check((call), #call, __FILE__, __LINE__)
/// Checks the launch that just happened (name it for the message).
#define LCKV_CUDA_CHECK_LAUNCH(kernel) ::lckv::cuda::detail::check_launch((kernel), __FILE__, __LINE__)
