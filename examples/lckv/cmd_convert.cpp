// `lckv convert --from DIR --layer-types ... --out DIR`: a plain Llama checkpoint
// becomes an LCKV one the way the LCKV authors initialise from a pretrained
// model: the k/v projections of each KV-computing layer are the mean of those
// of all layers attending to it; every other weight is copied.

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli_common.hpp"
#include "lckv/io/checkpoint.hpp"
#include "lckv/io/convert.hpp"

namespace lckv::cli {

namespace {

struct ConvertOptions {
  std::string from;
  std::string out;
  PlanOptions plan;
  int forward_passes = 7;
  int backward_passes = 2;
  int sliding_window = 4096;
  bool use_sequential = false;
  bool force_nodiag = false;
  std::string dtype = "auto";
};

Dtype save_dtype(const std::string& option, const std::string& source_dtype) {
  const std::string d = option == "auto" ? source_dtype : option;
  if (d == "f32" || d == "fp32" || d == "float32") return Dtype::F32;
  if (d == "bf16" || d == "bfloat16") return Dtype::BF16;
  if (d == "f16" || d == "fp16" || d == "float16") return Dtype::F16;
  if (option == "auto") return Dtype::F32;  // an unusual source dtype: keep full precision
  throw CLI::ValidationError("--dtype", "\"" + option + "\", expected auto, f32, bf16 or f16");
}

void run_convert(const ConvertOptions& o) {
  const std::filesystem::path from(o.from), out(o.out);
  if (std::filesystem::exists(out) && std::filesystem::exists(from) && std::filesystem::equivalent(from, out))
    throw CLI::ValidationError("--out", "is the source directory; expected a new directory");
  LoadedModel src = load_model_dir(from);
  const ModelConfig& sc = src.config();
  if (!(sc.plan == plans::standard(sc.shape.num_layers)))
    throw CheckpointError(o.from + ": config.json has layer_types \"" + sc.plan.to_string() +
                          "\"; convert expects a plain Llama checkpoint (every layer with its own k/v)");

  ModelConfig target = sc;
  target.plan = o.plan.layer_types.empty() ? make_plan(o.plan, sc.shape.num_layers)
                                           : parse_layer_types(o.plan.layer_types, sc.shape.num_layers);
  if (target.plan.num_layers() != sc.shape.num_layers)
    throw PlanError("layer_types \"" + target.plan.to_string() + "\" has " + std::to_string(target.plan.num_layers()) +
                    " layers, the source model has num_hidden_layers = " + std::to_string(sc.shape.num_layers));
  target.passes = PassCounts{o.forward_passes, o.backward_passes};
  target.attention.sliding_window = o.sliding_window;
  target.attention.force_nodiag = o.force_nodiag;
  target.use_sequential = o.use_sequential;
  target.validate();

  const HostWeights converted = convert_to_lckv(src.weights, target);
  ConfigJson meta = src.meta;
  meta.model_type = "lckv-llama";
  const Dtype dtype = save_dtype(o.dtype, src.meta.dtype);
  save_model_dir(out, converted, meta, SaveOptions{dtype, 0});
  // The tokenizer and generation settings travel with the weights.
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"})
    if (std::filesystem::is_regular_file(from / f))
      std::filesystem::copy_file(from / f, out / f, std::filesystem::copy_options::overwrite_existing);

  std::printf("converted %s -> %s\n", o.from.c_str(), o.out.c_str());
  std::printf("layer_types %s: %d KV layers (was %d), %s\n", target.plan.to_string().c_str(), target.plan.num_kv_layers(),
              sc.shape.num_layers, to_string(dtype));
  for (int t = 0; t < target.plan.num_layers(); ++t) {
    if (!target.plan.computes_kv(t)) continue;
    const auto sources = kv_sources(target.plan, t);
    if (sources.size() == 1 && sources[0] == t) continue;
    std::string list;
    for (int l : sources) list += (list.empty() ? "" : ", ") + std::to_string(l);
    std::printf("  layer %d k/v = mean over layers {%s}\n", t, list.c_str());
  }
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto o = std::make_shared<ConvertOptions>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Turn a plain Llama checkpoint into an LCKV one: each KV layer's k/v become the mean over the layers "
                 "attending to it, everything else is copied");
  cmd->add_option("--from", o->from, "source HF model directory (model_type llama, safetensors)")->required();
  cmd->add_option("--out", o->out, "output model directory (model_type lckv-llama)")->required();
  add_plan_options(*cmd, o->plan);
  cmd->add_option("--forward-passes", o->forward_passes, "config.json forward_passes (m)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--backward-passes", o->backward_passes, "config.json backward_passes (b)")->check(CLI::PositiveNumber);
  cmd->add_option("--sliding-window", o->sliding_window, "config.json sliding_window, for layers marked 's'")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--use-sequential", o->use_sequential, "config.json use_sequential: always prefill token by token");
  cmd->add_flag("--force-nodiag", o->force_nodiag, "config.json force_nodiag");
  cmd->add_option("--dtype", o->dtype, "stored dtype: auto (the source's) | f32 | bf16 | f16")
      ->check(CLI::IsMember({"auto", "f32", "bf16", "f16"}));
  cmd->callback([o] { run_convert(*o); });
}

}  // namespace lckv::cli
