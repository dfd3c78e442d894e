#pragma once
/// \file sampling.cuh
/// Next-token selection on the GPU with the semantics of lckv/engine/sampling.hpp:
/// the same logits, parameters and uniform u pick the same token as
/// sample_token(). Greedy is a CUB block arg-max per row. Otherwise one block per
/// row finds the few positions of the sorted order that matter (the k-th token,
/// the end of the nucleus, the drawn token) without sorting the row
/// (kernels::select_sample): a histogram of the tokens' weights over buckets of
/// (top - logit) / T locates each position's bucket, and only that bucket's
/// tokens are sorted, in shared memory. Rows it cannot resolve that way (a bucket
/// of more than kListCap tokens: nearly flat rows, huge temperatures) take the
/// general path: the whole row sorted (CUB segmented radix sort, stable, so ties
/// keep the lower index first), then one block per row walks the sorted prefix in
/// double precision with CUB block scans.

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
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

/// The highest logit of a row and its index, the lowest among ties (index `vocab` when the row
/// has no number above -inf); the result is valid in thread 0.
template <int Threads>
__device__ ArgMaxPair row_argmax(const float* row, int vocab,
                                 typename cub::BlockReduce<ArgMaxPair, Threads>::TempStorage& tmp) {
  ArgMaxPair best{-INFINITY, vocab};
  for (int i = threadIdx.x; i < vocab; i += Threads) best = ArgMaxOp{}(best, ArgMaxPair{row[i], i});
  return cub::BlockReduce<ArgMaxPair, Threads>(tmp).Reduce(best, ArgMaxOp{});
}
/// A greedy row's token: its arg-max, or 0 when it has none.
__device__ __forceinline__ int greedy_token(const ArgMaxPair& best, int vocab) {
  return best.index < vocab ? best.index : 0;
}

template <int Threads>
__global__ void __launch_bounds__(Threads) argmax_rows(const float* logits, int vocab, int* out) {
  __shared__ typename cub::BlockReduce<ArgMaxPair, Threads>::TempStorage tmp;
  const ArgMaxPair r = row_argmax<Threads>(logits + static_cast<std::int64_t>(blockIdx.x) * vocab, vocab, tmp);
  if (threadIdx.x == 0) out[blockIdx.x] = greedy_token(r, vocab);
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

/// Constants of select_sample.
namespace select {
constexpr int kThreads = 512;
constexpr int kBuckets = kThreads;  ///< one per thread, for the prefix scan over buckets
/// Tokens with (top - logit) / T >= kSpan weigh exp(-32) = 1.3e-14 of the top token or less: they
/// are left out (weight 0; the CPU's double sums barely see them either). The top token is always in.
constexpr double kSpan = 32.0;
constexpr double kBucketsPerUnit = kBuckets / kSpan;
constexpr int kListCap = 4 * kThreads;  ///< most tokens of one bucket sorted in shared memory
constexpr int kListPerThread = kListCap / kThreads;
/// Weights are fixed point, the top token's = 2^45, so every sum is exact and deterministic
/// (no order of additions to depend on); totals stay below 2^64 up to kMaxVocab tokens.
constexpr double kWeightScale = 0x1p45;
constexpr int kMaxVocab = 1 << 19;
}  // namespace select

/// A token's place in the sorted order as one number: higher logit first, then the lower index.
__device__ __forceinline__ std::uint64_t order_key(float logit, int index) {
  const unsigned bits = __float_as_uint(logit);
  const unsigned ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);  // monotone in the float
  return (static_cast<std::uint64_t>(ordered) << 32) | static_cast<std::uint32_t>(~static_cast<unsigned>(index));
}
__device__ __forceinline__ int key_index(std::uint64_t key) {
  return static_cast<int>(~static_cast<unsigned>(key & 0xFFFFFFFFu));
}

/// One row's sampling through its weight histogram (see the file comment), with params[row] and
/// u[row]; out[row] = the token, or -1 where the row needs the sorted path. The positions it
/// finds are those of sample_token: the k-th token of the order, the first whose cumulative
/// weight reaches top_p of the top-k mass, the first whose cumulative weight exceeds u times the
/// kept mass. A token's weight is exp((logit - top) / T) in double, rounded to fixed point.
template <int = 0>
__global__ void __launch_bounds__(select::kThreads, 1) select_sample(const float* logits, int vocab,
                                                                  const SamplingParams* params, const double* u,
                                                                  int* out) {
  using namespace select;
  using u64 = unsigned long long;
  using Reduce = cub::BlockReduce<ArgMaxPair, kThreads>;
  using CountScan = cub::BlockScan<unsigned, kThreads>;
  using WeightScan = cub::BlockScan<u64, kThreads>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename CountScan::TempStorage count;
    typename WeightScan::TempStorage weight;
  } tmp;
  __shared__ unsigned count_before[kBuckets];  // candidates in the buckets before b
  __shared__ u64 weight_before[kBuckets];      // their weight
  __shared__ u64 list_key[kListCap];           // one bucket's tokens, sorted by key, descending
  __shared__ u64 list_cum[kListCap];           // their weights, then the inclusive sums
  __shared__ ArgMaxPair top_s;
  __shared__ int list_size, found;

  const int tid = static_cast<int>(threadIdx.x);
  const float* row = logits + static_cast<std::int64_t>(blockIdx.x) * vocab;
  const SamplingParams sp = params[blockIdx.x];
  ArgMaxPair best = row_argmax<kThreads>(row, vocab, tmp.reduce);
  if (tid == 0) top_s = best;
  __syncthreads();
  best = top_s;
  if (sp.greedy()) {
    if (tid == 0) out[blockIdx.x] = greedy_token(best, vocab);
    return;
  }
  auto give_up = [&] {  // the row takes the sorted path
    if (tid == 0) out[blockIdx.x] = -1;
  };
  if (vocab > kMaxVocab || !isfinite(best.value)) return give_up();
  const double top = best.value, T = sp.temperature;
  const float top_f = best.value, buckets_per_logit = static_cast<float>(kBucketsPerUnit / T);
  if (!isfinite(buckets_per_logit)) return give_up();  // a temperature near the smallest floats
  // A token's bucket, floor((top - logit) / T * kBucketsPerUnit), in float: monotone in the logit
  // (what the prefix sums over buckets rely on) and cheap. kBuckets: not a candidate (NaN too).
  auto bucket_of = [&](float logit) {
    const float d = (top_f - logit) * buckets_per_logit;
    return d < static_cast<float>(kBuckets) ? static_cast<int>(d) : kBuckets;
  };
  // A candidate's weight exp((logit - top) / T) as sample_token computes it, in fixed point.
  auto weight_of = [&](float logit) {
    return static_cast<u64>(llrint(exp((static_cast<double>(logit) - top) / T) * kWeightScale));
  };

  count_before[tid] = 0;
  weight_before[tid] = 0;
  __syncthreads();
  for (int i = tid; i < vocab; i += kThreads) {
    const float x = row[i];
    const int b = bucket_of(x);
    if (b == kBuckets) continue;
    atomicAdd(&count_before[b], 1u);
    atomicAdd(&weight_before[b], weight_of(x));
  }
  __syncthreads();
  // Thread t owns bucket t: its own count and weight stay in registers, the arrays become prefixes.
  const unsigned own_count = count_before[tid];
  const u64 own_weight = weight_before[tid];
  unsigned count_prefix, candidates;
  u64 weight_prefix, weight_total;
  CountScan(tmp.count).ExclusiveSum(own_count, count_prefix, candidates);
  __syncthreads();
  WeightScan(tmp.weight).ExclusiveSum(own_weight, weight_prefix, weight_total);
  count_before[tid] = count_prefix;
  weight_before[tid] = weight_prefix;
  __syncthreads();

  // Bucket b's candidates with key >= floor_key into the list, sorted, with inclusive weight sums.
  // Returns their number, or -1 when there are more than kListCap (the same in every thread).
  auto gather_sorted = [&](int b, u64 floor_key) -> int {
    if (tid == 0) list_size = 0;
    __syncthreads();
    for (int i = tid; i < vocab; i += kThreads) {
      const float x = row[i];
      if (bucket_of(x) != b) continue;
      const u64 key = order_key(x, i);
      if (key < floor_key) continue;
      const int slot = atomicAdd(&list_size, 1);
      if (slot < kListCap) {
        list_key[slot] = key;
        list_cum[slot] = weight_of(x);
      }
    }
    __syncthreads();
    const int m = list_size;
    if (m > kListCap) return -1;
    int n = 1;
    while (n < m) n *= 2;
    for (int i = m + tid; i < n; i += kThreads) {  // padding sorts last: real keys are > 0
      list_key[i] = 0;
      list_cum[i] = 0;
    }
    __syncthreads();
    // Bitonic sort, descending by key (keys are distinct: they hold the index).
    for (int k = 2; k <= n; k *= 2)
      for (int j = k / 2; j > 0; j /= 2) {
        for (int i = tid; i < n; i += kThreads) {
          const int partner = i ^ j;
          if (partner <= i) continue;
          const bool descending = (i & k) == 0;
          if ((list_key[i] < list_key[partner]) == descending) {
            const u64 key = list_key[i], w = list_cum[i];
            list_key[i] = list_key[partner];
            list_cum[i] = list_cum[partner];
            list_key[partner] = key;
            list_cum[partner] = w;
          }
        }
        __syncthreads();
      }
    u64 w[kListPerThread];  // blocked: thread t holds entries kListPerThread * t...
#pragma unroll
    for (int e = 0; e < kListPerThread; ++e) w[e] = list_cum[kListPerThread * tid + e];
    WeightScan(tmp.weight).InclusiveSum(w, w);
#pragma unroll
    for (int e = 0; e < kListPerThread; ++e) list_cum[kListPerThread * tid + e] = w[e];
    __syncthreads();
    return m;
  };

  // The eligible tokens: every candidate in the buckets before `limit`, and those of bucket
  // `limit` with key >= floor_key (limit == kBuckets: no cut yet); `eligible` is their weight.
  int limit = kBuckets;
  u64 floor_key = 0, eligible = weight_total;
  // The first eligible position whose cumulative weight reaches `target` (1 <= target <=
  // eligible): its list entry j after gather_sorted of its bucket, or < 0 (none, or too many tokens).
  int at_bucket = 0;
  auto reach = [&](u64 target) -> int {
    if (tid == 0) found = limit;
    __syncthreads();
    if (tid < limit && weight_before[tid] < target && weight_before[tid] + own_weight >= target) found = tid;
    __syncthreads();
    at_bucket = found;
    if (at_bucket == kBuckets) return -1;
    const int m = gather_sorted(at_bucket, at_bucket == limit ? floor_key : 0);
    if (m < 0) return -2;
    if (tid == 0) found = -1;
    __syncthreads();
    const u64 base = weight_before[at_bucket];
    for (int j = tid; j < m; j += kThreads)
      if (base + list_cum[j] >= target && (j == 0 || base + list_cum[j - 1] < target)) found = j;
    __syncthreads();
    return found;
  };
  const int k = sp.top_k > 0 ? min(sp.top_k, vocab) : vocab;
  if (static_cast<unsigned>(k) < candidates) {
    if (tid == 0) found = 0;
    __syncthreads();
    if (count_before[tid] < static_cast<unsigned>(k) && count_before[tid] + own_count >= static_cast<unsigned>(k))
      found = tid;
    __syncthreads();
    const int b = found;
    if (gather_sorted(b, 0) < 0) return give_up();
    const int j = k - static_cast<int>(count_before[b]) - 1;
    limit = b;
    floor_key = list_key[j];
    eligible = weight_before[b] + list_cum[j];
    __syncthreads();  // the list is gathered again below
  }
  if (sp.top_p < 1.0f) {
    const u64 target = max(1ull, static_cast<u64>(ceil(static_cast<double>(sp.top_p) * static_cast<double>(eligible))));
    const int j = reach(min(target, eligible));
    if (j < 0) return give_up();
    limit = at_bucket;
    floor_key = list_key[j];
    eligible = weight_before[at_bucket] + list_cum[j];
    __syncthreads();
  }
  // The first position whose cumulative weight exceeds u * kept (the last kept token if rounding
  // puts the target past the kept mass, as sample_token falls back to it).
  const u64 target = static_cast<u64>(floor(u[blockIdx.x] * static_cast<double>(eligible))) + 1;
  const int j = reach(min(target, eligible));
  if (j < 0) return give_up();
  if (tid == 0) out[blockIdx.x] = key_index(list_key[j]);
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

  /// Row r with params[r]: one launch for a batch of mixed requests (greedy rows among sampled
  /// ones take the highest logit, the lowest index among ties).
  std::vector<int> sample(MatrixView<const float> logits, std::span<const SamplingParams> params,
                          std::span<const double> u, cudaStream_t s) {
    const int rows = logits.rows;
    if (static_cast<int>(u.size()) != rows || static_cast<int>(params.size()) != rows)
      throw InvalidArgument("cuda sampling: " + std::to_string(u.size()) + " uniforms and " +
                            std::to_string(params.size()) + " parameter sets for " + std::to_string(rows) + " rows");
    bool greedy = true;
    for (const SamplingParams& p : params) {
      p.validate();
      greedy = greedy && p.greedy();
    }
    std::vector<int> tokens(static_cast<std::size_t>(rows));
    sorted_rows_ = 0;
    if (rows == 0) return tokens;
    grow(out_, static_cast<std::size_t>(rows));
    if (greedy) {
      kernels::argmax_rows<256><<<rows, 256, 0, s>>>(logits.data, logits.cols, out_.data());
      LCKV_CUDA_CHECK_LAUNCH("argmax_rows");
      download(tokens, s);
      return tokens;
    }
    upload(params, u, s);
    if (!sort_rows_) {
      kernels::select_sample<<<rows, kernels::select::kThreads, 0, s>>>(logits.data, logits.cols, params_.data(),
                                                                         u_.data(), out_.data());
      LCKV_CUDA_CHECK_LAUNCH("select_sample");
      download(tokens, s);
      if (std::find(tokens.begin(), tokens.end(), -1) == tokens.end()) return tokens;
    }
    // Rows the histogram could not resolve (or every row, under set_sort_rows) take the sorted
    // path; when only some do, they are copied side by side first, so that only they are sorted.
    std::vector<int> pick;
    for (int r = 0; r < rows; ++r)
      if (sort_rows_ || tokens[static_cast<std::size_t>(r)] == -1) pick.push_back(r);
    MatrixView<const float> picked = logits;
    if (static_cast<int>(pick.size()) < rows) {
      const std::size_t row_bytes = static_cast<std::size_t>(logits.cols) * sizeof(float);
      grow(picked_, pick.size() * static_cast<std::size_t>(logits.cols));
      std::vector<SamplingParams> picked_params;
      std::vector<double> picked_u;
      for (std::size_t i = 0; i < pick.size(); ++i) {
        const std::size_t r = static_cast<std::size_t>(pick[i]);
        LCKV_CUDA_CHECK(cudaMemcpyAsync(picked_.data() + i * logits.cols, logits.data + r * logits.cols, row_bytes,
                                        cudaMemcpyDeviceToDevice, s));
        picked_params.push_back(params[r]);
        picked_u.push_back(u[r]);
      }
      upload(picked_params, picked_u, s);
      picked = MatrixView<const float>{picked_.data(), static_cast<int>(pick.size()), logits.cols};
    }
    std::vector<int> sorted(pick.size());
    sort_and_sample(picked, s);
    download(sorted, s);
    for (std::size_t i = 0; i < pick.size(); ++i) tokens[static_cast<std::size_t>(pick[i])] = sorted[i];
    sorted_rows_ = static_cast<int>(pick.size());
    return tokens;
  }

  /// Rows of the last call that took the sorted path.
  int sorted_rows() const { return sorted_rows_; }

  /// Every non-greedy row through the full sort instead of the histogram (tests, benchmarks).
  void set_sort_rows(bool on) { sort_rows_ = on; }

private:
  void upload(std::span<const SamplingParams> params, std::span<const double> u, cudaStream_t s) {
    grow(u_, u.size());
    grow(params_, params.size());
    LCKV_CUDA_CHECK(cudaMemcpyAsync(u_.data(), u.data(), u.size() * sizeof(double), cudaMemcpyHostToDevice, s));
    LCKV_CUDA_CHECK(cudaMemcpyAsync(params_.data(), params.data(), params.size() * sizeof(SamplingParams),
                                    cudaMemcpyHostToDevice, s));
  }

  /// out_ = each row's token, from the whole row sorted (params_ and u_ uploaded).
  void sort_and_sample(MatrixView<const float> logits, cudaStream_t s) {
    const int rows = logits.rows, vocab = logits.cols;
    const std::size_t n = static_cast<std::size_t>(rows) * vocab;
    // CUB's segmented sort takes int offsets and counts.
    if (n > static_cast<std::size_t>(INT_MAX))
      throw InvalidArgument("sampling: sorting " + std::to_string(rows) + " rows x vocab " + std::to_string(vocab) +
                            " exceeds 2^31 - 1 logits; sample fewer rows per call");
    grow(keys_, n);
    grow(idx_in_, n);
    grow(idx_out_, n);
    grow(offsets_, static_cast<std::size_t>(rows) + 1);
    std::vector<int> off(static_cast<std::size_t>(rows) + 1);
    for (int r = 0; r <= rows; ++r) off[static_cast<std::size_t>(r)] = r * vocab;
    LCKV_CUDA_CHECK(cudaMemcpyAsync(offsets_.data(), off.data(), off.size() * sizeof(int), cudaMemcpyHostToDevice, s));
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

  /// tokens = out_ (one per row), after the stream's work so far.
  void download(std::vector<int>& tokens, cudaStream_t s) {
    LCKV_CUDA_CHECK(cudaMemcpyAsync(tokens.data(), out_.data(), tokens.size() * sizeof(int), cudaMemcpyDeviceToHost, s));
    LCKV_CUDA_CHECK(cudaStreamSynchronize(s));
  }

  template <class T>
  static void grow(DeviceBuffer<T>& b, std::size_t n) {
    if (b.size() < n) b = DeviceBuffer<T>(n);
  }
  bool sort_rows_ = false;
  int sorted_rows_ = 0;
  DeviceBuffer<float> keys_, picked_;  ///< picked_: the rows of a partial fallback, side by side
  DeviceBuffer<int> idx_in_, idx_out_, offsets_, out_;
  DeviceBuffer<double> u_;
  DeviceBuffer<SamplingParams> params_;
  DeviceBuffer<unsigned char> temp_;
};

}  // namespace lckv::cuda
