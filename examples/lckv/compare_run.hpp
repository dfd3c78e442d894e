#pragma once
// What `lckv compare` does with one variant on any backend: the requests it
// generates and the decode-vs-sequential agreement check. No CLI11 here, so the
// CUDA runner (compiled by nvcc) shares it with the CPU command.

#include <algorithm>
#include <cmath>
#include <vector>

#include "lckv/core/random.hpp"
#include "lckv/engine/forward_options.hpp"
#include "lckv/engine/generator.hpp"
#include "lckv/model/config.hpp"

namespace lckv::cli {

/// `batch` greedy requests of `prompt_len` random tokens generating `gen` each;
/// the same prompts on every backend for a seed.
inline std::vector<GenerationRequest> compare_requests(const ModelConfig& config, int batch, int prompt_len, int gen,
                                                       std::uint64_t seed) {
  Rng rng(seed * 7919 + 17);
  std::vector<GenerationRequest> requests(static_cast<std::size_t>(batch));
  for (auto& r : requests) {
    for (int t = 0; t < prompt_len; ++t)
      r.prompt.push_back(static_cast<int>(rng.below(static_cast<std::uint64_t>(config.shape.vocab_size))));
    r.max_new_tokens = gen;
  }
  return requests;
}

/// Max |delta logit| between decoding `tokens` one at a time through the cache
/// and one sequential forward over all of them (two fresh cache sequences).
template <class Model, class Cache>
double decode_vs_sequential(Model& model, Cache& cache, const std::vector<int>& tokens) {
  const int decoding = cache.open();
  std::vector<std::vector<float>> decoded;
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    SequenceChunk c{decoding, std::span<const int>(&tokens[t], 1)};
    const Logits l = model.forward({&c, 1}, cache);
    decoded.emplace_back(l.last(0).begin(), l.last(0).end());
  }
  cache.close(decoding);
  const int sequential = cache.open();
  SequenceChunk all{sequential, tokens};
  const Logits reference = model.forward({&all, 1}, cache, {PrefillMode::Sequential, true});
  cache.close(sequential);
  double worst = 0;
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    const auto row = reference.row(static_cast<int>(t));
    for (std::size_t k = 0; k < row.size(); ++k)
      worst = std::max(worst, static_cast<double>(std::abs(decoded[t][k] - row[k])));
  }
  return worst;
}

/// The first request's prompt followed by up to `check_tokens` of its generated tokens.
inline std::vector<int> agreement_tokens(const GenerationRequest& request, const GenerationResult& result,
                                         int check_tokens) {
  std::vector<int> tokens = request.prompt;
  const auto n = std::min<std::size_t>(static_cast<std::size_t>(std::max(check_tokens, 0)), result.tokens.size());
  tokens.insert(tokens.end(), result.tokens.begin(), result.tokens.begin() + static_cast<std::ptrdiff_t>(n));
  return tokens;
}

}  // namespace lckv::cli
