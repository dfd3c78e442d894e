// CPU prefill and decode of lckv's transformer variants on the built-in
// llama_tiny shape (8 layers, hidden 512, MLP 1024, 8 / 4 heads, vocab 32000),
// and a plain fp32 C-style Llama (baseline_llama.cpp) decoding the same shape.
//
//   build-tests/bin/bench_cpu --benchmark_out=cpu.json --benchmark_out_format=json
//
// Counters: items_per_second = tokens/s; weight_rd and kv_rd = bytes/s of weights
// and KV-cache entries a step must read at least once (each layer's q/o/MLP, its
// k/v projections where it computes KV, lm_head; and per sequence the KV keys
// and values each layer's mask allows at the decode position).

#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "baseline_llama.hpp"
#include "lckv/lckv.hpp"

namespace {

using Cache = lckv::ContiguousCache<float>;
using Model = lckv::Transformer<lckv::CpuBackend, Cache>;

constexpr int kContext = 128;  // decode: positions already cached
constexpr int kPrompt = 32;    // prefill: prompt length per sequence

struct Variant {
  const char* name;
  lckv::LayerPlan plan;
};

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = [] {
    const int L = lckv::configs::llama_tiny_shape().num_layers;
    return std::vector<Variant>{
        {"standard", lckv::plans::standard(L)},
        {"lckv_w2", lckv::plans::lckv(L, lckv::warmup::Sandwich{2})},
        {"pure_top", lckv::plans::pure_top(L)},
        {"cla_g2", lckv::plans::cla(L, 2)},
        {"yoco", lckv::plans::yoco(L)},
    };
  }();
  return v;
}

/// A model and its weights, built once per variant (random weights, fixed seed).
struct Setup {
  lckv::ModelConfig config;
  lckv::HostWeights weights;
  explicit Setup(const lckv::LayerPlan& plan)
      : config(lckv::configs::make(lckv::configs::llama_tiny_shape(), plan)),
        weights(lckv::HostWeights::random(config, 1234)) {}
  /// Weight bytes one step reads: every tensor except the embedding table (one row per token).
  std::size_t weight_bytes() const {
    std::size_t n = 0;
    for (const auto& t : weights.tensors())
      if (t.name != "model.embed_tokens.weight" || config.shape.tie_word_embeddings) n += static_cast<std::size_t>(t.numel());
    return n * sizeof(float);
  }
  /// KV bytes one sequence's decode step at position `pos` reads (keys + values each layer's mask allows).
  std::size_t kv_bytes(int pos) const {
    std::size_t keys = 0;
    for (int l = 0; l < config.shape.num_layers; ++l)
      keys += static_cast<std::size_t>(lckv::dispatch_mask(lckv::layer_mask(config.plan, l, config.attention),
                                                           [&](auto p) { return p.keys(pos).count(); }));
    return keys * 2 * static_cast<std::size_t>(config.shape.kv_dim()) * sizeof(float);
  }
};

Setup& setup(int variant) {
  static std::map<int, std::unique_ptr<Setup>> cache;
  auto& s = cache[variant];
  if (!s) s = std::make_unique<Setup>(variants()[static_cast<std::size_t>(variant)].plan);
  return *s;
}

void set_rates(benchmark::State& state, double weight_bytes, double kv_bytes, double tokens) {
  using C = benchmark::Counter;
  state.counters["weight_rd"] = C(weight_bytes, C::kIsIterationInvariantRate, C::kIs1000);
  state.counters["kv_rd"] = C(kv_bytes, C::kIsIterationInvariantRate, C::kIs1000);
  state.SetItemsProcessed(static_cast<std::int64_t>(tokens) * state.iterations());
}

// One decode step for `batch` sequences that each hold kContext positions. The
// cache is filled by bookkeeping only (its values do not change the work), and
// truncated back after every step so the context stays fixed.
void BM_Decode(benchmark::State& state) {
  const int variant = static_cast<int>(state.range(0)), batch = static_cast<int>(state.range(1));
  Setup& s = setup(variant);
  Cache cache(lckv::CacheGeometry::of(s.config), batch, kContext + 1);
  Model model(s.config, s.weights.view());
  std::vector<int> tokens(static_cast<std::size_t>(batch));
  std::vector<lckv::SequenceChunk> chunks;
  for (int b = 0; b < batch; ++b) {
    const int seq = cache.open();
    cache.reserve(seq, kContext);
    cache.commit(seq, kContext);
    tokens[static_cast<std::size_t>(b)] = (b * 7919 + 13) % s.config.shape.vocab_size;
  }
  for (int b = 0; b < batch; ++b) chunks.push_back({b, std::span<const int>(&tokens[static_cast<std::size_t>(b)], 1)});
  for (auto _ : state) {
    auto logits = model.forward(chunks, cache);
    benchmark::DoNotOptimize(logits.data.data());
    for (int b = 0; b < batch; ++b) cache.truncate(b, kContext);
  }
  state.SetLabel(variants()[static_cast<std::size_t>(variant)].name);
  set_rates(state, static_cast<double>(s.weight_bytes()), static_cast<double>(s.kv_bytes(kContext)) * batch, batch);
}

// Prefill of `batch` prompts of kPrompt tokens (Auto mode: iterative, m + b = 9
// passes over the cyclic group for LCKV-style plans).
void BM_Prefill(benchmark::State& state) {
  const int variant = static_cast<int>(state.range(0)), batch = static_cast<int>(state.range(1));
  Setup& s = setup(variant);
  Cache cache(lckv::CacheGeometry::of(s.config), batch, kPrompt);
  Model model(s.config, s.weights.view());
  std::vector<std::vector<int>> prompts;
  std::vector<lckv::SequenceChunk> chunks;
  lckv::Rng rng(5);
  for (int b = 0; b < batch; ++b) {
    std::vector<int> p(kPrompt);
    for (auto& t : p) t = static_cast<int>(rng.below(static_cast<std::uint64_t>(s.config.shape.vocab_size)));
    prompts.push_back(std::move(p));
  }
  for (int b = 0; b < batch; ++b) chunks.push_back({cache.open(), prompts[static_cast<std::size_t>(b)]});
  for (auto _ : state) {
    auto logits = model.forward(chunks, cache);
    benchmark::DoNotOptimize(logits.data.data());
    for (int b = 0; b < batch; ++b) cache.truncate(b, 0);
  }
  // Weights of every layer are read once per pass: the cyclic group's layers m + b times.
  int layer_passes = 0;
  const int cyclic_passes = std::min(s.config.passes.total(), kPrompt);
  for (int l = 0; l < s.config.shape.num_layers; ++l) {
    bool cyclic = false;
    for (const auto& g : lckv::cyclic_groups(s.config.plan)) cyclic |= l >= g.begin && l < g.end;
    layer_passes += cyclic ? cyclic_passes : 1;
  }
  state.counters["layer_passes"] = layer_passes;
  state.SetLabel(variants()[static_cast<std::size_t>(variant)].name);
  state.SetItemsProcessed(static_cast<std::int64_t>(batch) * kPrompt * state.iterations());
}

// The baseline: one token through a plain C Llama (standard plan, batch 1) at
// position kContext, with the same weights as the lckv standard model.
void BM_BaselineDecode(benchmark::State& state) {
  Setup& s = setup(0);
  const auto& sh = s.config.shape;
  baseline::Weights w;
  auto v = s.weights.view();
  w.embed = v.embed_tokens;
  w.norm = v.norm;
  w.lm_head = v.lm_head;
  for (const auto& l : v.layers)
    w.layers.push_back({l.q_proj, l.k_proj, l.v_proj, l.o_proj, l.gate_proj, l.up_proj, l.down_proj, l.input_layernorm,
                        l.post_attention_layernorm});
  baseline::Llama llama({sh.vocab_size, sh.hidden_size, sh.intermediate_size, sh.num_layers, sh.num_heads, sh.num_kv_heads,
                         sh.head_dim, kContext + 1, sh.rms_norm_eps, sh.rope_theta},
                        w);
  for (auto _ : state) benchmark::DoNotOptimize(llama.forward(13, kContext));
  state.SetLabel("baseline_c");
  set_rates(state, static_cast<double>(s.weight_bytes()), static_cast<double>(s.kv_bytes(kContext)), 1);
}

/// Before measuring: the baseline and lckv's standard model must compute the same logits.
double baseline_agreement() {
  Setup& s = setup(0);
  const auto& sh = s.config.shape;
  auto v = s.weights.view();
  baseline::Weights w{v.embed_tokens, v.norm, v.lm_head, {}};
  for (const auto& l : v.layers)
    w.layers.push_back({l.q_proj, l.k_proj, l.v_proj, l.o_proj, l.gate_proj, l.up_proj, l.down_proj, l.input_layernorm,
                        l.post_attention_layernorm});
  baseline::Llama llama({sh.vocab_size, sh.hidden_size, sh.intermediate_size, sh.num_layers, sh.num_heads, sh.num_kv_heads,
                         sh.head_dim, 8, sh.rms_norm_eps, sh.rope_theta},
                        w);
  Cache cache(lckv::CacheGeometry::of(s.config), 1, 8);
  Model model(s.config, v);
  const int seq = cache.open();
  double worst = 0;
  const int tokens[] = {1, 15043, 3186, 29871, 42};
  for (int pos = 0; pos < 5; ++pos) {
    lckv::SequenceChunk chunk{seq, std::span<const int>(&tokens[pos], 1)};
    auto ours = model.forward({&chunk, 1}, cache);
    const float* theirs = llama.forward(tokens[pos], pos);
    for (int i = 0; i < sh.vocab_size; ++i) worst = std::max(worst, static_cast<double>(std::abs(ours.row(0)[static_cast<std::size_t>(i)] - theirs[i])));
  }
  return worst;
}

void variant_batch_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"variant", "batch"});
  for (int v = 0; v < static_cast<int>(variants().size()); ++v)
    for (int batch : {1, 8, 32}) b->Args({v, batch});
}

}  // namespace

BENCHMARK(BM_BaselineDecode)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Decode)->Apply(variant_batch_args)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Prefill)->Apply(variant_batch_args)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.2);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const double diff = baseline_agreement();
  std::fprintf(stderr, "baseline vs lckv standard, decode of 5 tokens: max |delta logit| = %.3g\n", diff);
  benchmark::AddCustomContext("baseline_max_abs_delta_logit", std::to_string(diff));
  benchmark::AddCustomContext("decode_context", std::to_string(kContext));
  benchmark::AddCustomContext("prefill_prompt", std::to_string(kPrompt));
  if (!(diff < 1e-3)) {
    std::fprintf(stderr, "the baseline disagrees with lckv: not benchmarking\n");
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
