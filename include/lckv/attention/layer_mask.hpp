#pragma once
/// \file layer_mask.hpp
/// The mask each layer uses, as a runtime value (MaskSpec), and the one place
/// where that runtime value becomes a compile-time attention policy.

#include <string>
#include <utility>

#include "lckv/attention/mask.hpp"
#include "lckv/core/error.hpp"
#include "lckv/plan/layer_plan.hpp"

namespace lckv {

/// Model-level attention options (config.json: sliding_window, force_nodiag;
/// `sink` > 0 turns every windowed layer into StreamingLLM sink + window, with
/// RoPE applied by cache position in every layer, DESIGN.md §3).
struct AttentionOptions {
  int sliding_window = 4096;
  int sink = 0;
  bool force_nodiag = false;
};

/// A layer's mask as data.
struct MaskSpec {
  bool no_diagonal = false;
  int window = 0;  ///< 0: no sliding window
  int sink = 0;    ///< with window > 0: positions [0, sink) always visible
  /// > 0 (StreamingLLM, AttentionOptions::sink > 0): queries and keys arrive
  /// unrotated and attention rotates them with this RoPE base by their cache
  /// positions (KeySpans::cache_position), not their original positions.
  float rope_theta_on_read = 0.0f;
  std::string name() const {
    std::string s = no_diagonal ? "no-diagonal" : "causal";
    if (window > 0) s += (sink > 0 ? "+sink" + std::to_string(sink) : std::string()) + "+window" + std::to_string(window);
    return s;
  }
  friend constexpr bool operator==(const MaskSpec&, const MaskSpec&) = default;
};

/// The mask of layer `l` under `plan` and `options` (DESIGN.md §3).
inline MaskSpec layer_mask(const LayerPlan& plan, int l, const AttentionOptions& options) {
  MaskSpec m;
  m.no_diagonal = plan.attends_top(l) || options.force_nodiag;
  if (plan.sliding(l)) {
    if (options.sliding_window < 1)
      throw InvalidArgument("sliding_window = " + std::to_string(options.sliding_window) + ", expected >= 1");
    m.window = options.sliding_window;
    m.sink = options.sink;
  }
  return m;
}

/// The mask of layer `l` as the model runs it: layer_mask() plus, in StreamingLLM
/// mode, RoPE at read time by cache position with base `rope_theta`.
inline MaskSpec layer_attention(const LayerPlan& plan, int l, const AttentionOptions& options, float rope_theta) {
  MaskSpec m = layer_mask(plan, l, options);
  if (options.sink > 0) m.rope_theta_on_read = rope_theta;
  return m;
}

/// Calls `f(policy)` with the attention policy type matching `m`.
template <class F>
decltype(auto) dispatch_mask(const MaskSpec& m, F&& f) {
  auto with_base = [&](auto base) -> decltype(auto) {
    using Base = decltype(base);
    if (m.window <= 0) return std::forward<F>(f)(base);
    if (m.sink > 0) return std::forward<F>(f)(mask::SinkWindow<Base>{m.sink, m.window});
    return std::forward<F>(f)(mask::SlidingWindow<Base>{m.window});
  };
  return m.no_diagonal ? with_base(mask::NoDiagonal{}) : with_base(mask::Causal{});
}

}  // namespace lckv
