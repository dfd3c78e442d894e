// Batched generation (determinism, freeing the cache) and bad input: clear
// errors that leave the caches of other sequences as they were.

#include <cstring>

#include "test_support.hpp"

using namespace lckv;
using lt::Rows;

namespace {

using Paged = PagedCache<float>;
using PagedModel = Transformer<CpuBackend, Paged>;

std::vector<GenerationRequest> sample_requests() {
  std::vector<GenerationRequest> r(4);
  r[0].prompt = lt::random_tokens(5, 128, 1);
  r[0].max_new_tokens = 12;
  r[0].sampling = {0.8f, 20, 0.9f};
  r[0].seed = 11;
  r[1].prompt = lt::random_tokens(13, 128, 2);
  r[1].max_new_tokens = 4;
  r[1].sampling = {1.0f, 0, 1.0f};
  r[1].seed = 12;
  r[2].prompt = lt::random_tokens(1, 128, 3);
  r[2].max_new_tokens = 9;  // greedy
  r[3].prompt = lt::random_tokens(8, 128, 4);
  r[3].max_new_tokens = 7;
  r[3].sampling = {0.7f, 5, 1.0f};
  r[3].seed = 14;
  return r;
}

template <class C>
std::vector<GenerationResult> run_generate(const ModelConfig& config, const HostWeights& weights, C& cache,
                                           const std::vector<GenerationRequest>& requests, const GenerateOptions& opt = {}) {
  Transformer<CpuBackend, C> model(config, weights.view());
  return generate(model, cache, requests, opt);
}

/// Every key and value byte a sequence holds in a contiguous cache, for checking it stays untouched.
std::vector<float> snapshot(const lt::Cache& cache, int seq, int length) {
  std::vector<float> out;
  for (int s = 0; s < cache.num_slots(); ++s) {
    const auto slot = cache.slot(s);
    for (int p = 0; p < length; ++p)
      for (int h = 0; h < slot.kv_heads; ++h) {
        out.insert(out.end(), slot.key(seq, p, h), slot.key(seq, p, h) + slot.head_dim);
        out.insert(out.end(), slot.value(seq, p, h), slot.value(seq, p, h) + slot.head_dim);
      }
  }
  return out;
}

}  // namespace

TEST_CASE("generation is deterministic for a seed, whatever the batch composition") {
  const auto requests = sample_requests();
  for (const auto& named : lt::named_plans()) {
    const char* name = named.name;
    const LayerPlan& plan = named.plan;
    if (std::string(name).find("w=2") != std::string::npos && std::string(name) != "lckv sandwich w=2") continue;
    const auto config = lt::small_config(plan, 4);
    const auto weights = lt::weights_for(config, 5, 0.2f);
    INFO(std::string(name));
    lt::Cache c1(CacheGeometry::of(config), 4, 24), c2(CacheGeometry::of(config), 4, 24);
    const auto first = run_generate(config, weights, c1, requests);
    const auto second = run_generate(config, weights, c2, requests);
    for (std::size_t i = 0; i < requests.size(); ++i) {
      CHECK(first[i].tokens == second[i].tokens);
      CHECK(static_cast<int>(first[i].tokens.size()) == requests[i].max_new_tokens);
      CHECK(first[i].stop == StopReason::Length);
    }
    // Each request alone, and all four through a cache of two sequences (continuous admission).
    for (std::size_t i = 0; i < requests.size(); ++i) {
      lt::Cache alone(CacheGeometry::of(config), 1, 24);
      CHECK(run_generate(config, weights, alone, {requests[i]})[0].tokens == first[i].tokens);
    }
    lt::Cache two(CacheGeometry::of(config), 2, 24);
    const auto squeezed = run_generate(config, weights, two, requests);
    for (std::size_t i = 0; i < requests.size(); ++i) CHECK(squeezed[i].tokens == first[i].tokens);
    // A different seed gives a different sample (the seed is used).
    auto reseeded = requests;
    reseeded[0].seed = 99;
    lt::Cache c3(CacheGeometry::of(config), 4, 24);
    CHECK(run_generate(config, weights, c3, reseeded)[0].tokens != first[0].tokens);
  }
}

TEST_CASE("greedy generation continues the sequence the model predicts") {
  const auto config = lt::small_config(plans::lckv(8, warmup::Sandwich{2}), 4);
  const auto weights = lt::weights_for(config, 5);
  GenerationRequest r;
  r.prompt = lt::random_tokens(6, 128, 8);
  r.max_new_tokens = 8;
  lt::Cache cache(CacheGeometry::of(config), 1, 16);
  const auto out = run_generate(config, weights, cache, {r});
  // Recompute: each generated token is the argmax of the sequential forward over everything before it.
  std::vector<int> seqn = r.prompt;
  for (int t : out[0].tokens) {
    const auto want = lt::naive::lckv_sequential(config, weights, seqn).back();
    CHECK(t == static_cast<int>(std::max_element(want.begin(), want.end()) - want.begin()));
    seqn.push_back(t);
  }
  // EOS stops early and is included.
  r.eos = out[0].tokens[2];
  lt::Cache cache2(CacheGeometry::of(config), 1, 16);
  const auto stopped = run_generate(config, weights, cache2, {r});
  CHECK(stopped[0].stop == StopReason::Eos);
  CHECK(stopped[0].tokens.back() == *r.eos);
  CHECK(stopped[0].tokens.size() <= 3);
  CHECK(cache2.is_open(0) == false);
}

TEST_CASE("forward samples each chunk's last row when asked: the token sample_token picks from its logits") {
  const auto config = lt::small_config(plans::lckv(8, warmup::Sandwich{2}), 4);
  const auto weights = lt::weights_for(config, 5, 0.3f);
  // Chunks of different lengths (prefill, then one decode token each), per-chunk parameters,
  // greedy among them.
  const std::vector<SamplingParams> params{{0.8f, 20, 0.9f}, {0.8f, 20, 0.9f}, {}, {1.3f, 0, 0.7f}};
  const std::vector<double> u{0.13, 0.71, 0.5, 0.999};
  const std::vector<std::vector<int>> prompts{lt::random_tokens(5, 128, 1), lt::random_tokens(9, 128, 2),
                                              lt::random_tokens(1, 128, 3), lt::random_tokens(3, 128, 4)};
  lt::Model model(config, weights.view());
  lt::Cache with_logits(CacheGeometry::of(config), 4, 16), sampled(CacheGeometry::of(config), 4, 16);
  for (int step = 0; step < 2; ++step) {
    CAPTURE(step);
    std::vector<SequenceChunk> a, b;
    std::vector<int> next(4);
    for (int c = 0; c < 4; ++c) {
      if (step == 0) {
        a.push_back({with_logits.open(), prompts[static_cast<std::size_t>(c)]});
        b.push_back({sampled.open(), prompts[static_cast<std::size_t>(c)]});
      } else {
        next[static_cast<std::size_t>(c)] = (7 * c + 3) % 128;
        a.push_back({c, std::span<const int>(&next[static_cast<std::size_t>(c)], 1)});
        b.push_back({c, std::span<const int>(&next[static_cast<std::size_t>(c)], 1)});
      }
    }
    const Logits logits = model.forward(a, with_logits);
    const Logits tokens = model.forward(b, sampled, {}, {params, u});
    CHECK(tokens.data.size() == 0);
    REQUIRE(tokens.tokens.size() == 4);
    for (int c = 0; c < 4; ++c)
      CHECK(tokens.tokens[static_cast<std::size_t>(c)] ==
            sample_token(logits.last(c), params[static_cast<std::size_t>(c)], u[static_cast<std::size_t>(c)]));
  }
  // Bad requests name the problem and change no sequence.
  const int token = 5;
  const SequenceChunk one[] = {{0, std::span<const int>(&token, 1)}};
  const int before = sampled.length(0);
  CHECK_THROWS_WITH_AS(model.forward(one, sampled, {}, {params, u}),
                       doctest::Contains("one parameter set and one uniform per chunk: 1 chunks, 4 parameter sets"),
                       InvalidArgument);
  const double bad_u[] = {1.0};
  CHECK_THROWS_WITH_AS(model.forward(one, sampled, {}, {std::span(params).first(1), bad_u}),
                       doctest::Contains("uniform is 1.000000, expected a value in [0, 1)"), InvalidArgument);
  CHECK_THROWS_WITH_AS(model.forward(one, sampled, {PrefillMode::Auto, true}, {std::span(params).first(1), std::span(u).first(1)}),
                       doctest::Contains("all_logits"), InvalidArgument);
  CHECK(sampled.length(0) == before);
}

TEST_CASE("sequences ending at different steps free their cache") {
  const auto config = lt::small_config(plans::lckv(8, warmup::Sandwich{2}), 4);
  const auto weights = lt::weights_for(config, 5, 0.2f);
  const auto requests = sample_requests();  // they end after 4, 7, 9, 12 new tokens
  Paged cache(CacheGeometry::of(config), 4, 24, 24, 4);
  PagedModel model(config, weights.view());
  std::vector<int> free_after_step;
  GenerateOptions opt;
  opt.on_progress = [&](long, long) { free_after_step.push_back(cache.free_pages()); };
  GenerationStats stats;
  const auto results = generate(model, cache, requests, opt, &stats);
  CHECK(cache.free_pages() == cache.num_pages());
  for (int s = 0; s < 4; ++s) CHECK_FALSE(cache.is_open(s));
  // Pages come back one request at a time, in the order the requests end, and never go out again.
  REQUIRE(free_after_step.size() >= 3);
  int held_all = 0;
  for (const auto& r : requests) held_all += pages_for(static_cast<int>(r.prompt.size()) + r.max_new_tokens - 1, 4);
  CHECK(free_after_step.front() == cache.num_pages() - held_all);
  int rises = 0;
  for (std::size_t i = 1; i < free_after_step.size(); ++i) {
    CHECK(free_after_step[i] >= free_after_step[i - 1]);
    rises += free_after_step[i] > free_after_step[i - 1];
  }
  CHECK(rises == 4);  // one per request
  CHECK(stats.peak_batch == 4);
  CHECK(stats.generated_tokens == 4 + 7 + 9 + 12);
  // Same tokens as with a contiguous cache.
  lt::Cache contiguous(CacheGeometry::of(config), 4, 24);
  const auto want = run_generate(config, weights, contiguous, requests);
  for (std::size_t i = 0; i < requests.size(); ++i) CHECK(results[i].tokens == want[i].tokens);
}

TEST_CASE("bad input: token id out of range, prompt longer than the cache, bad chunks") {
  const auto config = lt::small_config(plans::lckv(8, warmup::Sandwich{2}), 4);
  const auto weights = lt::weights_for(config, 5, 0.2f);
  lt::Model model(config, weights.view());
  const auto history = lt::random_tokens(10, 128, 1), next = lt::random_tokens(3, 128, 2);

  // Reference: sequence A with its history, then continued, with no failed call in between.
  lt::Cache ref(CacheGeometry::of(config), 2, 16);
  int ref_seq = 0;
  (void)lt::prefill_rows(model, ref, history, PrefillMode::Auto, &ref_seq);
  const Rows want = lt::decode_rows(model, ref, ref_seq, next);

  lt::Cache cache(CacheGeometry::of(config), 3, 16);
  int a = 0;
  (void)lt::prefill_rows(model, cache, history, PrefillMode::Auto, &a);
  const int b = cache.open();
  const auto before = snapshot(cache, a, 10);

  auto expect_intact = [&] {
    CHECK(cache.length(a) == 10);
    CHECK(cache.length(b) == 0);
    CHECK(snapshot(cache, a, 10) == before);
  };
  auto fails = [&](std::vector<SequenceChunk> chunks, const char* needle, auto exception_tag) {
    using E = decltype(exception_tag);
    std::string message;
    try {
      (void)model.forward(chunks, cache);
    } catch (const E& e) {
      message = e.what();
    }
    INFO("message: ", message);
    CHECK(message.find(needle) != std::string::npos);
    expect_intact();
  };

  const std::vector<int> bad_id{5, 128}, negative{-1}, too_long = lt::random_tokens(17, 128, 3);
  fails({{a, next}, {b, bad_id}}, "token 1 has id 128, expected an id in [0, 128)", InvalidArgument{""});
  fails({{b, negative}, {a, next}}, "has id -1", InvalidArgument{""});
  fails({{a, next}, {b, too_long}}, "needs 17 positions, the cache holds 16", OutOfCapacity{""});
  const auto seven = lt::random_tokens(7, 128, 4);
  fails({{b, next}, {a, seven}}, "sequence 0 needs 17 positions", OutOfCapacity{""});  // a: 10 + 7 > 16
  fails({{a, next}, {a, next}}, "appears twice", InvalidArgument{""});
  fails({{a, next}, {2, next}}, "is not an open cache sequence", InvalidArgument{""});
  fails({{a, {}}}, "has no tokens", InvalidArgument{""});
  fails({}, "no sequence chunks", InvalidArgument{""});

  // Continuing A gives the same logits as if nothing had failed.
  CHECK(lt::max_abs_diff_rows(lt::decode_rows(model, cache, a, next), want) == 0.0);
}

TEST_CASE("bad input on a paged cache returns the pages taken for the other chunks") {
  const auto config = lt::small_config(plans::cla(8, 2), 4);
  const auto weights = lt::weights_for(config, 5, 0.2f);
  Paged cache(CacheGeometry::of(config), 3, 32, 10, 4);
  PagedModel model(config, weights.view());
  const int a = cache.open(), b = cache.open();
  const auto ta = lt::random_tokens(6, 128, 1), tb = lt::random_tokens(29, 128, 2);
  SequenceChunk first{a, ta};
  (void)model.forward({&first, 1}, cache);
  REQUIRE(cache.pages_held(a) == 2);
  // a grows by 6 (one more page), then b needs 8 pages of the 7 left: fails; a's new page goes back.
  const auto more = lt::random_tokens(6, 128, 3);
  SequenceChunk both[] = {{a, more}, {b, tb}};
  CHECK_THROWS_AS(model.forward(both, cache), OutOfCapacity);
  CHECK(cache.pages_held(a) == 2);
  CHECK(cache.pages_held(b) == 0);
  CHECK(cache.free_pages() == 8);
  CHECK(cache.length(a) == 6);
}

TEST_CASE("bad input to generate: clear errors before any sequence is opened") {
  const auto config = lt::small_config(plans::pure_top(4), 4);
  const auto weights = lt::weights_for(config);
  lt::Model model(config, weights.view());
  lt::Cache cache(CacheGeometry::of(config), 2, 16);
  GenerationRequest r;
  r.prompt = lt::random_tokens(12, 128, 1);
  r.max_new_tokens = 6;  // 12 + 6 - 1 = 17 > 16
  CHECK_THROWS_WITH_AS(generate(model, cache, {r}), doctest::Contains("needs 17 cache positions, the cache holds 16"),
                       OutOfCapacity);
  r.max_new_tokens = 5;
  r.eos = 128;
  CHECK_THROWS_WITH_AS(generate(model, cache, {r}), doctest::Contains("eos id 128"), InvalidArgument);
  r.eos.reset();
  r.sampling.top_p = 0.0f;
  CHECK_THROWS_WITH_AS(generate(model, cache, {r}), doctest::Contains("top_p"), InvalidArgument);
  r.sampling = {};
  r.prompt = {};
  CHECK_THROWS_WITH_AS(generate(model, cache, {r}), doctest::Contains("empty prompt"), InvalidArgument);
  r.prompt = {1, 2, 300};
  CHECK_THROWS_WITH_AS(generate(model, cache, {r}), doctest::Contains("prompt token 2 has id 300"), InvalidArgument);
  CHECK_FALSE(cache.is_open(0));
  CHECK_FALSE(cache.is_open(1));
}

TEST_CASE("bad input: batch beyond the budget, too many sequences, invalid plan") {
  const auto config = lt::small_config(plans::lckv(8, warmup::Sandwich{2}), 4);
  const CacheGeometry g = CacheGeometry::of(config);  // 3 KV layers x 2 x 2 x 16 x 4 = 768 bytes/token
  REQUIRE(g.bytes_per_token() == 768);
  CHECK(max_batch_for_budget(g, 100, 768 * 100 * 5) == 5);
  CHECK_NOTHROW(require_batch_fits(g, 5, 100, 768 * 100 * 5));
  CHECK_THROWS_WITH_AS(require_batch_fits(g, 6, 100, 768 * 100 * 5),
                       doctest::Contains("holds at most batch 5"), OutOfCapacity);

  // Opening more sequences than the cache has: OutOfCapacity, the open ones unchanged.
  const auto weights = lt::weights_for(config);
  lt::Model model(config, weights.view());
  lt::Cache cache(CacheGeometry::of(config), 2, 8);
  int a = 0;
  (void)lt::prefill_rows(model, cache, {1, 2, 3}, PrefillMode::Auto, &a);
  (void)cache.open();
  CHECK_THROWS_WITH_AS(cache.open(), doctest::Contains("all 2 sequence slots are in use"), OutOfCapacity);
  CHECK(cache.length(a) == 3);

  // Invalid plans never reach a model.
  CHECK_THROWS_AS(configs::make(lt::small_shape(8), parse_layer_types("0_1_2")), PlanError);
  CHECK_THROWS_WITH_AS(parse_layer_types("0_1_9", 3), doctest::Contains("token 2 \"9\""), PlanError);
  ModelConfig bad = config;
  bad.plan = parse_layer_types("0_1_2_3");
  CHECK_THROWS_AS(lt::Model(bad, weights.view()), PlanError);
  // Weights of another model are refused.
  const auto other = lt::small_config(plans::standard(4));
  const auto other_weights = lt::weights_for(other);
  CHECK_THROWS_WITH_AS(lt::Model(config, other_weights.view()), doctest::Contains("weights have 4 layers"), InvalidArgument);
}
