// Exercises the CUDA runner of the lckv program (examples/lckv/cuda_runner.hpp)
// on the GPU: `compare` for every variant the CLI offers, and `generate`,
// whose greedy tokens are checked against the CPU backend's. Exit 1 on a
// mismatch; prints one "skipped" line without a device.

#include <cstdio>
#include <string>

#include "../../examples/lckv/cuda_runner.hpp"
#include "lckv/lckv.hpp"

int main() {
  using namespace lckv;
  std::string why;
  if (!cli::cuda_available(&why)) {
    std::printf("runner_smoke: skipped: %s\n", why.c_str());
    return 0;
  }
  const ModelShape s = configs::llama_tiny_shape();
  const std::pair<const char*, LayerPlan> variants[] = {{"standard", plans::standard(s.num_layers)},
                                                        {"lckv-w2", plans::lckv(s.num_layers, warmup::Sandwich{2})},
                                                        {"lckv-w0", plans::pure_top(s.num_layers)},
                                                        {"cla-g2", plans::cla(s.num_layers, 2)},
                                                        {"yoco", plans::yoco(s.num_layers)}};
  int bad = 0;
  std::printf("%-9s %-10s %-5s %10s %12s %14s %12s\n", "variant", "cache", "dtype", "prefill ms", "decode tok/s",
              "prefill mode", "max|dlogit|");
  for (const auto& [name, plan] : variants)
    for (const char* cache : {"contiguous", "paged", "ring"})
      for (const char* dtype : {"fp32", "bf16"}) {
        ModelConfig config = configs::make(s, plan);
        config.attention.sliding_window = 32;
        const HostWeights weights = HostWeights::random(config, 1);
        const auto row = cli::cuda_compare(name, config, weights, cache, dtype, 4, 32, 32, 16, 1);
        std::printf("%-9s %-10s %-5s %10.1f %12.0f %14s %12.2e\n", name, cache, dtype, row.prefill_ms,
                    row.decode_tokens_per_s, row.prefill_mode.c_str(), row.max_abs_delta_logit);
        if (!(row.max_abs_delta_logit < (std::string(dtype) == "fp32" ? 1e-3 : 5e-2))) ++bad;
      }
  // generate: GPU (fp32) greedy tokens == CPU greedy tokens.
  ModelConfig config = configs::make(s, plans::lckv(s.num_layers, warmup::Sandwich{2}));
  const HostWeights weights = HostWeights::random(config, 3);
  GenerationRequest r;
  r.prompt = {1, 15043, 3186, 29892, 920};
  r.max_new_tokens = 24;
  const auto gpu = cli::cuda_generate(config, weights, {r}, {}, nullptr, "fp32").front().tokens;
  ContiguousCache<float> cache(CacheGeometry::of(config), 1, 64);
  Transformer<CpuBackend, ContiguousCache<float>> model(config, weights.view());
  const auto cpu = generate(model, cache, {r}).front().tokens;
  std::printf("generate (greedy, lckv-w2, fp32): GPU %s CPU\n", gpu == cpu ? "==" : "!=");
  if (gpu != cpu) ++bad;
  std::printf("runner_smoke: %s\n", bad ? "FAILED" : "ok");
  return bad ? 1 : 0;
}
