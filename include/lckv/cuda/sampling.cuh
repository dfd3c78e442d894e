#pragma once
/// \file sampling.cuh
/// Next-token selection on the GPU with the semantics of lckv/engine/sampling.hpp:
/// the same logits, parameters and uniform u pick the same token as
/// sample_token(). Greedy is a CUB block arg-max per row; otherwise each row is
/// sorted (CUB segmented radix sort, stable, so ties keep the lower index
/// first), and one block per row walks the sorted prefix in double precision
/// with CUB block scans: top-k cut, nucleus (top-p) cut, then the first token
/// whose cumulative probability exceeds u times the kept mass.

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <cfloat>
#include <climits>
#include <span>
#include <vector>

#include "lckv/core/buffer.hpp"
#include "lckv/cuda/device_memory.cuh"
#include "lckv/cuda/error.cuh"
#include "lckv/cuda/ops.cuh"
#include "lckv/engine/sampling.hpp"

namespace lckv::cuda {

namespace kernels {

struct ArgMaxPair {
  float value;
  int index;
};
struct ArgMaxOp {
  __device__ ArgMaxPair operator()(const ArgMaxPair& a, const ArgMaxPair& b) const {
    if (a.value > b.value) return a;
    if (b.value > a.value) return b;
    return a.index < b.index ? a : b;
  }
};

template <int Threads>
__global__ void __launch_bounds__(Threads) argmax_rows(const float* logits, int vocab, int* out) {
  using Reduce = cub::BlockReduce<ArgMaxPair, Threads>;
  __shared__ typename Reduce::TempStorage tmp;
  const float* row = logits + static_cast<std::int64_t>(blockIdx.x) * vocab;
  ArgMaxPair best{-INFINITY, vocab};
  for (int i = threadIdx.x; i < vocab; i += Threads) best = ArgMaxOp{}(best, ArgMaxPair{row[i], i});
  const ArgMaxPair r = Reduce(tmp).Reduce(best, ArgMaxOp{});
  if (threadIdx.x == 0) out[blockIdx.x] = r.index < vocab ? r.index : 0;
}

template <int = 0>
__global__ void iota_rows(int* idx, int vocab, std::int64_t total) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    idx[i] = static_cast<int>(i % vocab);
}

/// First index i in [0, limit) where pred(cumulative_i) holds, scanning in
/// chunks of Threads with a carried prefix; returns limit when none does.
template <int Threads, class Value, class Pred>
__device__ int first_where(int limit, Value&& value, Pred&& pred, double& total_out) {
  using Scan = cub::BlockScan<double, Threads>;
  using Reduce = cub::BlockReduce<int, Threads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ typename Reduce::TempStorage red_tmp;
  __shared__ int found;
  __shared__ double carry_s;
  double carry = 0.0;
  for (int base = 0; base < limit; base += Threads) {
    const int i = base + static_cast<int>(threadIdx.x);
    const double v = i < limit ? value(i) : 0.0;
    double inclusive, aggregate;
    Scan(scan_tmp).InclusiveSum(v, inclusive, aggregate);
    const int hit = (i < limit && pred(carry + inclusive)) ? i : INT_MAX;
    const int first = Reduce(red_tmp).Reduce(hit, [](int a, int b) { return a < b ? a : b; });
    if (threadIdx.x == 0) {
      found = first;
      carry_s = carry + aggregate;
    }
    __syncthreads();
    carry = carry_s;
    const int f = found;
    __syncthreads();
    if (f != INT_MAX) {
      total_out = carry;
      return f;
    }
  }
  total_out = carry;
  return limit;
}

/// Row blockIdx.x with its own parameters params[row]; a greedy row takes the first of its sorted
/// order (the highest logit, the lowest index among ties: the sort is stable), as argmax_rows.
template <int Threads>
__global__ void __launch_bounds__(Threads) sample_sorted(const float* sorted, const int* order, int vocab,
                                                           const SamplingParams* params, const double* u, int* out) {
  const float* keys = sorted + static_cast<std::int64_t>(blockIdx.x) * vocab;
  const int* idx = order + static_cast<std::int64_t>(blockIdx.x) * vocab;
  const SamplingParams sp = params[blockIdx.x];
  if (sp.greedy()) {
    if (threadIdx.x == 0) out[blockIdx.x] = idx[0];
    return;
  }
  const int top_k = sp.top_k;
  const float top_p = sp.top_p;
  const int k = top_k > 0 ? min(top_k, vocab) : vocab;
  const double top = keys[0], T = sp.temperature;
  auto prob = [&](int i) { return exp((static_cast<double>(keys[i]) - top) / T); };
  double total = 0.0;
  first_where<Threads>(k, prob, [](double) { return false; }, total);
  int keep = k;
  if (top_p < 1.0f) {
    double ignored;
    const double p = top_p;
    const int i = first_where<Threads>(k, [&](int j) { return prob(j) / total; }, [&](double c) { return c >= p; },
                                       ignored);
    if (i < k) keep = i + 1;
  }
  double kept = 0.0;
  first_where<Threads>(keep, prob, [](double) { return false; }, kept);
  const double target = u[blockIdx.x] * kept;
  double ignored;
  const int i = first_where<Threads>(keep, prob, [&](double c) { return target < c; }, ignored);
  if (threadIdx.x == 0) out[blockIdx.x] = idx[i < keep ? i : keep - 1];
}

}  // namespace kernels

/// Samples one token per row of device logits [rows, vocab] with uniforms u[rows].
class Sampler {
public:
  /// Every row with the same parameters.
  std::vector<int> sample(MatrixView<const float> logits, const SamplingParams& params, std::span<const double> u,
                          cudaStream_t s) {
    const std::vector<SamplingParams> each(static_cast<std::size_t>(std::max(0, logits.rows)), params);
    return sample(logits, std::span<const SamplingParams>(each), u, s);
  }

  /// Row r with params[r]: one launch sequence for a batch of mixed requests (greedy rows among
  /// sampled ones take the first of their sorted order).
  std::vector<int> sample(MatrixView<const float> logits, std::span<const SamplingParams> params,
                          std::span<const double> u, cudaStream_t s) {
    const int rows = logits.rows, vocab = logits.cols;
    if (static_cast<int>(u.size()) != rows || static_cast<int>(params.size()) != rows)
      throw InvalidArgument("cuda sampling: " + std::to_string(u.size()) + " uniforms and " +
                            std::to_string(params.size()) + " parameter sets for " + std::to_string(rows) + " rows");
    bool greedy = true;
    for (const SamplingParams& p : params) {
      p.validate();
      greedy = greedy && p.greedy();
    }
    std::vector<int> tokens(static_cast<std::size_t>(rows));
    if (rows == 0) return tokens;
    grow(out_, static_cast<std::size_t>(rows));
    if (greedy) {
      kernels::argmax_rows<256><<<rows, 256, 0, s>>>(logits.data, vocab, out_.data());
      LCKV_CUDA_CHECK_LAUNCH("argmax_rows");
    } else {
      const std::size_t n = static_cast<std::size_t>(rows) * vocab;
      grow(keys_, n);
      grow(idx_in_, n);
      grow(idx_out_, n);
      grow(offsets_, static_cast<std::size_t>(rows) + 1);
      grow(u_, static_cast<std::size_t>(rows));
      grow(params_, static_cast<std::size_t>(rows));
      std::vector<int> off(static_cast<std::size_t>(rows) + 1);
      for (int r = 0; r <= rows; ++r) off[static_cast<std::size_t>(r)] = r * vocab;
      LCKV_CUDA_CHECK(cudaMemcpyAsync(offsets_.data(), off.data(), off.size() * sizeof(int), cudaMemcpyHostToDevice, s));
      LCKV_CUDA_CHECK(cudaMemcpyAsync(u_.data(), u.data(), u.size() * sizeof(double), cudaMemcpyHostToDevice, s));
      LCKV_CUDA_CHECK(cudaMemcpyAsync(params_.data(), params.data(), params.size() * sizeof(SamplingParams),
                                      cudaMemcpyHostToDevice, s));
      kernels::iota_rows<<<grid_for(static_cast<std::int64_t>(n)), 256, 0, s>>>(idx_in_.data(), vocab,
                                                                                 static_cast<std::int64_t>(n));
      LCKV_CUDA_CHECK_LAUNCH("iota_rows");
      std::size_t temp_bytes = 0;
      LCKV_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
          nullptr, temp_bytes, logits.data, keys_.data(), idx_in_.data(), idx_out_.data(), static_cast<int>(n), rows,
          offsets_.data(), offsets_.data() + 1, 0, 32, s));
      grow(temp_, temp_bytes);
      LCKV_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
          temp_.data(), temp_bytes, logits.data, keys_.data(), idx_in_.data(), idx_out_.data(), static_cast<int>(n), rows,
          offsets_.data(), offsets_.data() + 1, 0, 32, s));
      kernels::sample_sorted<256><<<rows, 256, 0, s>>>(keys_.data(), idx_out_.data(), vocab, params_.data(), u_.data(),
                                                        out_.data());
      LCKV_CUDA_CHECK_LAUNCH("sample_sorted");
    }
    LCKV_CUDA_CHECK(cudaMemcpyAsync(tokens.data(), out_.data(), tokens.size() * sizeof(int), cudaMemcpyDeviceToHost, s));
    LCKV_CUDA_CHECK(cudaStreamSynchronize(s));
    return tokens;
  }

private:
  template <class T>
  static void grow(DeviceBuffer<T>& b, std::size_t n) {
    if (b.size() < n) b = DeviceBuffer<T>(n);
  }
  DeviceBuffer<float> keys_;
  DeviceBuffer<int> idx_in_, idx_out_, offsets_, out_;
  DeviceBuffer<double> u_;
  DeviceBuffer<SamplingParams> params_;
  DeviceBuffer<unsigned char> temp_;
};

}  // namespace lckv::cuda
