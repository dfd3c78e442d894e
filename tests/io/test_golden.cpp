// Golden tests: lckv loads checkpoints written by HF transformers' save_pretrained
// (and by an independent PyTorch reference of the LCKV semantics) and must
// reproduce the logits they recorded within 1e-4 relative, and their greedy
// tokens exactly. Fixtures: tests/golden/fixtures and tests/golden/fixtures_cuda, made by
// tests/golden/make_golden.py.

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <utility>

#include "../golden/golden_support.hpp"

using namespace lckv;
using namespace lckv::golden;
using Cache = ContiguousCache<float>;
using Model = Transformer<CpuBackend, Cache>;

namespace {

constexpr double kRelTol = 1e-4;

void run_logits_check(const LoadedModel& m, const json& check, const SafetensorsFile& golden, double tol) {
  const ModelConfig config = config_for(m, check);
  const std::vector<int> tokens = check.at("tokens").get<std::vector<int>>();
  const std::vector<float> want = golden.to_f32(golden.at(check.at("logits").get<std::string>()));
  Cache cache(CacheGeometry::of(config), 1, 64);
  Model model(config, m.weights.view());
  const int seq = cache.open();
  const SequenceChunk chunk{seq, tokens};
  const Logits out = model.forward({&chunk, 1}, cache, {mode_of(check), true});
  if (mode_is_checked(config, check)) CHECK(out.mode_used[0] == mode_of(check));
  const Diff d = compare(out.data.span(), want, out.vocab);
  INFO("max relative error " << d.rel << " at row " << d.worst_row << ", token id " << d.worst_col);
  CHECK(d.rel <= tol);
  CHECK(argmax_mismatches(out.data.span(), want, out.vocab) == 0);  // the greedy choice at every position
}

void run_greedy_check(const LoadedModel& m, const json& check, const SafetensorsFile& golden, double tol) {
  const ModelConfig config = config_for(m, check);
  const std::vector<int> prompt = check.at("prompt").get<std::vector<int>>();
  const std::vector<int> expect = check.at("new_tokens").get<std::vector<int>>();
  const std::vector<float> want = golden.to_f32(golden.at(check.at("logits").get<std::string>()));
  const int vocab = config.shape.vocab_size;
  const PrefillMode mode = mode_of(check);

  // Step by step: the logits of the prompt's last token, then of every decoded token.
  {
    Cache cache(CacheGeometry::of(config), 1, 64);
    Model model(config, m.weights.view());
    const int seq = cache.open();
    std::vector<float> got;
    SequenceChunk chunk{seq, prompt};
    Logits out = model.forward({&chunk, 1}, cache, {mode, false});
    if (mode_is_checked(config, check)) CHECK(out.mode_used[0] == mode);
    for (std::size_t k = 0; k < expect.size(); ++k) {
      got.insert(got.end(), out.last(0).begin(), out.last(0).end());
      if (k + 1 == expect.size()) break;
      chunk = {seq, std::span<const int>(&expect[k], 1)};  // follow the reference's tokens
      out = model.forward({&chunk, 1}, cache, {PrefillMode::Auto, false});
    }
    const Diff d = compare(got, want, vocab);
    INFO("decode logits: max relative error " << d.rel << " at step " << d.worst_row << ", token id " << d.worst_col);
    CHECK(d.rel <= tol);
  }
  // Through the generator, as a user runs it: the tokens must be the reference's exactly.
  Cache cache(CacheGeometry::of(config), 1, 64);
  Model model(config, m.weights.view());
  GenerationRequest request;
  request.prompt = prompt;
  request.max_new_tokens = static_cast<int>(expect.size());
  GenerateOptions options;
  options.prefill = mode;
  const auto results = generate(model, cache, {request}, options);
  CHECK(results[0].tokens == expect);
  if (mode_is_checked(config, check)) CHECK(results[0].prefill_mode == mode);
}

/// Every check of every case in a fixture directory; returns {cases, checks}.
std::pair<int, int> run_fixture_set(const std::filesystem::path& root) {
  const auto counts = for_each_check(root, [](const LoadedModel& m, const json& check, const SafetensorsFile& golden) {
    if (check.at("kind") == "logits") run_logits_check(m, check, golden, kRelTol);
    else run_greedy_check(m, check, golden, kRelTol);
  });
  MESSAGE(counts.second << " golden checks over " << counts.first << " fixtures in " << root);
  return counts;
}

}  // namespace

TEST_CASE("golden: HF transformers and the LCKV reference, logits within 1e-4 and greedy tokens exact") {
  const auto [cases, checks] = run_fixture_set(LCKV_GOLDEN_DIR);
  CHECK(cases >= 9);
  CHECK(checks >= 20);
  // The CUDA tests' fixtures (head_dim 64 / 128) hold on the CPU too.
  const auto [cuda_cases, cuda_checks] = run_fixture_set(LCKV_GOLDEN_CUDA_DIR);
  CHECK(cuda_cases >= 4);
  CHECK(cuda_checks >= 10);
}

TEST_CASE("golden: fixtures exercise what they claim") {
  const std::filesystem::path root = LCKV_GOLDEN_DIR;
  // Sharded HF save, BF16 / F16 storage, v5 config form, explicit head_dim, lckv-llama v4 form.
  CHECK(std::filesystem::exists(root / "hf_gqa_theta_sharded" / "model.safetensors.index.json"));
  CHECK(SafetensorsFile(root / "hf_bf16" / "model.safetensors").at("model.norm.weight").dtype == Dtype::BF16);
  CHECK(SafetensorsFile(root / "hf_f16" / "model.safetensors").at("model.norm.weight").dtype == Dtype::F16);
  const ConfigJson gqa = load_config_json(root / "hf_gqa_theta_sharded" / "config.json");
  CHECK(gqa.form == ConfigForm::V5);
  CHECK(gqa.config.shape.rope_theta == 500000.0f);
  CHECK(gqa.config.shape.num_kv_heads == 2);
  CHECK(load_config_json(root / "hf_head_dim" / "config.json").config.shape.head_dim == 16);
  CHECK(load_config_json(root / "hf_tied_mha" / "config.json").config.shape.tie_word_embeddings);
  const ConfigJson w2 = load_config_json(root / "lckv_w2" / "config.json");
  CHECK(w2.form == ConfigForm::V4);
  CHECK(w2.config.plan.to_string() == "0_2_2_3");
  CHECK_FALSE(SafetensorsFile(root / "lckv_w2" / "model.safetensors").find("model.layers.1.self_attn.k_proj.weight"));
  CHECK(load_config_json(root / "lckv_yoco" / "config.json").config.attention.sliding_window == 3);
  // The iterative fixture really is approximate (m + b < n), so matching it tests m and b.
  const json g = read_case(root / "lckv_w2");
  CHECK(g.at("iterative_vs_sequential_max_abs_diff").get<double>() > 1e-3);
}

// Writes models with lckv's own writer for make_golden.py --check-lckv to load in HF
// transformers. Runs only when LCKV_WRITE_FOR_HF names the output directory.
TEST_CASE("golden: write lckv-saved models for the HF load check" * doctest::skip(std::getenv("LCKV_WRITE_FOR_HF") == nullptr)) {
  const std::filesystem::path out = std::getenv("LCKV_WRITE_FOR_HF");
  struct Spec {
    const char* name;
    const char* layer_types;
    bool tied;
    Dtype dtype;
    std::uint64_t shard;
  };
  for (const Spec& s : {Spec{"llama_f32_sharded", "0_1_2", false, Dtype::F32, 40000},
                        Spec{"lckv_w2_bf16", "0_2_2_3", true, Dtype::BF16, 0}}) {
    ModelShape shape;
    shape.vocab_size = 256;
    shape.hidden_size = 32;
    shape.intermediate_size = 64;
    shape.num_heads = 4;
    shape.num_kv_heads = 2;
    shape.head_dim = 8;
    shape.rope_theta = 500000.0f;
    shape.tie_word_embeddings = s.tied;
    const LayerPlan plan = parse_layer_types(s.layer_types);
    shape.num_layers = plan.num_layers();
    const ModelConfig config = configs::make(shape, plan);
    const HostWeights w = HostWeights::random(config, 77, 0.15f);
    const auto dir = out / s.name;
    save_model_dir(dir, w, {}, SaveOptions{s.dtype, s.shard});
    const LoadedModel m = load_model_dir(dir);  // logits of the weights as stored (BF16-rounded)
    std::vector<int> tokens{5, 17, 200, 3, 99, 42, 42, 7, 128, 64};
    Cache cache(CacheGeometry::of(m.config()), 1, 64);
    Model model(m.config(), m.weights.view());
    const SequenceChunk chunk{cache.open(), tokens};
    const Logits logits = model.forward({&chunk, 1}, cache, {PrefillMode::Sequential, true});
    json rec;
    rec["tokens"] = tokens;
    rec["logits"] = std::vector<float>(logits.data.span().begin(), logits.data.span().end());
    rec["prefill"] = "sequential";
    std::ofstream(dir / "lckv_logits.json") << rec.dump();
  }
}
