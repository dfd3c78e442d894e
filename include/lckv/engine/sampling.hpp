#pragma once
/// \file sampling.hpp
/// Next-token selection: greedy, temperature, top-k, top-p. Sampling is a pure
/// function of the logits and one uniform number u in [0, 1), so any backend
/// given the same u picks the same token, and a seed fixes a whole generation.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "lckv/core/error.hpp"
#include "lckv/core/macros.hpp"

namespace lckv {

struct SamplingParams {
  float temperature = 0.0f;  ///< <= 0: greedy
  int top_k = 0;             ///< 0: no top-k cut
  float top_p = 1.0f;        ///< 1: no nucleus cut

  void validate() const {
    if (!(temperature >= 0.0f) || !std::isfinite(temperature))
      throw InvalidArgument("sampling: temperature = " + std::to_string(temperature) + ", expected >= 0");
    if (top_k < 0) throw InvalidArgument("sampling: top_k = " + std::to_string(top_k) + ", expected >= 0");
    if (!(top_p > 0.0f && top_p <= 1.0f))
      throw InvalidArgument("sampling: top_p = " + std::to_string(top_p) + ", expected in (0, 1]");
  }
  /// Host and device: the CUDA sampler's kernel asks it per row.
  LCKV_HD bool greedy() const { return temperature <= 0.0f || top_k == 1; }
};

/// The highest logit's index (the lowest index among ties).
inline int argmax(std::span<const float> logits) {
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

/// Samples from softmax(logits / T) restricted to the top_k most likely tokens
/// and then to the smallest prefix whose probability reaches top_p.
inline int sample_token(std::span<const float> logits, const SamplingParams& p, double u) {
  if (p.greedy()) return argmax(logits);
  const int vocab = static_cast<int>(logits.size());
  std::vector<int> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  auto more_likely = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const int k = p.top_k > 0 ? std::min(p.top_k, vocab) : vocab;
  std::partial_sort(order.begin(), order.begin() + k, order.end(), more_likely);
  order.resize(static_cast<std::size_t>(k));

  std::vector<double> prob(order.size());
  const double top = logits[order[0]];
  double total = 0;
  for (std::size_t i = 0; i < order.size(); ++i) total += prob[i] = std::exp((logits[order[i]] - top) / p.temperature);
  std::size_t keep = order.size();
  if (p.top_p < 1.0f) {
    double cumulative = 0;
    for (std::size_t i = 0; i < order.size(); ++i) {
      cumulative += prob[i] / total;
      if (cumulative >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  const double kept = std::accumulate(prob.begin(), prob.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  double cumulative = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    cumulative += prob[i];
    if (u * kept < cumulative) return order[i];
  }
  return order[keep - 1];
}

}  // namespace lckv
