// A project outside lckv: composes a plan at compile time and parses one at run time.
#include <cstdio>

#include "lckv/plan/layer_plan.hpp"
#include "lckv/plan/variants.hpp"

int main() {
  constexpr auto composed = lckv::plans::lckv(22, lckv::warmup::Sandwich{2});
  static_assert(composed.num_kv_layers() == 3);
  const auto parsed = lckv::parse_layer_types(composed.to_string(), 22);
  if (!(parsed == composed)) {
    std::puts("consumer: parsed plan differs from the composed one");
    return 1;
  }
  std::printf("consumer: %s\n", parsed.to_string().c_str());
  return 0;
}
