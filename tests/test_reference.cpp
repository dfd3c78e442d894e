// The library against independent naive references written in the test
// (test_support.hpp): a plain causal Llama for the standard plan, and a
// token-by-token LCKV forward with per-layer KV lists for every plan.

#include "test_support.hpp"

using namespace lckv;
using lt::Rows;

namespace {

Rows to_float_rows(const std::vector<lt::naive::Vec>& v) {
  Rows out;
  for (const auto& r : v) out.emplace_back(r.begin(), r.end());
  return out;
}

}  // namespace

TEST_CASE("standard layer_types equals a plain causal Llama") {
  for (bool tied : {false, true}) {
    auto shape = lt::small_shape(4);
    shape.tie_word_embeddings = tied;
    const auto config = configs::make(shape, plans::standard(4));
    const auto weights = lt::weights_for(config, 11);
    const auto tokens = lt::random_tokens(24, shape.vocab_size, 3);
    const Rows want = to_float_rows(lt::naive::llama_causal(shape, weights, tokens));

    lt::Cache cache(CacheGeometry::of(config), 1, 32);
    lt::Model model(config, weights.view());
    const Rows got = lt::prefill_rows(model, cache, tokens, PrefillMode::Auto);
    const double err = lt::max_abs_diff_rows(got, want);
    INFO("tied = ", tied, ", max |delta logit| = ", err);
    CHECK(err < 1e-4);

    // The same through decode, one token at a time.
    lt::Cache cache2(CacheGeometry::of(config), 1, 32);
    const int seq = cache2.open();
    const double derr = lt::max_abs_diff_rows(lt::decode_rows(model, cache2, seq, tokens), want);
    INFO("decode max |delta logit| = ", derr);
    CHECK(derr < 1e-4);
  }
}

TEST_CASE("the two naive references agree on the standard plan (sanity of the references)") {
  const auto config = lt::small_config(plans::standard(3));
  const auto weights = lt::weights_for(config, 5);
  const auto tokens = lt::random_tokens(12, 128, 9);
  const auto a = lt::naive::llama_causal(config.shape, weights, tokens);
  const auto b = lt::naive::lckv_sequential(config, weights, tokens);
  CHECK(lt::max_abs_diff_rows(a, b) < 1e-9);
}

TEST_CASE("named variants equal the naive sequential LCKV reference") {
  const auto tokens = lt::random_tokens(20, 128, 21);
  for (const auto& named : lt::named_plans()) {
    const char* name = named.name;
    const LayerPlan& plan = named.plan;
    const auto config = lt::small_config(plan, /*window=*/4);
    const auto weights = lt::weights_for(config, 13);
    const Rows want = to_float_rows(lt::naive::lckv_sequential(config, weights, tokens));
    lt::Model model(config, weights.view());
    lt::Cache cache(CacheGeometry::of(config), 1, 32);
    const Rows got = lt::prefill_rows(model, cache, tokens, PrefillMode::Sequential);
    const double err = lt::max_abs_diff_rows(got, want);
    INFO(std::string(name), " (", plan.to_string(), "): max |delta logit| = ", err);
    CHECK(err < 1e-4);
  }
}

TEST_CASE("random layer_types equal the naive sequential LCKV reference") {
  Rng rng(2024);
  for (int trial = 0; trial < 12; ++trial) {
    const int L = 2 + static_cast<int>(rng.below(5));
    const auto plan = lt::random_plan(L, rng);
    auto config = lt::small_config(plan, /*window=*/3);
    config.attention.force_nodiag = trial % 4 == 3;
    const auto weights = lt::weights_for(config, 100 + static_cast<std::uint64_t>(trial));
    const auto tokens = lt::random_tokens(9, 128, 300 + static_cast<std::uint64_t>(trial));
    const Rows want = to_float_rows(lt::naive::lckv_sequential(config, weights, tokens));
    lt::Model model(config, weights.view());
    for (auto mode : {PrefillMode::Sequential, PrefillMode::Iterative}) {
      lt::Cache cache(CacheGeometry::of(config), 1, 16);
      const double err = lt::max_abs_diff_rows(lt::prefill_rows(model, cache, tokens, mode), want);
      INFO(plan.to_string(), " force_nodiag=", config.attention.force_nodiag, " mode=", std::string(to_string(mode)),
           ": max |delta logit| = ", err);
      CHECK(err < 1e-4);
    }
  }
}

TEST_CASE("StreamingLLM sink + window equals the naive reference") {
  auto config = lt::small_config(parse_layer_types("0s_1s_1_3s"), /*window=*/4);
  config.attention.sink = 2;
  const auto weights = lt::weights_for(config, 17);
  const auto tokens = lt::random_tokens(16, 128, 5);
  const Rows want = to_float_rows(lt::naive::lckv_sequential(config, weights, tokens));
  lt::Model model(config, weights.view());
  lt::Cache cache(CacheGeometry::of(config), 1, 16);
  CHECK(lt::max_abs_diff_rows(lt::prefill_rows(model, cache, tokens, PrefillMode::Auto), want) < 1e-4);
  // The sink matters: without it the reference differs.
  config.attention.sink = 0;
  const Rows no_sink = to_float_rows(lt::naive::lckv_sequential(config, weights, tokens));
  CHECK(lt::max_abs_diff_rows(no_sink, want) > 1e-2);
}

TEST_CASE("the first token's attention output at attends-top layers is zero") {
  // Pure top: every layer but the last attends to the top layer. With one token
  // those layers see no key, so their attention output (and o_proj of it) is zero:
  // the logits equal a model whose o_proj is zero in those layers.
  const int L = 4;
  const auto config = lt::small_config(plans::pure_top(L));
  const auto weights = lt::weights_for(config, 23);
  auto no_attention = weights.view();  // same weights, but o_proj of layers < L-1 all zero
  std::vector<float> zeros(static_cast<std::size_t>(config.shape.hidden_size) * config.shape.q_dim(), 0.0f);
  for (int l = 0; l + 1 < L; ++l) no_attention.layers[static_cast<std::size_t>(l)].o_proj = zeros.data();

  lt::Model model(config, weights.view());
  lt::Model reference(config, no_attention);
  const std::vector<int> prompt{42};
  lt::Cache ref_cache(CacheGeometry::of(config), 1, 8);
  const Rows want = lt::prefill_rows(reference, ref_cache, prompt, PrefillMode::Auto);

  // Fill the cache with another sequence first, so stale KV sits at position 0.
  lt::Cache cache(CacheGeometry::of(config), 1, 8);
  {
    int seq = 0;
    (void)lt::prefill_rows(model, cache, lt::random_tokens(6, 128, 1), PrefillMode::Sequential, &seq);
    cache.close(seq);
  }
  for (auto mode : {PrefillMode::Sequential, PrefillMode::Iterative}) {
    int seq = 0;
    const Rows got = lt::prefill_rows(model, cache, prompt, mode, &seq);
    cache.close(seq);
    CHECK(lt::max_abs_diff_rows(got, want) < 1e-5);
  }
  // The naive reference agrees, and attention does matter in this model.
  CHECK(lt::max_abs_diff_rows(to_float_rows(lt::naive::lckv_sequential(config, weights, prompt)), want) < 1e-4);
  const auto std_config = lt::small_config(plans::standard(L));
  lt::Cache std_cache(CacheGeometry::of(std_config), 1, 8);
  const auto std_weights = lt::weights_for(std_config, 23);
  lt::Model std_model(std_config, std_weights.view());
  CHECK(lt::max_abs_diff_rows(lt::prefill_rows(std_model, std_cache, prompt, PrefillMode::Auto), want) > 1e-2);
}

TEST_CASE("attention op: no-diagonal first query is zero, others match a hand-written softmax") {
  // One slot of 5 positions, 2 kv heads, head_dim 4; 4 query heads.
  CacheGeometry g{1, 2, 4, 4};
  lt::Cache cache(g, 1, 5);
  const int seq = cache.open();
  const auto slot = cache.slot(0);
  Rng rng(3);
  for (int p = 0; p < 5; ++p)
    for (int h = 0; h < 2; ++h)
      for (int e = 0; e < 4; ++e) {
        slot.key(seq, p, h)[e] = static_cast<float>(rng.normal());
        slot.value(seq, p, h)[e] = static_cast<float>(rng.normal());
      }
  std::vector<float> q(5 * 16), out(5 * 16, 1.0f);
  for (auto& x : q) x = static_cast<float>(rng.normal());
  std::vector<RowInfo> rows;
  for (int p = 0; p < 5; ++p) rows.push_back({seq, p});
  auto check = [&](const MaskSpec& m, auto&& keys_of) {
    std::fill(out.begin(), out.end(), 1.0f);
    cpu::attention(MatrixView<const float>{q.data(), 5, 16}, slot, rows.data(), m, 4, MatrixView<float>{out.data(), 5, 16});
    for (int p = 0; p < 5; ++p)
      for (int h = 0; h < 4; ++h) {
        std::vector<const lt::naive::Vec*> ks, vs;
        std::vector<lt::naive::Vec> kstore, vstore;
        for (int j : keys_of(p)) {
          kstore.emplace_back(slot.key(seq, j, h / 2), slot.key(seq, j, h / 2) + 4);
          vstore.emplace_back(slot.value(seq, j, h / 2), slot.value(seq, j, h / 2) + 4);
        }
        for (std::size_t i = 0; i < kstore.size(); ++i) ks.push_back(&kstore[i]), vs.push_back(&vstore[i]);
        double qd[4], od[4];
        for (int e = 0; e < 4; ++e) qd[e] = q[static_cast<std::size_t>(p * 16 + h * 4 + e)];
        lt::naive::attend(qd, ks, vs, 0, 4, od);
        for (int e = 0; e < 4; ++e) CHECK(out[static_cast<std::size_t>(p * 16 + h * 4 + e)] == doctest::Approx(od[e]).epsilon(1e-5));
      }
  };
  auto range = [](int a, int b) {
    std::vector<int> v;
    for (int j = a; j < b; ++j) v.push_back(j);
    return v;
  };
  check({true, 0, 0}, [&](int p) { return range(0, p); });
  check({false, 0, 0}, [&](int p) { return range(0, p + 1); });
  check({false, 2, 0}, [&](int p) { return range(std::max(0, p - 1), p + 1); });
  check({true, 3, 1}, [&](int p) {
    auto v = range(std::max(1, p - 2), p);
    if (p > 0) v.insert(v.begin(), 0);
    return v;
  });
  // Exactly zero for the no-diagonal first query.
  cpu::attention(MatrixView<const float>{q.data(), 5, 16}, slot, rows.data(), MaskSpec{true, 0, 0}, 4,
                 MatrixView<float>{out.data(), 5, 16});
  for (int e = 0; e < 16; ++e) CHECK(out[static_cast<std::size_t>(e)] == 0.0f);
}
