#pragma once
/// \file stream.cuh
/// RAII CUDA streams and events, and an event timer.

#include <cuda_runtime.h>

#include <utility>

#include "lckv/cuda/error.cuh"

namespace lckv::cuda {

/// An owned stream. Blocking (the default flag): it orders after work on the
/// legacy default stream, where cache allocation and uploads happen.
class Stream {
public:
  Stream() { LCKV_CUDA_CHECK(cudaStreamCreate(&s_)); }
  Stream(Stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Stream& operator=(Stream&& o) noexcept {
    if (this != &o) {
      if (s_) cudaStreamDestroy(s_);
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    if (s_) cudaStreamDestroy(s_);
  }
  cudaStream_t get() const { return s_; }
  void synchronize() const { LCKV_CUDA_CHECK(cudaStreamSynchronize(s_)); }

private:
  cudaStream_t s_ = nullptr;
};

/// An owned event (timing enabled).
class Event {
public:
  Event() { LCKV_CUDA_CHECK(cudaEventCreate(&e_)); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  void record(cudaStream_t s) { LCKV_CUDA_CHECK(cudaEventRecord(e_, s)); }
  cudaEvent_t get() const { return e_; }
  /// Milliseconds from `start` to this event (both recorded, this one completed).
  float since(const Event& start) const {
    LCKV_CUDA_CHECK(cudaEventSynchronize(e_));
    float ms = 0;
    LCKV_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
  }

private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace lckv::cuda
