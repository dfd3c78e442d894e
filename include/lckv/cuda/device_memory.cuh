#pragma once
/// \file device_memory.cuh
/// Owning device memory (DeviceBuffer) and the DeviceMemory storage policy that
/// the caches take as their `Memory` parameter:
///
/// \code
///   lckv::ContiguousCache<__nv_bfloat16, lckv::cuda::DeviceMemory> cache(geometry, batch, max_length);
/// \endcode
///
/// Running out of device memory throws OutOfDeviceMemory (an OutOfCapacity)
/// naming the bytes asked for and the bytes free; nothing already allocated is
/// touched, so caches built before stay usable.

#include <cuda_runtime.h>

#include <cstddef>
#include <limits>
#include <string>
#include <utility>

#include "lckv/core/error.hpp"
#include "lckv/cuda/error.cuh"

namespace lckv::cuda {

/// cudaMalloc could not satisfy a request.
class OutOfDeviceMemory : public OutOfCapacity {
public:
  using OutOfCapacity::OutOfCapacity;
};

/// True when a CUDA device can run kernels; otherwise `why` says what is missing.
inline bool device_available(std::string* why = nullptr) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (e != cudaSuccess) cudaGetLastError();  // clear the sticky-free error
    if (why) *why = e != cudaSuccess ? std::string(cudaGetErrorString(e)) : std::string("no CUDA device present");
    return false;
  }
  return true;
}

/// Streaming multiprocessors of the current device (grid sizing and launch plans).
inline int device_sms() {
  int dev = 0, sms = 1;
  LCKV_CUDA_CHECK(cudaGetDevice(&dev));
  LCKV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

/// "F bytes free of T" for the current device, for out-of-memory messages.
inline std::string device_memory_free() {
  std::size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();  // then "0 bytes free"
  return std::to_string(free_b) + " bytes free of " + std::to_string(total_b);
}

/// `bytes` of device memory, or OutOfDeviceMemory / CudaError.
inline void* device_malloc(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: clear it so later calls see success
    throw OutOfDeviceMemory("cudaMalloc: out of device memory: asked for " + std::to_string(bytes) + " bytes, " +
                            device_memory_free());
  }
  LCKV_CUDA_CHECK(e);
  return p;
}

/// n elements of device memory, zero-filled, move-only. Copies are explicit (`clone`).
template <class T>
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : size_(n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
      throw OutOfDeviceMemory("device buffer: " + std::to_string(n) + " elements of " + std::to_string(sizeof(T)) +
                              " bytes overflow a byte count");
    data_ = static_cast<T*>(device_malloc(n * sizeof(T)));
    // Legacy-stream memset: ordered before work on the backend's (blocking) stream.
    const cudaError_t e = n ? cudaMemset(data_, 0, n * sizeof(T)) : cudaSuccess;
    if (e != cudaSuccess) {
      reset();  // the destructor does not run for a constructor that throws
      LCKV_CUDA_CHECK(e);
    }
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }

  DeviceBuffer clone() const {
    DeviceBuffer out(size_);
    if (size_) LCKV_CUDA_CHECK(cudaMemcpy(out.data_, data_, bytes(), cudaMemcpyDeviceToDevice));
    return out;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t bytes() const { return size_ * sizeof(T); }
  /// Fills every byte with `byte` (0xFF makes every float a NaN: "poison").
  void fill_bytes(int byte) {
    if (size_) LCKV_CUDA_CHECK(cudaMemset(data_, byte, bytes()));
  }

private:
  void reset() {
    if (data_) cudaFree(data_);  // never throws from a destructor
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

/// Device memory as a cache storage policy (the twin of HostMemory).
struct DeviceMemory {
  template <class T>
  using Buffer = DeviceBuffer<T>;
  /// Host -> device; synchronous with respect to the host buffer.
  template <class T>
  static void upload(Buffer<T>& dst, const T* src, std::size_t n) {
    if (n) LCKV_CUDA_CHECK(cudaMemcpy(dst.data(), src, n * sizeof(T), cudaMemcpyHostToDevice));
  }
};

/// Copies n elements from host to device (blocking).
template <class T>
void copy_to_device(T* dst, const T* src, std::size_t n) {
  if (n) LCKV_CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyHostToDevice));
}
/// Copies n elements from device to host (blocking).
template <class T>
void copy_to_host(T* dst, const T* src, std::size_t n) {
  if (n) LCKV_CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost));
}

}  // namespace lckv::cuda
