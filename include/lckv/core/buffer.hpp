#pragma once
/// \file buffer.hpp
/// Owning host memory and non-owning row-major matrix views. Owning and
/// viewing are separate types; copies of owners are explicit (`clone`).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>

#include "lckv/core/macros.hpp"

namespace lckv {

/// A row-major [rows, cols] matrix that someone else owns.
template <class T>
struct MatrixView {
  T* data = nullptr;
  int rows = 0;
  int cols = 0;
  LCKV_HD T* row(int r) const { return data + static_cast<std::int64_t>(r) * cols; }
  LCKV_HD std::int64_t size() const { return static_cast<std::int64_t>(rows) * cols; }
  /// A view of mutable elements converts to a read-only view (not the reverse).
  template <class U = T>
    requires(!std::is_const_v<U>)
  LCKV_HD operator MatrixView<const U>() const { return {data, rows, cols}; }
};

/// 64-byte aligned, zero-initialised host memory of n elements (move-only).
template <class T>
class HostBuffer {
public:
  HostBuffer() = default;
  explicit HostBuffer(std::size_t n) : size_(n) {
    if (n == 0) return;
    data_.reset(static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t{64})));
    std::memset(static_cast<void*>(data_.get()), 0, n * sizeof(T));
  }
  HostBuffer(HostBuffer&&) noexcept = default;
  HostBuffer& operator=(HostBuffer&&) noexcept = default;

  HostBuffer clone() const {
    HostBuffer out(size_);
    if (size_) std::memcpy(static_cast<void*>(out.data()), data(), size_ * sizeof(T));
    return out;
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  std::size_t bytes() const { return size_ * sizeof(T); }
  std::span<T> span() { return {data(), size_}; }
  std::span<const T> span() const { return {data(), size_}; }
  T& operator[](std::size_t i) { return data_.get()[i]; }
  const T& operator[](std::size_t i) const { return data_.get()[i]; }
  void fill_zero() {
    if (size_) std::memset(static_cast<void*>(data()), 0, bytes());
  }

private:
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<T, Free> data_;
  std::size_t size_ = 0;
};

/// Host memory as a cache storage policy (the CUDA backend supplies DeviceMemory).
struct HostMemory {
  template <class T>
  using Buffer = HostBuffer<T>;
  template <class T>
  static void upload(Buffer<T>& dst, const T* src, std::size_t n) {
    if (n) std::memcpy(static_cast<void*>(dst.data()), src, n * sizeof(T));
  }
};

}  // namespace lckv
