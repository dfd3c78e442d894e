#pragma once
/// \file variants.hpp
/// Named layer plans: the standard decoder, LCKV (warm-up schedule x KV-layer
/// selection), CLA, YOCO and MixAttention. All are constexpr and return the
/// same LayerPlan the `layer_types` parser returns.
///
/// \code
///   constexpr auto lckv_w2 = lckv::plans::lckv(22, lckv::warmup::Sandwich{2}, lckv::select::Top{});
///   static_assert(lckv_w2.num_kv_layers() == 3);
/// \endcode

#include <string>

#include "lckv/plan/layer_plan.hpp"
#include "lckv/plan/selection.hpp"
#include "lckv/plan/warmup.hpp"

namespace lckv::plans {

namespace detail {
constexpr void require(bool ok, const char* what) {
  if (!ok) throw PlanError(what);
}
}  // namespace detail

/// Every layer attends to its own KV: `0_1_2_..._{L-1}`.
constexpr LayerPlan standard(int num_layers) {
  detail::require(num_layers >= 1 && num_layers <= kMaxLayers, "standard plan: num_layers out of range");
  LayerPlan plan;
  for (int l = 0; l < num_layers; ++l) plan.push({l, false});
  return plan;
}

/// LCKV: the warm-up layers keep their own KV, the condensed block attends to
/// the layer the selection strategy picks.
template <WarmupSchedule Warmup, KvSelection Selection = select::Top>
constexpr LayerPlan lckv(int num_layers, Warmup warmup, Selection selection = {}) {
  detail::require(num_layers >= 1 && num_layers <= kMaxLayers, "lckv plan: num_layers out of range");
  const LayerBlock block = warmup.condensed_block(num_layers);
  detail::require(block.begin >= 0 && block.end <= num_layers && block.size() >= 1,
                  "lckv plan: the warm-up layers leave no layer to condense (expected w < num_layers)");
  const int target = selection.target(block);
  LayerPlan plan;
  for (int l = 0; l < num_layers; ++l) plan.push({block.contains(l) ? target : l, false});
  return plan;
}

/// LCKV with no warm-up layer: every layer attends to the top layer.
constexpr LayerPlan pure_top(int num_layers) { return lckv(num_layers, warmup::Bottom{0}, select::Top{}); }

/// Sandwich-middle: the condensed block attends to its middle layer, e.g.
/// L = 22, w = 2: `0_10_10_..._10_21`.
constexpr LayerPlan middle(int num_layers, int w) { return lckv(num_layers, warmup::Sandwich{w}, select::Middle{}); }

/// Cross-Layer Attention: each group of `group` layers attends to its bottom layer.
constexpr LayerPlan cla(int num_layers, int group) {
  detail::require(num_layers >= 1 && num_layers <= kMaxLayers, "cla plan: num_layers out of range");
  detail::require(group >= 1, "cla plan: group size must be >= 1");
  LayerPlan plan;
  for (int l = 0; l < num_layers; ++l) plan.push({l / group * group, false});
  return plan;
}

/// YOCO: the lower m = L/2 layers self-attend through a sliding window; the
/// upper layers attend to the last lower layer with full attention.
constexpr LayerPlan yoco(int num_layers) {
  detail::require(num_layers >= 2 && num_layers <= kMaxLayers, "yoco plan: needs at least 2 layers");
  const int m = num_layers / 2;
  LayerPlan plan;
  for (int l = 0; l < num_layers; ++l) plan.push(l < m ? LayerSpec{l, true} : LayerSpec{m - 1, false});
  return plan;
}

/// MixAttention ("pairs" configuration), in blocks of six layers: the first
/// layer of a block has full attention (a new KV in even blocks, the previous
/// even block's KV in odd ones); layers 1-2 share a sliding-window KV and
/// layers 3-5 share another, e.g. `0_1s_1s_3s_3s_3s_0_7s_7s_9s_9s_9s_12_...`.
constexpr LayerPlan mix_attention(int num_layers) {
  detail::require(num_layers >= 1 && num_layers <= kMaxLayers, "mix_attention plan: num_layers out of range");
  LayerPlan plan;
  for (int l = 0; l < num_layers; ++l) {
    const int block = l / 6, base = block * 6, offset = l % 6;
    if (offset == 0) plan.push({block % 2 == 0 ? base : base - 6, false});
    else if (offset <= 2) plan.push({base + 1, true});
    else plan.push({base + 3, true});
  }
  return plan;
}

}  // namespace lckv::plans
