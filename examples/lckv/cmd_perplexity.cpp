// `lckv perplexity --model DIR (--text FILE | --tokens FILE) [--json] [--prefill MODE]`:
// perplexity of a text under a checkpoint, sliding a window of the model's
// context (max_position_embeddings) over it; --json gives every token's
// log-probability and which prefill (sequential, or m + b passes) produced it.

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "lckv/io/checkpoint.hpp"
#include "lckv/io/tokenizer.hpp"

namespace lckv::cli {

namespace {

struct PerplexityOptions {
  std::string model;
  std::string text_file;
  std::string tokens_file;
  bool json = false;
  std::string prefill = "auto";
  int context = 0;  // 0: max_position_embeddings
  int stride = 0;   // 0: context / 2
  bool no_bos = false;
};

std::string read_all(const std::string& path, const char* option) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CLI::ValidationError(option, "cannot open \"" + path + "\"");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int> load_tokens(const PerplexityOptions& o, const LoadedModel& m) {
  if (!o.tokens_file.empty()) return parse_ids(read_all(o.tokens_file, "--tokens"), "--tokens " + o.tokens_file);
  const std::string text = read_all(o.text_file, "--text");
  if (!m.tokenizer_model) throw CheckpointError(o.model + ": no tokenizer.model; give --tokens FILE of token ids instead");
#ifdef LCKV_HAVE_SENTENCEPIECE
  const Tokenizer tok(*m.tokenizer_model, m.config().shape.vocab_size);
  return tok.encode(text, !o.no_bos);
#else
  throw CLI::ValidationError("--text", "this lckv was built without SentencePiece (libsentencepiece-dev); give --tokens FILE");
#endif
}

double log_prob(std::span<const float> logits, int token) {
  double top = logits[0];
  for (float x : logits) top = std::max(top, static_cast<double>(x));
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - top);
  return static_cast<double>(logits[static_cast<std::size_t>(token)]) - top - std::log(sum);
}

void run_perplexity(const PerplexityOptions& o) {
  const PrefillMode requested = parse_prefill_mode(o.prefill);
  LoadedModel m = load_model_dir(o.model);
  const ModelConfig& config = m.config();
  const std::vector<int> tokens = load_tokens(o, m);
  if (tokens.size() < 2) throw CLI::ValidationError("--text/--tokens", "needs at least 2 tokens, got " + std::to_string(tokens.size()));
  const int n = static_cast<int>(tokens.size());
  const int context = o.context > 0 ? o.context : config.max_position_embeddings;
  if (context < 2) throw CLI::ValidationError("--context", std::to_string(context) + ", expected >= 2");
  const int stride = o.stride > 0 ? std::min(o.stride, context - 1) : std::max(1, context / 2);

  using Cache = ContiguousCache<float>;
  Cache cache(CacheGeometry::of(config), 1, context);
  Transformer<CpuBackend, Cache> model(config, m.weights.view());

  struct Window {
    int begin, end, scored_from;
    PrefillMode mode;
  };
  std::vector<Window> windows;
  std::vector<double> lp(static_cast<std::size_t>(n), std::nan(""));
  std::vector<int> window_of(static_cast<std::size_t>(n), -1);
  const long total_windows = n <= context ? 1 : 1 + (n - context + stride - 1) / stride;
  Progress progress("perplexity", total_windows);
  int scored_until = 1;  // tokens [1, scored_until) have a log-probability
  for (int begin = 0;; begin += stride) {
    const int end = std::min(begin + context, n);
    const int seq = cache.open();
    const SequenceChunk chunk{seq, std::span<const int>(tokens.data() + begin, static_cast<std::size_t>(end - begin))};
    const Logits logits = model.forward({&chunk, 1}, cache, {requested, true});
    cache.close(seq);
    const int w = static_cast<int>(windows.size());
    windows.push_back({begin, end, scored_until, logits.mode_used[0]});
    for (int t = scored_until; t < end; ++t) {
      lp[static_cast<std::size_t>(t)] = log_prob(logits.row(t - 1 - begin), tokens[static_cast<std::size_t>(t)]);
      window_of[static_cast<std::size_t>(t)] = w;
    }
    scored_until = end;
    progress.update(static_cast<long>(windows.size()));
    if (end == n) break;
  }

  double nll = 0;
  for (int t = 1; t < n; ++t) nll -= lp[static_cast<std::size_t>(t)];
  nll /= (n - 1);
  const double ppl = std::exp(nll);
  bool any_iterative = false, any_sequential = false;
  for (const auto& w : windows) (w.mode == PrefillMode::Iterative ? any_iterative : any_sequential) = true;
  const std::string prefill_used = any_iterative && any_sequential ? "mixed" : any_iterative ? "iterative" : "sequential";

  if (o.json) {
    nlohmann::json j;
    j["model"] = o.model;
    j["model_type"] = m.meta.model_type;
    j["layer_types"] = config.plan.to_string();
    j["tokens"] = n;
    j["scored_tokens"] = n - 1;
    j["mean_nll"] = nll;
    j["perplexity"] = ppl;
    j["context"] = context;
    j["stride"] = stride;
    j["prefill_requested"] = to_string(requested);
    j["prefill_used"] = prefill_used;
    j["forward_passes"] = config.passes.forward_passes;
    j["backward_passes"] = config.passes.backward_passes;
    j["cyclic"] = config.plan.any_attends_top();
    j["windows"] = nlohmann::json::array();
    for (const auto& w : windows)
      j["windows"].push_back({{"begin", w.begin}, {"end", w.end}, {"scored_from", w.scored_from}, {"prefill", to_string(w.mode)}});
    j["token_ids"] = tokens;
    nlohmann::json lps = nlohmann::json::array(), ws = nlohmann::json::array();
    for (int t = 0; t < n; ++t) {
      lps.push_back(t == 0 ? nlohmann::json(nullptr) : nlohmann::json(lp[static_cast<std::size_t>(t)]));
      ws.push_back(t == 0 ? nlohmann::json(nullptr) : nlohmann::json(window_of[static_cast<std::size_t>(t)]));
    }
    j["logprobs"] = lps;     // logprobs[t] = log p(token t | tokens of its window before t); null for t = 0
    j["token_window"] = ws;  // the window (and so the prefill) that scored token t
    std::cout << j.dump(1) << "\n";
    return;
  }
  std::printf("perplexity %.4f  (mean NLL %.5f nats over %d tokens)\n", ppl, nll, n - 1);
  std::printf("%zu window(s) of <= %d tokens, stride %d; prefill %s", windows.size(), context, stride, prefill_used.c_str());
  if (any_iterative && config.plan.any_attends_top())
    std::printf(" (m = %d, b = %d passes)", config.passes.forward_passes, config.passes.backward_passes);
  std::printf("\n");
}

}  // namespace

void add_perplexity_command(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity of a text under a checkpoint, sliding over the model's context");
  cmd->add_option("--model", o->model, "HF model directory (config.json + safetensors)")->required();
  auto* text = cmd->add_option("--text", o->text_file, "text file (needs tokenizer.model and SentencePiece)");
  auto* ids = cmd->add_option("--tokens", o->tokens_file, "file of token ids (whitespace or comma separated)");
  text->excludes(ids);
  cmd->add_flag("--json", o->json, "machine-readable output with per-token log-probabilities");
  cmd->add_option("--prefill", o->prefill, "auto | sequential | iterative")
      ->check(CLI::IsMember({"auto", "sequential", "iterative"}));
  cmd->add_option("--context", o->context, "window length (default: max_position_embeddings)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--stride", o->stride, "window step (default: context / 2)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-bos", o->no_bos, "do not prepend BOS to --text");
  cmd->callback([o, text, ids] {
    if (text->count() == 0 && ids->count() == 0) throw CLI::ValidationError("--text/--tokens", "give one of --text FILE or --tokens FILE");
    run_perplexity(*o);
  });
}

}  // namespace lckv::cli
