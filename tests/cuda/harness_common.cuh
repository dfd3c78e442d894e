#pragma once
// Shared by the harness translation units (see harness.hpp): device buffers
// that start poisoned, host <-> device copies, dtype dispatch. No Eigen here.

#include "harness.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "lckv/cache/contiguous_cache.hpp"
#include "lckv/cache/paged_cache.hpp"
#include "lckv/cache/ring_cache.hpp"
#include "lckv/cuda/cuda.cuh"
#include "lckv/engine/transformer.hpp"

namespace lckv::cudatest {

using cuda::DeviceBuffer;

namespace {

/// Device memory whose buffers start as NaN bytes: reads of unwritten memory show.
template <class T>
class PoisonedBuffer : public DeviceBuffer<T> {
public:
  PoisonedBuffer() = default;
  explicit PoisonedBuffer(std::size_t n) : DeviceBuffer<T>(n) { this->fill_bytes(0xFF); }
};
struct PoisonMemory {
  template <class T>
  using Buffer = PoisonedBuffer<T>;
  template <class T>
  static void upload(Buffer<T>& dst, const T* src, std::size_t n) {
    cuda::DeviceMemory::upload(dst, src, n);
  }
};

template <class T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> d(host.size());
  cuda::copy_to_device(d.data(), host.data(), host.size());
  return d;
}
template <class T>
DeviceBuffer<T> converted(const std::vector<float>& host) {
  std::vector<T> c(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) c[i] = cuda::from_float<T>(host[i]);
  return to_device(c);
}
/// `host` converted to T on the device, starting `offset` elements into its buffer: offset 1 makes
/// a view that is not 16-byte aligned, as a user's own weight view may be (DeviceWeights never is).
template <class T>
struct Placed {
  DeviceBuffer<T> buffer;
  int offset = 0;
  T* data() { return buffer.data() + offset; }
};
template <class T>
Placed<T> placed(const std::vector<float>& host, int offset) {
  std::vector<float> shifted(static_cast<std::size_t>(offset), 0.0f);
  shifted.insert(shifted.end(), host.begin(), host.end());
  return {converted<T>(shifted), offset};
}
DeviceBuffer<float> poisoned(std::size_t n) {
  DeviceBuffer<float> d(n);
  d.fill_bytes(0xFF);
  return d;
}
std::vector<float> to_host(const DeviceBuffer<float>& d) {
  LCKV_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> h(d.size());
  cuda::copy_to_host(h.data(), d.data(), d.size());
  return h;
}
MatrixView<float> mat(DeviceBuffer<float>& b, int rows, int cols) { return {b.data(), rows, cols}; }
MatrixView<const float> cmat(const DeviceBuffer<float>& b, int rows, int cols) { return {b.data(), rows, cols}; }

template <class F>
decltype(auto) with_type(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::BF16: return f(__nv_bfloat16{});
    case DType::F16: return f(__half{});
  }
  throw std::logic_error("dtype");
}

}  // namespace

}  // namespace lckv::cudatest
