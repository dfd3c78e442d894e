// Cache layouts (contiguous, paged, ring) give the same logits where their
// windows agree, and every layout allocates exactly what memory.hpp says.

#include "test_support.hpp"

using namespace lckv;
using lt::Rows;

namespace {

template <class C>
using ModelOn = Transformer<CpuBackend, C>;

/// Two sequences advanced in alternation: prompts, then decode steps, so a paged
/// cache interleaves their pages. Returns every logits row of both, in order.
template <class C>
Rows interleaved_run(const ModelConfig& config, const HostWeights& weights, C& cache, const std::vector<int>& a,
                     const std::vector<int>& b, int prompt_len) {
  ModelOn<C> model(config, weights.view());
  const int sa = cache.open(), sb = cache.open();
  Rows out;
  const std::vector<int> pa(a.begin(), a.begin() + prompt_len), pb(b.begin(), b.begin() + prompt_len / 2);
  SequenceChunk prompts[] = {{sa, pa}, {sb, pb}};
  for (auto& r : lt::to_rows(model.forward(prompts, cache, {PrefillMode::Auto, true}))) out.push_back(r);
  std::size_t ia = pa.size(), ib = pb.size();
  while (ia < a.size() || ib < b.size()) {
    std::vector<SequenceChunk> step;
    if (ia < a.size()) step.push_back({sa, std::span<const int>(&a[ia++], 1)});
    if (ib < b.size()) step.push_back({sb, std::span<const int>(&b[ib++], 1)});
    for (auto& r : lt::to_rows(model.forward(step, cache, {PrefillMode::Auto, true}))) out.push_back(r);
  }
  return out;
}

}  // namespace

TEST_CASE("paged cache with small pages equals the contiguous cache") {
  const auto a = lt::random_tokens(23, 128, 1), b = lt::random_tokens(17, 128, 2);
  for (const auto& named : lt::named_plans()) {
    const char* name = named.name;
    const LayerPlan& plan = named.plan;
    const auto config = lt::small_config(plan, 4);
    const auto weights = lt::weights_for(config, 3);
    const auto g = CacheGeometry::of(config);
    lt::Cache contiguous(g, 2, 24);
    const Rows want = interleaved_run(config, weights, contiguous, a, b, 12);
    for (int page_size : {1, 3, 8}) {
      PagedCache<float> paged(g, 2, 24, 2 * pages_for(24, page_size), page_size);
      const Rows got = interleaved_run(config, weights, paged, a, b, 12);
      INFO(std::string(name), " page_size ", page_size);
      CHECK(lt::max_abs_diff_rows(got, want) < 1e-5);
      CHECK(paged.free_pages() == paged.num_pages() - pages_for(23, page_size) - pages_for(17, page_size));
    }
  }
}

TEST_CASE("ring cache equals the contiguous cache for YOCO and sink + window") {
  const auto a = lt::random_tokens(30, 128, 5), b = lt::random_tokens(26, 128, 6);
  struct Case {
    const char* name;
    LayerPlan plan;
    int window, sink;
  };
  const Case cases[] = {
      {"yoco window 4", plans::yoco(8), 4, 0},
      {"yoco window 3 sink 2", plans::yoco(8), 3, 2},
      {"mix_attention window 5", plans::mix_attention(8), 5, 0},
      {"cyclic ring slot 1s_1s_2_3", parse_layer_types("1s_1s_2_3"), 4, 0},
  };
  for (const auto& c : cases) {
    auto config = lt::small_config(c.plan, c.window);
    config.attention.sink = c.sink;
    const auto weights = lt::weights_for(config, 9);
    lt::Cache contiguous(CacheGeometry::of(config), 2, 30);
    const Rows want = interleaved_run(config, weights, contiguous, a, b, 20);
    for (int chunk : {1, 4, 20}) {
      RingCache<float> ring(config, 2, 30, chunk);
      // The windowed slots really are rings, smaller than the sequence.
      bool any_ring = false;
      for (int s = 0; s < ring.num_slots(); ++s) any_ring |= ring.is_ring(s);
      CHECK(any_ring);
      INFO(c.name, " chunk ", chunk);
      if (c.plan.any_attends_top() && chunk < 20) {
        // 20-token prompts: cyclic plans prefill sequentially when the ring chunk is small.
        auto seq_config = config;
        seq_config.use_sequential = true;
        lt::Cache contiguous_seq(CacheGeometry::of(config), 2, 30);
        const Rows want_seq = interleaved_run(seq_config, weights, contiguous_seq, a, b, 20);
        CHECK(lt::max_abs_diff_rows(interleaved_run(seq_config, weights, ring, a, b, 20), want_seq) < 1e-5);
        continue;
      }
      CHECK(lt::max_abs_diff_rows(interleaved_run(config, weights, ring, a, b, 20), want) < 1e-5);
    }
  }
  // The ring is what makes the difference: a window larger than the ring would read overwritten positions,
  // so the cache refuses iterative chunks longer than it was built for.
  auto config = lt::small_config(parse_layer_types("1s_1s_2_3"), 4);
  const auto weights = lt::weights_for(config, 9);
  RingCache<float> ring(config, 1, 30, 4);
  ModelOn<RingCache<float>> model(config, weights.view());
  const auto tokens = lt::random_tokens(12, 128, 1);
  SequenceChunk chunk{ring.open(), tokens};
  CHECK_THROWS_WITH_AS(model.forward({&chunk, 1}, ring, {PrefillMode::Iterative, false}),
                       doctest::Contains("at most 4 at once"), InvalidArgument);
  CHECK(ring.length(chunk.seq) == 0);
}

TEST_CASE("memory accounting equals the bytes allocated, for all three layouts") {
  for (const auto& named : lt::named_plans()) {
    const char* name = named.name;
    const LayerPlan& plan = named.plan;
    auto config = lt::small_config(plan, 6);
    config.attention.sink = 2;
    INFO(std::string(name));
    const CacheGeometry g = CacheGeometry::of(config);
    // Written out: KV layers x 2 (K and V) x kv_heads x head_dim x 4 bytes.
    const std::size_t per_token = static_cast<std::size_t>(plan.num_kv_layers()) * 2 * 2 * 16 * 4;
    CHECK(g.bytes_per_token() == per_token);
    CHECK(kv_bytes_per_token(config, 4) == per_token);
    CHECK(kv_bytes_per_token(config, 2) == per_token / 2);

    lt::Cache contiguous(g, 3, 50);
    CHECK(contiguous.allocated_bytes() == contiguous_cache_bytes(g, 3, 50));
    CHECK(contiguous.allocated_bytes() == per_token * 3 * 50);
    CHECK(lt::Cache::bytes_required(g, 3, 50) == contiguous.allocated_bytes());

    PagedCache<float> paged(g, 3, 50, 17, 8);
    CHECK(paged.allocated_bytes() == paged_cache_bytes(g, 17, 8));
    CHECK(paged.allocated_bytes() == per_token * 17 * 8);

    RingCache<float> ring(config, 3, 50, 4);
    CHECK(ring.allocated_bytes() == ring_cache_bytes(config, 4, 3, 50, 4));
    // Written out: ring slots keep sink + window + chunk - 1 = 2 + 6 + 3 = 11 positions, others 50.
    std::size_t positions = 0;
    for (int s = 0; s < plan.num_kv_layers(); ++s) positions += plan.only_windowed_readers(plan.layer_of_slot(s)) ? 11 : 50;
    CHECK(ring.allocated_bytes() == positions * (per_token / static_cast<std::size_t>(plan.num_kv_layers())) * 3);
  }
  // YOCO, 8 layers, window 6, sink 2, chunk 4: 3 ring slots of 11 positions + 1 full slot of 50.
  auto y = lt::small_config(plans::yoco(8), 6);
  y.attention.sink = 2;
  CHECK(ring_cache_bytes(y, 4, 1, 50, 4) == (3 * 11 + 50) * 2 * 2 * 16 * 4);
  CHECK(ring_cache_bytes(y, 4, 1, 5, 4) == 4 * 5 * 2 * 2 * 16 * 4);  // rings never exceed max_length
  CHECK(pages_for(0, 8) == 0);
  CHECK(pages_for(8, 8) == 1);
  CHECK(pages_for(9, 8) == 2);
}

TEST_CASE("KV bytes per token: DESIGN.md §5's TinyLlama and Llama-7B figures") {
  const auto tiny = configs::tinyllama_1b_shape();
  CHECK(kv_bytes_per_token(configs::make(tiny, plans::standard(22)), 2) == 22 * 1024);
  CHECK(kv_bytes_per_token(configs::make(tiny, plans::lckv(22, warmup::Sandwich{2})), 2) == 3 * 1024);
  CHECK(kv_bytes_per_token(configs::make(tiny, plans::pure_top(22)), 2) == 1024);
  const auto llama7b = configs::llama2_7b_shape();
  CHECK(kv_bytes_per_token(configs::make(llama7b, plans::standard(32)), 2) == 512 * 1024);
  CHECK(kv_bytes_per_token(configs::make(llama7b, plans::lckv(32, warmup::Sandwich{2})), 2) == 48 * 1024);
  // llama_tiny (the built-in shape): 8 layers x 2 x 4 x 64 x 4 bytes fp32 = 16 KiB standard.
  CHECK(kv_bytes_per_token(configs::make(configs::llama_tiny_shape(), plans::standard(8)), 4) == 16 * 1024);
}

TEST_CASE("largest batch for a budget") {
  const auto config = configs::make(configs::tinyllama_1b_shape(), plans::standard(22));
  const CacheGeometry g = CacheGeometry::of(config, 2);
  const std::size_t per_seq = 22 * 1024 * 2048;  // 22 KiB/token x 2048 positions
  CHECK(max_batch_for_budget(g, 2048, 10 * per_seq) == 10);
  CHECK(max_batch_for_budget(g, 2048, 10 * per_seq - 1) == 9);
  CHECK(max_batch_for_budget(g, 2048, per_seq - 1) == 0);
  // LCKV w=2 fits 22/3 times as many sequences.
  const CacheGeometry g2 = CacheGeometry::of(configs::make(configs::tinyllama_1b_shape(), plans::lckv(22, warmup::Sandwich{2})), 2);
  CHECK(max_batch_for_budget(g2, 2048, 10 * per_seq) == 73);
  CHECK_NOTHROW(require_batch_fits(g, 10, 2048, 10 * per_seq));
}

TEST_CASE("paged cache: pages follow the tokens held and return when a sequence ends") {
  const auto config = lt::small_config(plans::lckv(8, warmup::Sandwich{2}), 4);
  const auto weights = lt::weights_for(config);
  PagedCache<float> cache(CacheGeometry::of(config), 3, 40, 12, 4);
  ModelOn<PagedCache<float>> model(config, weights.view());
  const int a = cache.open(), b = cache.open();
  const auto ta = lt::random_tokens(9, 128, 1), tb = lt::random_tokens(4, 128, 2);
  SequenceChunk chunks[] = {{a, ta}, {b, tb}};
  (void)model.forward(chunks, cache);
  CHECK(cache.pages_held(a) == 3);
  CHECK(cache.pages_held(b) == 1);
  CHECK(cache.free_pages() == 8);
  cache.truncate(a, 4);
  CHECK(cache.length(a) == 4);
  CHECK(cache.pages_held(a) == 1);
  CHECK(cache.free_pages() == 10);
  cache.close(a);
  cache.close(b);
  CHECK(cache.free_pages() == 12);
  // The pool is exhausted before the sequence limit: a clear error, nothing taken.
  const int c = cache.open();
  const auto long_prompt = lt::random_tokens(40, 128, 3);
  SequenceChunk big{c, std::span<const int>(long_prompt.data(), 40)};
  const int d = cache.open();
  SequenceChunk small{d, std::span<const int>(long_prompt.data(), 30)};
  (void)model.forward({&small, 1}, cache);
  CHECK(cache.free_pages() == 12 - 8);
  CHECK_THROWS_WITH_AS(model.forward({&big, 1}, cache), doctest::Contains("more pages"), OutOfCapacity);
  CHECK(cache.free_pages() == 4);
  CHECK(cache.length(c) == 0);
  CHECK(cache.length(d) == 30);
}
