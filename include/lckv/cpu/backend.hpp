#pragma once
/// \file backend.hpp
/// The CPU backend: fp32 Eigen ops over host memory. A backend is the set of
/// ops the model calls (embed, rmsnorm, linear, rope, store_kv, zero_kv,
/// attention, swiglu, copy, gather_rows) plus its memory; the model never
/// knows which backend runs it.

#include <vector>

#include "lckv/core/buffer.hpp"
#include "lckv/core/rows.hpp"
#include "lckv/cpu/attention.hpp"
#include "lckv/cpu/ops.hpp"

namespace lckv {

struct CpuBackend {
  using Memory = HostMemory;
  using WeightT = float;
  template <class T>
  using Buffer = HostBuffer<T>;
  static constexpr const char* name = "cpu";

  template <class T>
  Buffer<T> alloc(std::size_t n) const { return Buffer<T>(n); }
  /// Makes host row / index metadata visible to the ops (a no-op on the CPU).
  const RowInfo* stage(const std::vector<RowInfo>& rows) const { return rows.data(); }
  const int* stage(const std::vector<int>& ints) const { return ints.data(); }
  /// Copies a result to host memory.
  void download(MatrixView<const float> src, float* host) const { cpu::copy(src, {host, src.rows, src.cols}); }

  void embed(const int* tokens, const float* table, MatrixView<float> out) const { cpu::embed(tokens, table, out); }
  void rmsnorm(MatrixView<const float> x, const float* w, float eps, MatrixView<float> out) const {
    cpu::rmsnorm(x, w, eps, out);
  }
  void linear(MatrixView<const float> x, const float* w, MatrixView<float> y, bool accumulate = false) const {
    cpu::linear(x, w, y, accumulate);
  }
  void rope(MatrixView<float> x, int heads, int head_dim, const RowInfo* rows, float theta) const {
    cpu::rope(x, heads, head_dim, rows, theta);
  }
  void swiglu(MatrixView<float> gate, MatrixView<const float> up) const { cpu::swiglu(gate, up); }
  void copy(MatrixView<const float> src, MatrixView<float> dst) const { cpu::copy(src, dst); }
  void gather_rows(MatrixView<const float> src, const int* index, MatrixView<float> dst) const {
    cpu::gather_rows(src, index, dst);
  }
  template <class Slot>
  void store_kv(MatrixView<const float> k, MatrixView<const float> v, const Slot& slot, const RowInfo* rows) const {
    cpu::store_kv(k, v, slot, rows);
  }
  template <class Slot>
  void zero_kv(const Slot& slot, const RowInfo* rows, int n) const {
    cpu::zero_kv(slot, rows, n);
  }
  template <class Slot>
  void attention(MatrixView<const float> q, const Slot& slot, const RowInfo* rows, const MaskSpec& mask, int heads,
                 MatrixView<float> out) const {
    cpu::attention(q, slot, rows, mask, heads, out);
  }
};

}  // namespace lckv
