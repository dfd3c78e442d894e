// libFuzzer target: layer_types strings. Accepted plans must validate, print
// canonically and parse back equal, and give a well-formed iteration plan.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lckv/plan/iteration_plan.hpp"
#include "lckv/plan/layer_plan.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const lckv::LayerPlan plan = lckv::parse_layer_types(text);
    plan.validate();
    if (!(lckv::parse_layer_types(plan.to_string(), plan.num_layers()) == plan)) __builtin_trap();
    int covered = 0;
    for (const auto& step : lckv::iteration_plan(plan, {2, 1})) {
      if (step.begin < 0 || step.end > plan.num_layers() || step.begin >= step.end) __builtin_trap();
      if (!step.cyclic || step.updates_hidden) covered += step.end - step.begin;
    }
    if (covered != plan.num_layers()) __builtin_trap();  // every layer's output is produced once
    for (int s = 0; s < plan.num_kv_layers(); ++s)
      if (plan.kv_slot(plan.layer_of_slot(s)) != s) __builtin_trap();
  } catch (const lckv::PlanError&) {
  }
  return 0;
}
