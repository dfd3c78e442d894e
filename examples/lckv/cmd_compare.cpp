// `lckv compare`: the main demo. One built-in model shape with random weights
// (fixed seed), run as standard, LCKV w=2, LCKV w=0, CLA g=2 and YOCO: KV layers,
// KV bytes per token, cache size, prefill time, decode throughput, and a check
// that decoding agrees with a sequential forward over the same tokens.

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "compare_run.hpp"
#ifdef LCKV_WITH_CUDA
#include "cuda_runner.hpp"
#endif

namespace lckv::cli {
namespace {

struct Variant {
  std::string name;
  LayerPlan plan;
};

std::vector<Variant> default_variants(int L) {
  return {{"standard", plans::standard(L)},
          {"lckv-w2", plans::lckv(L, warmup::Sandwich{2})},
          {"lckv-w0", plans::pure_top(L)},
          {"cla-g2", plans::cla(L, 2)},
          {"yoco", plans::yoco(L)}};
}

struct Row {
  std::string variant, layer_types, cache;
  int kv_layers = 0;
  std::size_t kv_bytes_per_token = 0, cache_bytes = 0;
  double prefill_ms = 0, decode_tokens_per_s = 0, max_abs_delta_logit = 0;
  std::string prefill_mode;
};

struct CompareCommand {
  std::string shape = "llama-tiny";
  std::string device = "cpu";
  std::string cache = "ring";
  std::string dtype = "fp32";
  std::vector<std::string> variants;
  int batch = 4;
  int prompt_len = 32;
  int gen = 32;
  int window = 32;
  int check_tokens = 16;
  std::uint64_t seed = 1;
  bool json = false;

  template <class Cache>
  Row measure(const Variant& v, const ModelConfig& config, const HostWeights& weights, Cache& cache) const {
    Transformer<CpuBackend, Cache> model(config, weights.view());
    const std::vector<GenerationRequest> requests = compare_requests(config, batch, prompt_len, gen, seed);
    GenerationStats stats;
    Progress progress("  " + v.name, static_cast<long>(batch) * gen);
    GenerateOptions opts;
    opts.on_progress = [&](long done, long) { progress.update(done); };
    const auto results = generate(model, cache, requests, opts, &stats);

    Row row;
    row.variant = v.name;
    row.layer_types = config.plan.to_string();
    row.kv_layers = config.plan.num_kv_layers();
    row.kv_bytes_per_token = kv_bytes_per_token(config, sizeof(float));
    row.cache_bytes = cache.allocated_bytes();
    row.prefill_ms = stats.prefill_seconds * 1e3;
    const long decoded = stats.generated_tokens - batch;  // the first token of each request comes from prefill
    row.decode_tokens_per_s = stats.decode_seconds > 0 ? static_cast<double>(decoded) / stats.decode_seconds : 0;
    row.prefill_mode = to_string(results.front().prefill_mode);

    // Agreement: decode token by token through the cache vs one sequential forward.
    row.max_abs_delta_logit =
        decode_vs_sequential(model, cache, agreement_tokens(requests.front(), results.front(), check_tokens));
    return row;
  }

  Row run_variant(const Variant& v, const ModelShape& s) const {
    ModelConfig config = configs::make(s, v.plan);
    config.attention.sliding_window = window;
    const HostWeights weights = HostWeights::random(config, seed);
#ifdef LCKV_WITH_CUDA
    if (device == "cuda") {
      const CudaCompareRow r =
          cuda_compare(v.name, config, weights, cache, dtype, batch, prompt_len, gen, check_tokens, seed);
      Row row;
      row.variant = r.variant;
      row.layer_types = r.layer_types;
      row.cache = r.cache;
      row.kv_layers = r.kv_layers;
      row.kv_bytes_per_token = r.kv_bytes_per_token;
      row.cache_bytes = r.cache_bytes;
      row.prefill_ms = r.prefill_ms;
      row.decode_tokens_per_s = r.decode_tokens_per_s;
      row.max_abs_delta_logit = r.max_abs_delta_logit;
      row.prefill_mode = r.prefill_mode;
      return row;
    }
#endif
    const int max_length = prompt_len + gen + 1;  // the agreement check replays at most `gen` generated tokens
    const CacheGeometry g = CacheGeometry::of(config);
    Row row;
    if (cache == "contiguous") {
      ContiguousCache<float> c(g, batch + 1, max_length);
      row = measure(v, config, weights, c);
    } else if (cache == "paged") {
      const int page = 16;
      PagedCache<float> c(g, batch + 1, max_length, (batch + 1) * pages_for(max_length, page), page);
      row = measure(v, config, weights, c);
    } else {
      RingCache<float> c(config, batch + 1, max_length, prompt_len);
      row = measure(v, config, weights, c);
    }
    row.cache = cache;
    return row;
  }

  void run() const {
    require_device(device);
    if (device == "cpu" && dtype != "fp32")
      throw CLI::ValidationError("--dtype", dtype + " needs --device cuda; the CPU backend computes in fp32");
    const ModelShape s = shape_by_name(shape);
    std::vector<Variant> chosen;
    for (const auto& v : default_variants(s.num_layers))
      if (variants.empty() || std::find(variants.begin(), variants.end(), v.name) != variants.end()) chosen.push_back(v);
    if (!json)
      std::printf("lckv compare: %s shape (%d layers, hidden %d, %d/%d heads), random weights seed %llu, %s on %s\n"
                  "batch %d x (%d prompt + %d generated) tokens, %s cache, YOCO window %d\n\n",
                  shape.c_str(), s.num_layers, s.hidden_size, s.num_heads, s.num_kv_heads,
                  static_cast<unsigned long long>(seed), dtype.c_str(), device == "cuda" ? "CUDA" : "CPU", batch,
                  prompt_len, gen, cache.c_str(), window);
    std::vector<Row> rows;
    for (const auto& v : chosen) rows.push_back(run_variant(v, s));

    if (json) {
      nlohmann::json j;
      j["shape"] = shape;
      j["batch"] = batch;
      j["prompt_len"] = prompt_len;
      j["gen"] = gen;
      j["cache"] = cache;
      j["device"] = device;
      j["dtype"] = dtype;
      j["seed"] = seed;
      for (const auto& r : rows)
        j["variants"].push_back({{"variant", r.variant}, {"layer_types", r.layer_types}, {"kv_layers", r.kv_layers},
                                 {"kv_bytes_per_token", r.kv_bytes_per_token}, {"cache_bytes", r.cache_bytes},
                                 {"prefill_ms", r.prefill_ms}, {"prefill_mode", r.prefill_mode},
                                 {"decode_tokens_per_s", r.decode_tokens_per_s},
                                 {"max_abs_delta_logit", r.max_abs_delta_logit}});
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::vector<std::vector<std::string>> table;
    for (const auto& r : rows) {
      char delta[32];
      std::snprintf(delta, sizeof delta, "%.1e", r.max_abs_delta_logit);
      table.push_back({r.variant, std::to_string(r.kv_layers), fixed(static_cast<double>(r.kv_bytes_per_token) / 1024.0, 1),
                       fixed(static_cast<double>(r.cache_bytes) / (1024.0 * 1024.0), 2), fixed(r.prefill_ms, 1),
                       r.prefill_mode, fixed(r.decode_tokens_per_s, 1), delta});
    }
    std::printf("\n");
    print_table({"variant", "KV layers", "KV KiB/token", "cache MiB", "prefill ms", "prefill", "decode tok/s",
                 "max |dlogit| decode vs sequential"},
                table);
  }
};

}  // namespace

void add_compare_command(CLI::App& app) {
  auto state = std::make_shared<CompareCommand>();
  auto& o = *state;
  CLI::App* cmd = app.add_subcommand("compare", "run the built-in model as standard, LCKV, CLA and YOCO side by side");
  cmd->add_option("--shape", o.shape, "built-in model shape")->check(CLI::IsMember(shape_names()));
  cmd->add_option("--device", o.device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--cache", o.cache, "cache layout: ring (windowed layers keep only the window) | contiguous | paged")
      ->check(CLI::IsMember({"ring", "contiguous", "paged"}));
  cmd->add_option("--dtype", o.dtype, "weights and KV: fp32 | bf16 (bf16 on CUDA only)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_option("--variants", o.variants, "subset of: standard lckv-w2 lckv-w0 cla-g2 yoco")
      ->check(CLI::IsMember({"standard", "lckv-w2", "lckv-w0", "cla-g2", "yoco"}))
      ->delimiter(',');
  cmd->add_option("--batch", o.batch, "sequences generated together")->check(CLI::Range(1, 4096));
  cmd->add_option("--prompt-len", o.prompt_len, "prompt tokens per sequence")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--gen", o.gen, "tokens generated per sequence")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--window", o.window, "sliding window of YOCO's lower layers")->check(CLI::PositiveNumber);
  cmd->add_option("--check-tokens", o.check_tokens, "generated tokens included in the agreement check (at most --gen)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--seed", o.seed, "weights and prompts seed");
  cmd->add_flag("--json", o.json, "machine-readable output");
  cmd->callback([state] { state->run(); });
}

}  // namespace lckv::cli
