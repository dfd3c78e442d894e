// CUDA runner of the lckv program (see cuda_runner.hpp). No Eigen here.

#include "compare_run.hpp"
#include "cuda_runner.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "lckv/cache/contiguous_cache.hpp"
#include "lckv/cache/paged_cache.hpp"
#include "lckv/cache/ring_cache.hpp"
#include "lckv/core/random.hpp"
#include "lckv/cuda/cuda.cuh"
#include "lckv/engine/transformer.hpp"

namespace lckv::cli {
namespace {

std::string device_name() {
  cudaDeviceProp p{};
  int dev = 0;
  LCKV_CUDA_CHECK(cudaGetDevice(&dev));
  LCKV_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return p.name;
}

void require_device() {
  std::string why;
  if (!cuda_available(&why)) throw InvalidArgument("--device cuda: " + why);
}

template <class F>
decltype(auto) with_dtype(const std::string& dtype, F&& f) {
  if (dtype == "fp32") return f(float{});
  if (dtype == "bf16") return f(__nv_bfloat16{});
  throw InvalidArgument("--device cuda: dtype \"" + dtype + "\", expected fp32 or bf16");
}

template <class W, class Cache>
CudaCompareRow measure(const std::string& variant, const ModelConfig& config, const cuda::DeviceWeights<W>& weights,
                       Cache& cache, int batch, int prompt_len, int gen, int check_tokens, std::uint64_t seed) {
  Transformer<cuda::CudaBackend<W>, Cache> model(config, weights.view());
  const std::vector<GenerationRequest> requests = compare_requests(config, batch, prompt_len, gen, seed);
  GenerationStats stats;
  const auto results = generate(model, cache, requests, {}, &stats);

  CudaCompareRow row;
  row.variant = variant;
  row.layer_types = config.plan.to_string();
  row.kv_layers = config.plan.num_kv_layers();
  row.kv_bytes_per_token = kv_bytes_per_token(config, sizeof(typename Cache::value_type));
  row.cache_bytes = cache.allocated_bytes();
  row.prefill_ms = stats.prefill_seconds * 1e3;
  const long decoded = stats.generated_tokens - batch;
  row.decode_tokens_per_s = stats.decode_seconds > 0 ? static_cast<double>(decoded) / stats.decode_seconds : 0;
  row.prefill_mode = to_string(results.front().prefill_mode);
  row.device = device_name();

  row.max_abs_delta_logit =
      decode_vs_sequential(model, cache, agreement_tokens(requests.front(), results.front(), check_tokens));
  return row;
}

}  // namespace

bool cuda_available(std::string* why) {
  std::string reason;
  if (cuda::device_available(&reason)) return true;
  if (why) *why = "no CUDA device: " + reason;
  return false;
}

CudaCompareRow cuda_compare(const std::string& variant, const ModelConfig& config, const HostWeights& weights,
                            const std::string& cache, const std::string& dtype, int batch, int prompt_len, int gen,
                            int check_tokens, std::uint64_t seed) {
  require_device();
  return with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    cuda::DeviceWeights<T> dev(weights);
    const int max_length = prompt_len + gen + 1;  // the agreement check replays at most `gen` generated tokens
    const CacheGeometry g = CacheGeometry::of(config, sizeof(T));
    CudaCompareRow row;
    if (cache == "contiguous") {
      ContiguousCache<T, cuda::DeviceMemory> c(g, batch + 1, max_length);
      row = measure(variant, config, dev, c, batch, prompt_len, gen, check_tokens, seed);
    } else if (cache == "paged") {
      const int page = 16;
      PagedCache<T, cuda::DeviceMemory> c(g, batch + 1, max_length, (batch + 1) * pages_for(max_length, page), page);
      row = measure(variant, config, dev, c, batch, prompt_len, gen, check_tokens, seed);
    } else if (cache == "ring") {
      RingCache<T, cuda::DeviceMemory> c(config, batch + 1, max_length, prompt_len);
      row = measure(variant, config, dev, c, batch, prompt_len, gen, check_tokens, seed);
    } else {
      throw InvalidArgument("--cache \"" + cache + "\", expected contiguous, paged or ring");
    }
    row.cache = cache;
    row.dtype = dtype;
    return row;
  });
}

std::vector<GenerationResult> cuda_generate(const ModelConfig& config, const HostWeights& weights,
                                            const std::vector<GenerationRequest>& requests, const GenerateOptions& options,
                                            GenerationStats* stats, const std::string& dtype) {
  require_device();
  return with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    cuda::DeviceWeights<T> dev(weights);
    int length = 1;
    for (const auto& r : requests) length = std::max(length, static_cast<int>(r.prompt.size()) + r.max_new_tokens);
    ContiguousCache<T, cuda::DeviceMemory> cache(CacheGeometry::of(config, sizeof(T)),
                                                 std::max<int>(1, static_cast<int>(requests.size())), length);
    Transformer<cuda::CudaBackend<T>, decltype(cache)> model(config, dev.view());
    return generate(model, cache, requests, options, stats);
  });
}

}  // namespace lckv::cli
