// The smallest lckv program: compose an LCKV variant at compile time, build a
// random llama_tiny model, prefill a prompt and decode a few tokens.

#include <cstdio>

#include "lckv/lckv.hpp"

int main() {
  // Sandwich warm-up of 2 layers, every other layer attends to the top of the middle block.
  constexpr lckv::LayerPlan plan = lckv::plans::lckv(8, lckv::warmup::Sandwich{2}, lckv::select::Top{});
  static_assert(plan.num_kv_layers() == 3);

  const lckv::ModelConfig config = lckv::configs::make(lckv::configs::llama_tiny_shape(), plan);
  const lckv::HostWeights weights = lckv::HostWeights::random(config, /*seed=*/1);
  lckv::ContiguousCache<float> cache(lckv::CacheGeometry::of(config), /*max_sequences=*/1, /*max_length=*/64);
  lckv::Transformer<lckv::CpuBackend, lckv::ContiguousCache<float>> model(config, weights.view());

  lckv::GenerationRequest request;
  request.prompt = {1, 450, 4996, 17354};
  request.max_new_tokens = 8;
  const auto result = lckv::generate(model, cache, {request}).front();

  std::printf("layer_types %s: %zu KV bytes/token (fp32)\ngenerated:", plan.to_string().c_str(),
              lckv::kv_bytes_per_token(config, 4));
  for (int t : result.tokens) std::printf(" %d", t);
  std::printf("\n");
}
