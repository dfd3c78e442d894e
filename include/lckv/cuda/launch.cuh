#pragma once
/// \file launch.cuh
/// Kernel launches that may overlap the previous kernel in the stream
/// (programmatic dependent launch, sm_90+). A decode step is ~150 small
/// kernels; without overlap each pays a launch gap and a ramp-up, with it the
/// next kernel's blocks are resident and, for GEMVs, already streaming weights
/// when the previous kernel ends.
///
/// The contract, for every kernel launched through `launch`:
///   - it calls `pdl::wait()` before reading anything an earlier kernel wrote
///     and before writing anything an earlier kernel may still read; only
///     immutable inputs (weights) may be touched before it;
///   - it may call `pdl::allow_next()` at any point (the next kernel's own
///     wait still orders the data), normally first thing.
/// Kernels launched with <<<>>> are ordered as usual.
///
/// \code
///   __global__ void scale(float* x, int n) {
///     lckv::cuda::pdl::allow_next();
///     lckv::cuda::pdl::wait();
///     ...
///   }
///   lckv::cuda::launch("scale", scale, grid, 256, 0, stream, x, n);
/// \endcode

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <mutex>
#include <unordered_set>
#include <utility>

#include "lckv/cuda/error.cuh"

namespace lckv::cuda {

namespace pdl {

/// Blocks until the grids this one depends on have completed and their writes are visible.
/// A no-op when the kernel was not launched with overlap.
__device__ __forceinline__ void wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/// Lets the next kernel of the stream be scheduled before this one ends.
__device__ __forceinline__ void allow_next() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

}  // namespace pdl

namespace detail {
/// -1: not yet decided (on where the device supports it), 0: off, 1: on.
inline std::atomic<int>& overlap_setting() {
  static std::atomic<int> v{-1};
  return v;
}
}  // namespace detail

/// Whether `launch` lets kernels overlap their predecessor: on by default on
/// compute capability 9.0 and newer, off elsewhere.
inline bool overlapped_launches() {
  int v = detail::overlap_setting().load(std::memory_order_relaxed);
  if (v < 0) {
    int dev = 0, major = 0;
    v = cudaGetDevice(&dev) == cudaSuccess &&
                cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9
            ? 1
            : 0;
    detail::overlap_setting().store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

/// Benchmarks and tests: switch overlapped launches off or back on (process-wide).
/// Graphs recorded before the switch keep the mode they were recorded with.
inline void set_overlapped_launches(bool on) { detail::overlap_setting().store(on ? 1 : 0, std::memory_order_relaxed); }

namespace detail {
/// cudaLaunchKernelEx with overlap (when on) and, for cluster_x > 1, thread
/// block clusters of cluster_x blocks along x; checks the launch.
template <class... Params, class... Args>
void launch_ex(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
               cudaStream_t stream, unsigned cluster_x, Args&&... args) {
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (overlapped_launches()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_x > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n++].val.clusterDim = {cluster_x, 1, 1};
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = n;
  const cudaError_t e = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky launch error
    throw_launch_error(name, e, "");
  }
}
}  // namespace detail

namespace detail {
/// The kernels prepare_kernel has set up, by address.
struct PreparedKernels {
  std::mutex m;
  std::unordered_set<const void*> done;
  bool contains(const void* k) {
    const std::lock_guard<std::mutex> lock(m);
    return done.count(k) != 0;
  }
  void add(const void* k) {
    const std::lock_guard<std::mutex> lock(m);
    done.insert(k);
  }
};
inline PreparedKernels& prepared_kernels() {
  static PreparedKernels p;
  return p;
}
}  // namespace detail

/// The most blocks of a thread-block cluster on sm_90 (the non-portable size; 8 is portable).
inline constexpr int kMaxClusterBlocks = 16;

/// Dynamic shared memory each of `blocks` resident blocks of a kernel without static shared
/// memory may take on the current device: the SM's shared memory less the per-block reservation.
inline std::size_t dynamic_smem_per_block(int blocks) {
  int dev = 0, per_sm = 0, reserved = 0;
  LCKV_CUDA_CHECK(cudaGetDevice(&dev));
  LCKV_CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  LCKV_CUDA_CHECK(cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, dev));
  return static_cast<std::size_t>(std::max(0, per_sm / std::max(1, blocks) - reserved));
}

/// Raises `kernel`'s dynamic shared-memory limit to `smem_bytes` and, with `clusters16`, allows
/// it clusters of up to 16 blocks; once per kernel. Keyed by the kernel's address, not by its
/// template: without relocatable device code every translation unit has its own copy of a
/// kernel, and the attributes belong to the copy.
template <class... Params>
void prepare_kernel(void (*kernel)(Params...), int smem_bytes, bool clusters16 = false) {
  const void* address = reinterpret_cast<const void*>(kernel);
  if (detail::prepared_kernels().contains(address)) return;
  LCKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  if (clusters16) LCKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  detail::prepared_kernels().add(address);  // after success: a failed call is retried (and fails) next time
}

/// Launches `kernel<<<grid, block, smem, stream>>>(args...)`, overlapped with
/// the previous kernel when overlapped_launches(); checks the launch.
template <class... Params, class... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
            Args&&... args) {
  detail::launch_ex(name, kernel, grid, block, smem, stream, 1u, std::forward<Args>(args)...);
}

/// The same with the grid's x dimension cut into clusters of `cluster_x` blocks
/// (sm_90: the blocks of a cluster run together and share their shared memory; 1: no
/// clusters, as `launch`).
template <class... Params, class... Args>
void launch_clustered(const char* name, void (*kernel)(Params...), dim3 grid, unsigned cluster_x, dim3 block,
                      std::size_t smem, cudaStream_t stream, Args&&... args) {
  detail::launch_ex(name, kernel, grid, block, smem, stream, cluster_x, std::forward<Args>(args)...);
}

}  // namespace lckv::cuda
