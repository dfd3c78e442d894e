#pragma once
/// \file forward_options.hpp
/// How a forward computes a chunk of new tokens, and what it returns.

#include <span>
#include <string>
#include <vector>

#include "lckv/core/buffer.hpp"
#include "lckv/core/error.hpp"
#include "lckv/engine/sampling.hpp"

namespace lckv {

/// How new tokens of a plan with cyclic groups are computed (DESIGN.md §4).
enum class PrefillMode {
  Auto,        ///< the reference's choice: sequential when n <= m + b, else iterative
  Sequential,  ///< token by token: exact
  Iterative,   ///< all tokens at once, m + b Jacobi passes per cyclic group
};

inline const char* to_string(PrefillMode m) {
  switch (m) {
    case PrefillMode::Auto: return "auto";
    case PrefillMode::Sequential: return "sequential";
    case PrefillMode::Iterative: return "iterative";
  }
  return "?";
}

inline PrefillMode parse_prefill_mode(const std::string& s) {
  if (s == "auto") return PrefillMode::Auto;
  if (s == "sequential") return PrefillMode::Sequential;
  if (s == "iterative") return PrefillMode::Iterative;
  throw InvalidArgument("prefill mode \"" + s + "\", expected auto, sequential or iterative");
}

/// New tokens appended to one open cache sequence.
struct SequenceChunk {
  int seq = 0;
  std::span<const int> tokens;
};

struct ForwardOptions {
  PrefillMode mode = PrefillMode::Auto;
  bool all_logits = false;  ///< logits for every new token, not only each chunk's last
};

/// Asks a forward to sample each chunk's next token from its last logits row (sample_token's
/// rule) into Logits::tokens instead of returning the rows (Logits::data stays empty). A backend
/// that samples on the device (CUDA) sends back only the token ids. One entry per chunk in each;
/// not with ForwardOptions::all_logits.
struct TokenSampling {
  std::span<const SamplingParams> params;
  std::span<const double> uniforms;  ///< in [0, 1)
  bool empty() const { return params.empty() && uniforms.empty(); }
};

/// Logits of a forward: row i of chunk c is row(first_row[c] + i).
struct Logits {
  HostBuffer<float> data;
  int rows = 0;
  int vocab = 0;
  std::vector<int> first_row;                 ///< per chunk
  std::vector<PrefillMode> mode_used;         ///< per chunk: Sequential or Iterative
  std::vector<int> tokens;                    ///< per chunk, when the forward was given a TokenSampling
  std::span<const float> row(int r) const {
    return {data.data() + static_cast<std::size_t>(r) * static_cast<std::size_t>(vocab), static_cast<std::size_t>(vocab)};
  }
  /// The last logits row of chunk c.
  std::span<const float> last(int c) const {
    const int end = c + 1 < static_cast<int>(first_row.size()) ? first_row[static_cast<std::size_t>(c) + 1] : rows;
    return row(end - 1);
  }
};

}  // namespace lckv
