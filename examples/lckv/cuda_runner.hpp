#pragma once
// The CUDA side of `lckv compare --device cuda` and `lckv generate --device cuda`.
// A plain C++ header (no CUDA types): main.cpp and the commands include it when
// the program is built with LCKV_WITH_CUDA; cuda_runner.cu implements it.

#include <cstdint>
#include <string>
#include <vector>

#include "lckv/engine/generator.hpp"
#include "lckv/model/config.hpp"
#include "lckv/model/weights.hpp"

namespace lckv::cli {

/// True when a CUDA device can run the backend; otherwise `why` gets one line
/// ("no CUDA device: ...").
bool cuda_available(std::string* why);

/// One variant's row of `lckv compare --device cuda`.
struct CudaCompareRow {
  std::string variant, layer_types, cache, dtype, device;
  int kv_layers = 0;
  std::size_t kv_bytes_per_token = 0, cache_bytes = 0;
  double prefill_ms = 0, decode_tokens_per_s = 0, max_abs_delta_logit = 0;
  std::string prefill_mode;
};

/// Runs one variant on the GPU as `lckv compare` does on the CPU: `batch`
/// requests of `prompt_len` random tokens (Rng(seed * 7919 + 17), like the CPU
/// command) generating `gen` tokens each through the generator, then the
/// agreement check: decoding token by token vs one sequential forward over the
/// same tokens (`check_tokens` generated tokens included), both on the GPU.
/// cache: "contiguous" | "paged" | "ring"; dtype (weights and KV): "fp32" | "bf16".
CudaCompareRow cuda_compare(const std::string& variant, const ModelConfig& config, const HostWeights& weights,
                            const std::string& cache, const std::string& dtype, int batch, int prompt_len, int gen,
                            int check_tokens, std::uint64_t seed);

/// `generate()` on the GPU over a contiguous cache of `requests.size()` sequences
/// long enough for every request; dtype: "fp32" | "bf16".
std::vector<GenerationResult> cuda_generate(const ModelConfig& config, const HostWeights& weights,
                                            const std::vector<GenerationRequest>& requests, const GenerateOptions& options,
                                            GenerationStats* stats, const std::string& dtype);

}  // namespace lckv::cli
