// Prefill and decode semantics (DESIGN.md §4): iterative prefill with
// m + b >= n is exact, decode of token n equals the sequential forward at n,
// and a prompt appended in pieces equals the prompt at once.

#include "test_support.hpp"

using namespace lckv;
using lt::Rows;

namespace {

/// All logits of `tokens` prefilled in one forward under `mode`.
Rows run_prefill(const ModelConfig& config, const HostWeights& weights, const std::vector<int>& tokens, PrefillMode mode) {
  lt::Model model(config, weights.view());
  lt::Cache cache(CacheGeometry::of(config), 1, static_cast<int>(tokens.size()) + 1);
  return lt::prefill_rows(model, cache, tokens, mode);
}

}  // namespace

TEST_CASE("iterative prefill with m + b >= n equals sequential (named variants)") {
  for (const auto& named : lt::named_plans()) {
    const char* name = named.name;
    const LayerPlan& plan = named.plan;
    for (PassCounts passes : {PassCounts{7, 2}, PassCounts{3, 2}, PassCounts{0, 5}}) {
      const auto config = lt::small_config(plan, /*window=*/3, passes);
      const auto weights = lt::weights_for(config, 31);
      const auto tokens = lt::random_tokens(passes.total(), 128, 8);  // n = m + b exactly
      const Rows seq = run_prefill(config, weights, tokens, PrefillMode::Sequential);
      const Rows it = run_prefill(config, weights, tokens, PrefillMode::Iterative);
      const double err = lt::max_abs_diff_rows(seq, it);
      INFO(std::string(name), " m=", passes.forward_passes, " b=", passes.backward_passes, " n=", tokens.size(),
           ": max |delta logit| = ", err);
      CHECK(err < 1e-4);
      // Shorter prompts need fewer passes and are exact too.
      const std::vector<int> shorter(tokens.begin(), tokens.begin() + 3);
      CHECK(lt::max_abs_diff_rows(run_prefill(config, weights, shorter, PrefillMode::Sequential),
                                  run_prefill(config, weights, shorter, PrefillMode::Iterative)) < 1e-4);
    }
  }
}

TEST_CASE("iterative prefill with m + b >= n equals sequential (random layer_types)") {
  Rng rng(77);
  for (int trial = 0; trial < 20; ++trial) {
    const int L = 2 + static_cast<int>(rng.below(7));
    const auto plan = lt::random_plan(L, rng);
    const auto config = lt::small_config(plan, /*window=*/2 + static_cast<int>(rng.below(4)));
    const auto weights = lt::weights_for(config, 500 + static_cast<std::uint64_t>(trial), 0.15f);
    const auto tokens = lt::random_tokens(1 + static_cast<int>(rng.below(9)), 128, 900 + static_cast<std::uint64_t>(trial));
    const double err = lt::max_abs_diff_rows(run_prefill(config, weights, tokens, PrefillMode::Sequential),
                                             run_prefill(config, weights, tokens, PrefillMode::Iterative));
    INFO(plan.to_string(), " n=", tokens.size(), ": max |delta logit| = ", err);
    CHECK(err < 1e-4);
  }
}

TEST_CASE("iterative prefill with m + b < n is an approximation for cyclic plans, exact for acyclic ones") {
  const auto tokens = lt::random_tokens(24, 128, 4);
  for (const auto& named : lt::named_plans()) {
    const char* name = named.name;
    const LayerPlan& plan = named.plan;
    const auto config = lt::small_config(plan, 3, {2, 1});
    const auto weights = lt::weights_for(config, 41, 0.3f);
    const double err = lt::max_abs_diff_rows(run_prefill(config, weights, tokens, PrefillMode::Sequential),
                                             run_prefill(config, weights, tokens, PrefillMode::Iterative));
    INFO(std::string(name), ": max |delta logit| = ", err);
    if (plan.any_attends_top()) CHECK(err > 1e-3);  // 3 passes cannot make 24 tokens exact
    else CHECK(err < 1e-4);
  }
}

TEST_CASE("Auto mode follows the reference: sequential when n <= m + b") {
  const auto config = lt::small_config(plans::lckv(8, warmup::Sandwich{2}), 4, {7, 2});
  const auto weights = lt::weights_for(config);
  lt::Model model(config, weights.view());
  lt::Cache cache(CacheGeometry::of(config), 2, 32);
  const int a = cache.open(), b = cache.open();
  const auto short_prompt = lt::random_tokens(9, 128, 1), long_prompt = lt::random_tokens(10, 128, 2);
  SequenceChunk chunks[] = {{a, short_prompt}, {b, long_prompt}};
  const Logits l = model.forward(chunks, cache);
  CHECK(l.mode_used[0] == PrefillMode::Sequential);
  CHECK(l.mode_used[1] == PrefillMode::Iterative);
  CHECK(l.rows == 2);
  CHECK(model.resolve_mode(PrefillMode::Iterative, 3) == PrefillMode::Iterative);
  auto seq_config = config;
  seq_config.use_sequential = true;
  lt::Model seq_model(seq_config, weights.view());
  CHECK(seq_model.resolve_mode(PrefillMode::Auto, 100) == PrefillMode::Sequential);
  // Acyclic plans are exact in one pass.
  const auto cla = lt::small_config(plans::cla(8, 2));
  const auto cla_w = lt::weights_for(cla);
  CHECK(lt::Model(cla, cla_w.view()).resolve_mode(PrefillMode::Sequential, 5) == PrefillMode::Iterative);
}

TEST_CASE("decode of token n equals the sequential forward at n, for every n of 40 tokens") {
  const int n_tokens = 40;
  const auto tokens = lt::random_tokens(n_tokens, 128, 99);
  for (const auto& named : lt::named_plans()) {
    const char* name = named.name;
    const LayerPlan& plan = named.plan;
    const auto config = lt::small_config(plan, /*window=*/6);
    const auto weights = lt::weights_for(config, 55);
    lt::Model model(config, weights.view());

    // Decode: token 0 as a one-token prompt, then one token per forward.
    lt::Cache cache(CacheGeometry::of(config), 1, n_tokens);
    const int seq = cache.open();
    const Rows decoded = lt::decode_rows(model, cache, seq, tokens);
    REQUIRE(cache.length(seq) == n_tokens);

    double worst = 0;
    int worst_n = -1;
    for (int n = 0; n < n_tokens; ++n) {
      // A fresh sequential forward over tokens 0..n.
      lt::Cache fresh(CacheGeometry::of(config), 1, n + 1);
      const std::vector<int> prefix(tokens.begin(), tokens.begin() + n + 1);
      const Rows full = lt::prefill_rows(model, fresh, prefix, PrefillMode::Sequential);
      const double err = lt::max_abs_diff(decoded[static_cast<std::size_t>(n)], full.back());
      if (err > worst) worst = err, worst_n = n;
    }
    INFO(std::string(name), " (", plan.to_string(), "): worst max |delta logit| = ", worst, " at n = ", worst_n);
    CHECK(worst < 1e-4);

    // And decode equals the naive reference (not the reference code's off-by-one).
    const auto naive = lt::naive::lckv_sequential(config, weights, tokens);
    const double err = lt::max_abs_diff_rows(decoded, naive);
    INFO("vs naive: ", err);
    CHECK(err < 1e-4);
  }
}

TEST_CASE("decode after an iterative prefill continues exactly when the prefill was exact") {
  // LCKV: prefill 9 tokens iteratively (m + b = 9, exact), then decode 10 more.
  const auto config = lt::small_config(plans::lckv(8, warmup::Sandwich{2}));
  const auto weights = lt::weights_for(config, 61);
  lt::Model model(config, weights.view());
  const auto tokens = lt::random_tokens(19, 128, 12);
  const std::vector<int> prompt(tokens.begin(), tokens.begin() + 9), rest(tokens.begin() + 9, tokens.end());
  lt::Cache cache(CacheGeometry::of(config), 1, 19);
  int seq = 0;
  Rows got = lt::prefill_rows(model, cache, prompt, PrefillMode::Iterative, &seq);
  for (auto& r : lt::decode_rows(model, cache, seq, rest)) got.push_back(r);
  const auto naive = lt::naive::lckv_sequential(config, weights, tokens);
  CHECK(lt::max_abs_diff_rows(got, naive) < 2e-4);
}

TEST_CASE("a prompt appended in pieces (chunked prefill, multi-turn) equals the prompt at once") {
  const auto tokens = lt::random_tokens(17, 128, 5);
  for (const auto& named : lt::named_plans()) {
    const char* name = named.name;
    const LayerPlan& plan = named.plan;
    const auto config = lt::small_config(plan, 4);
    const auto weights = lt::weights_for(config, 71);
    lt::Model model(config, weights.view());
    lt::Cache whole(CacheGeometry::of(config), 1, 17);
    const Rows want = lt::prefill_rows(model, whole, tokens, PrefillMode::Sequential);

    for (auto mode : {PrefillMode::Sequential, PrefillMode::Iterative}) {
      lt::Cache cache(CacheGeometry::of(config), 1, 17);
      const int seq = cache.open();
      Rows got;
      for (auto [from, to] : {std::pair{0, 5}, std::pair{5, 6}, std::pair{6, 13}, std::pair{13, 17}}) {
        const std::vector<int> piece(tokens.begin() + from, tokens.begin() + to);
        SequenceChunk chunk{seq, piece};
        for (auto& r : lt::to_rows(model.forward({&chunk, 1}, cache, {mode, true}))) got.push_back(r);
        CHECK(cache.length(seq) == to);
      }
      const double err = lt::max_abs_diff_rows(got, want);
      INFO(std::string(name), " ", std::string(to_string(mode)), ": ", err);
      CHECK(err < 1e-4);
    }
  }
}

TEST_CASE("a batch of sequences of different lengths equals each sequence alone") {
  const auto config = lt::small_config(plans::lckv(8, warmup::Sandwich{2}), 4, {3, 2});
  const auto weights = lt::weights_for(config, 81);
  lt::Model model(config, weights.view());
  const std::vector<std::vector<int>> prompts{lt::random_tokens(3, 128, 1), lt::random_tokens(5, 128, 2),
                                              lt::random_tokens(1, 128, 3), lt::random_tokens(12, 128, 4)};
  for (auto mode : {PrefillMode::Sequential, PrefillMode::Iterative, PrefillMode::Auto}) {
    lt::Cache cache(CacheGeometry::of(config), 4, 16);
    std::vector<SequenceChunk> chunks;
    for (const auto& p : prompts) chunks.push_back({cache.open(), p});
    const Logits batched = model.forward(chunks, cache, {mode, true});
    for (std::size_t c = 0; c < prompts.size(); ++c) {
      lt::Cache alone(CacheGeometry::of(config), 1, 16);
      const Rows want = lt::prefill_rows(model, alone, prompts[c], mode);
      for (std::size_t i = 0; i < want.size(); ++i) {
        const auto row = batched.row(batched.first_row[c] + static_cast<int>(i));
        CHECK(lt::max_abs_diff(std::vector<float>(row.begin(), row.end()), want[i]) < 1e-4);
      }
    }
  }
}
