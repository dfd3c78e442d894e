#pragma once
/// \file iteration_plan.hpp
/// How a prompt (or training batch) is computed when layers attend to layers
/// above them (DESIGN.md §4): runs of acyclic layers once, each cyclic group
/// `forward_passes` times without gradients and `backward_passes` times with,
/// the last pass alone updating the hidden states.

#include <algorithm>
#include <string>
#include <vector>

#include "lckv/plan/layer_plan.hpp"

namespace lckv {

/// One step: run layers [begin, end) over the new tokens.
struct IterationStep {
  int begin = 0;
  int end = 0;
  bool with_grad = true;       ///< training: gradients flow through this step
  bool updates_hidden = true;  ///< this step's output replaces the hidden states
  bool cyclic = false;         ///< part of a cyclic group's passes
  friend constexpr bool operator==(const IterationStep&, const IterationStep&) = default;
};

/// Iteration counts of a cyclic group (config.json's forward_passes / backward_passes).
struct PassCounts {
  int forward_passes = 7;
  int backward_passes = 2;
  constexpr int total() const { return forward_passes + backward_passes; }
};

/// The end (exclusive) of the cyclic group that starts at layer `begin`:
/// `top` grows to the highest target of the layers in [begin, top] until it stops growing.
constexpr int cyclic_group_end(const LayerPlan& plan, int begin) {
  int top = plan.attends_to(begin);
  while (true) {
    int grown = top;
    for (int l = begin; l <= top; ++l) grown = std::max(grown, plan.attends_to(l));
    if (grown == top) return top + 1;
    top = grown;
  }
}

/// The iteration plan, exactly as the reference builds it (empty runs dropped).
inline std::vector<IterationStep> iteration_plan(const LayerPlan& plan, PassCounts passes = {}) {
  if (passes.forward_passes < 0 || passes.backward_passes < 1)
    throw PlanError("iteration plan: expected forward_passes >= 0 and backward_passes >= 1, got " +
                    std::to_string(passes.forward_passes) + " and " + std::to_string(passes.backward_passes));
  std::vector<IterationStep> steps;
  int acyclic_begin = 0;
  int l = 0;
  while (l < plan.num_layers()) {
    if (!plan.attends_top(l)) {
      ++l;
      continue;
    }
    if (acyclic_begin < l) steps.push_back({acyclic_begin, l, true, true, false});
    const int end = cyclic_group_end(plan, l);
    for (int p = 0; p < passes.forward_passes; ++p) steps.push_back({l, end, false, false, true});
    for (int p = 0; p < passes.backward_passes; ++p)
      steps.push_back({l, end, true, p + 1 == passes.backward_passes, true});
    l = acyclic_begin = end;
  }
  if (acyclic_begin < plan.num_layers()) steps.push_back({acyclic_begin, plan.num_layers(), true, true, false});
  return steps;
}

/// A cyclic group [begin, end) and the number of passes it needs.
struct CyclicGroup {
  int begin = 0;
  int end = 0;
};

/// The cyclic groups of a plan, bottom-up (what inference iterates over).
inline std::vector<CyclicGroup> cyclic_groups(const LayerPlan& plan) {
  std::vector<CyclicGroup> groups;
  for (int l = 0; l < plan.num_layers();) {
    if (!plan.attends_top(l)) {
      ++l;
      continue;
    }
    const int end = cyclic_group_end(plan, l);
    groups.push_back({l, end});
    l = end;
  }
  return groups;
}

}  // namespace lckv
