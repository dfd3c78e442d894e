// `lckv generate`: generation from a prompt on a checkpoint directory (--model,
// text through its tokenizer.model or token ids) or on the built-in model (random
// weights, any layer plan), with greedy / temperature / top-k / top-p sampling
// from a seeded stream.

#include <nlohmann/json.hpp>
#include <optional>

#include "cli_common.hpp"
#ifdef LCKV_WITH_CUDA
#include "cuda_runner.hpp"
#endif
#include "lckv/io/checkpoint.hpp"
#include "lckv/io/tokenizer.hpp"

namespace lckv::cli {
namespace {

/// The checkpoint's tokenizer when it has one and this build reads them.
std::optional<Tokenizer> load_tokenizer(const std::optional<LoadedModel>& m) {
  if (!m || !m->tokenizer_model || !kHaveTokenizer) return std::nullopt;
  return Tokenizer(*m->tokenizer_model, m->config().shape.vocab_size);
}

struct GenerateCommand {
  PlanOptions plan;
  std::string shape = "llama-tiny";
  std::string device = "cpu";
  std::string dtype = "fp32";
  std::string prompt_ids;
  std::string prompt_text;
  std::string model_dir;
  std::string prefill = "auto";
  int max_new = 32;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  int eos = -1;
  std::uint64_t seed = 0;
  std::uint64_t weights_seed = 1;
  bool json = false;

  GenerationResult run_generation(const ModelConfig& config, const HostWeights& weights, const GenerationRequest& request,
                                  const GenerateOptions& options, GenerationStats& stats) const {
#ifdef LCKV_WITH_CUDA
    if (device == "cuda") return cuda_generate(config, weights, {request}, options, &stats, dtype).front();
#endif
    const int length = static_cast<int>(request.prompt.size()) + request.max_new_tokens;
    ContiguousCache<float> cache(CacheGeometry::of(config), 1, length);
    Transformer<CpuBackend, ContiguousCache<float>> model(config, weights.view());
    return generate(model, cache, {request}, options, &stats).front();
  }

  void run() const {
    require_device(device);
    if (device == "cpu" && dtype != "fp32")
      throw CLI::ValidationError("--dtype", dtype + " needs --device cuda; the CPU backend computes in fp32");
    if (prompt_ids.empty() == prompt_text.empty())
      throw CLI::ValidationError("--prompt/--prompt-ids", "give exactly one, e.g. --prompt-ids 1,15043,3186");
    if (!prompt_text.empty() && model_dir.empty())
      throw CLI::ValidationError("--prompt", "text needs --model DIR with a tokenizer.model; the built-in model takes --prompt-ids");

    // The model: a checkpoint directory, or the built-in shape with random weights.
    std::optional<LoadedModel> loaded;
    std::optional<HostWeights> random;
    if (!model_dir.empty()) loaded.emplace(load_model_dir(model_dir));
    else {
      const ModelShape s = shape_by_name(shape);
      random.emplace(HostWeights::random(configs::make(s, make_plan(plan, s.num_layers)), weights_seed));
    }
    const HostWeights& weights = loaded ? loaded->weights : *random;
    const ModelConfig& config = weights.config();
    const std::optional<Tokenizer> tokenizer = load_tokenizer(loaded);
    if (!prompt_text.empty() && !tokenizer)
      throw CLI::ValidationError("--prompt", model_dir + " has no tokenizer.model (or lckv was built without SentencePiece); use --prompt-ids");

    GenerationRequest request;
    request.prompt = prompt_text.empty() ? parse_ids(prompt_ids, "--prompt-ids") : tokenizer->encode(prompt_text);
    request.max_new_tokens = max_new;
    request.sampling = {temperature, top_k, top_p};
    if (eos >= 0) request.eos = eos;
    else if (loaded && loaded->meta.eos_token_id) request.eos = *loaded->meta.eos_token_id;
    request.seed = seed;

    Progress progress("generating", max_new);
    GenerateOptions options;
    options.prefill = parse_prefill_mode(prefill);
    options.on_progress = [&](long done, long) { progress.update(done); };
    GenerationStats stats;
    const GenerationResult result = run_generation(config, weights, request, options, stats);

    if (json) {
      nlohmann::json j;
      j["layer_types"] = config.plan.to_string();
      j["prompt_ids"] = request.prompt;
      j["generated_ids"] = result.tokens;
      if (tokenizer) j["generated_text"] = tokenizer->decode(result.tokens);
      j["stop"] = result.stop == StopReason::Eos ? "eos" : "length";
      j["prefill_mode"] = to_string(result.prefill_mode);
      j["device"] = device;
      j["dtype"] = dtype;
      j["prefill_ms"] = stats.prefill_seconds * 1e3;
      j["decode_seconds"] = stats.decode_seconds;
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    if (tokenizer) std::printf("%s%s\n", prompt_text.c_str(), tokenizer->decode(result.tokens).c_str());
    else {
      for (std::size_t i = 0; i < result.tokens.size(); ++i) std::printf(i ? ",%d" : "%d", result.tokens[i]);
      std::printf("\n");
    }
    std::fprintf(stderr, "%zu tokens, stopped on %s; prompt computed %s in %.1f ms\n", result.tokens.size(),
                 result.stop == StopReason::Eos ? "EOS" : "length", to_string(result.prefill_mode),
                 stats.prefill_seconds * 1e3);
  }
};

}  // namespace

void add_generate_command(CLI::App& app) {
  auto state = std::make_shared<GenerateCommand>();
  auto& o = *state;
  CLI::App* cmd = app.add_subcommand("generate", "generate from a prompt on a checkpoint (--model) or the built-in model");
  add_plan_options(*cmd, o.plan);
  cmd->add_option("--shape", o.shape, "built-in model shape")->check(CLI::IsMember(shape_names()));
  cmd->add_option("--device", o.device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--dtype", o.dtype, "weights and KV: fp32 | bf16 (bf16 on CUDA only)")->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_option("--model", o.model_dir, "checkpoint directory (config.json, *.safetensors, tokenizer.model)");
  cmd->add_option("--prompt", o.prompt_text, "prompt text (needs --model with a tokenizer.model)");
  cmd->add_option("--prompt-ids", o.prompt_ids, "comma-separated token ids, e.g. 1,15043,3186");
  cmd->add_option("--max-new", o.max_new, "tokens to generate")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", o.temperature, "0: greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", o.top_k, "0: no top-k cut")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o.top_p, "nucleus probability in (0, 1]")->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--eos", o.eos, "stop after this token id");
  cmd->add_option("--seed", o.seed, "sampling seed");
  cmd->add_option("--weights-seed", o.weights_seed, "random weights seed");
  cmd->add_option("--prefill", o.prefill, "auto | sequential | iterative")
      ->check(CLI::IsMember({"auto", "sequential", "iterative"}));
  cmd->add_flag("--json", o.json, "machine-readable output");
  cmd->callback([state] { state->run(); });
}

}  // namespace lckv::cli
