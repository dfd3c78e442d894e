#pragma once
/// \file checkpoint.hpp
/// HF model directories: `config.json` + `model.safetensors` (or shards through
/// `model.safetensors.index.json`) [+ `tokenizer.model`], loaded into and saved
/// from HostWeights.
///
/// \code
///   lckv::LoadedModel m = lckv::load_model_dir("tinyllama-lckv-w2");
///   lckv::ContiguousCache<float> cache(lckv::CacheGeometry::of(m.config()), 1, 2048);
///   lckv::Transformer<lckv::CpuBackend, decltype(cache)> model(m.config(), m.weights.view());
///   lckv::save_model_dir("copy", m.weights, m.meta);              // bit-exact round trip
/// \endcode
///
/// Loading checks the checkpoint against config.json before allocating: every
/// tensor expected_tensors(config) lists must be there with its shape, and no
/// other may be, so a layer whose computes_kv is false must have no k/v
/// projections. Errors are CheckpointError (or FormatError for a malformed
/// file) naming the file and tensor.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lckv/io/config_json.hpp"
#include "lckv/io/errors.hpp"
#include "lckv/io/safetensors.hpp"
#include "lckv/model/weights.hpp"

namespace lckv {

/// A model directory in memory: config.json's fields and the fp32 weights.
struct LoadedModel {
  ConfigJson meta;     ///< config.json as read (model_type, dtype, bos/eos ids)
  HostWeights weights; ///< owns the fp32 weights; weights.config() is the model
  std::filesystem::path dir;
  std::optional<std::filesystem::path> tokenizer_model;  ///< dir/tokenizer.model when present
  const ModelConfig& config() const { return weights.config(); }
};

/// `dir/tokenizer.model` when it exists.
inline std::optional<std::filesystem::path> find_tokenizer_model(const std::filesystem::path& dir) {
  const auto p = dir / "tokenizer.model";
  if (std::filesystem::is_regular_file(p)) return p;
  return std::nullopt;
}

namespace detail {

/// Buffers some checkpoints carry that are not weights (old HF Llama conversions).
inline bool ignorable_tensor(const std::string& name) {
  const std::string suffix = "rotary_emb.inv_freq";
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Why `name` is not part of the model `c`, for an "unexpected tensor" message.
inline std::string unexpected_reason(const std::string& name, const ConfigJson& c) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) == 0) {
    std::size_t end = prefix.size();
    int layer = 0;
    while (end < name.size() && name[end] >= '0' && name[end] <= '9' && layer < 100000) layer = layer * 10 + (name[end++] - '0');
    const std::string rest = name.substr(end);
    const bool kv = rest == ".self_attn.k_proj.weight" || rest == ".self_attn.v_proj.weight";
    if (end > prefix.size() && layer < c.config.shape.num_layers && kv && !c.config.plan.computes_kv(layer))
      return "layer " + std::to_string(layer) + " computes no KV under layer_types \"" + c.config.plan.to_string() +
             "\" (no layer attends to it), so it must have no k/v projections";
    if (end > prefix.size() && layer >= c.config.shape.num_layers)
      return "config.json has num_hidden_layers = " + std::to_string(c.config.shape.num_layers);
  }
  if (name == "lm_head.weight" && c.config.shape.tie_word_embeddings)
    return "config.json has tie_word_embeddings = true, so lm_head is model.embed_tokens";
  return "config.json's model (" + c.model_type + ") has no such tensor";
}

}  // namespace detail

/// Checks a checkpoint's tensors against config.json: throws CheckpointError
/// for the first unexpected, missing or wrongly shaped tensor.
inline void check_checkpoint(const SafetensorsCheckpoint& ckpt, const ConfigJson& c, const std::string& dir) {
  const auto expected = expected_tensors(c.config);
  std::set<std::string> wanted;
  for (const auto& t : expected) wanted.insert(t.name);
  for (const auto& name : ckpt.names()) {
    if (wanted.count(name) || detail::ignorable_tensor(name)) continue;
    throw CheckpointError(ckpt.file_of(name).path().string() + ": unexpected tensor \"" + name + "\": " +
                          detail::unexpected_reason(name, c));
  }
  for (const auto& t : expected) {
    const TensorEntry* e = ckpt.find(t.name);
    if (!e)
      throw CheckpointError(dir + ": missing tensor \"" + t.name + "\" of shape " + shape_string(t.shape) +
                            ", expected by config.json (" + c.model_type + ", layer_types \"" + c.config.plan.to_string() + "\")");
    if (e->shape != t.shape)
      throw CheckpointError(ckpt.file_of(t.name).path().string() + ": tensor \"" + t.name + "\" has shape " +
                            shape_string(e->shape) + ", expected " + shape_string(t.shape) +
                            " from config.json (hidden_size " + std::to_string(c.config.shape.hidden_size) +
                            ", intermediate_size " + std::to_string(c.config.shape.intermediate_size) + ", vocab_size " +
                            std::to_string(c.config.shape.vocab_size) + ", heads " + std::to_string(c.config.shape.num_heads) +
                            "/" + std::to_string(c.config.shape.num_kv_heads) + " x head_dim " +
                            std::to_string(c.config.shape.head_dim) + ")");
    if (e->dtype != Dtype::F32 && e->dtype != Dtype::F16 && e->dtype != Dtype::BF16)
      throw FormatError(ckpt.file_of(t.name).path().string() + ": tensor \"" + t.name + "\" has dtype " +
                        to_string(e->dtype) + ", expected F32, F16 or BF16");
  }
}

/// The fp32 weights of `c` from a checked checkpoint (F16 / BF16 converted).
inline HostWeights load_weights(const SafetensorsCheckpoint& ckpt, const ConfigJson& c, const std::string& dir) {
  check_checkpoint(ckpt, c, dir);
  HostWeights w(c.config);
  for (const auto& t : w.tensors())
    ckpt.file_of(t.name).read_f32(*ckpt.find(t.name), {w.data(t.name), static_cast<std::size_t>(t.numel())});
  return w;
}

/// Loads `dir/config.json` and its safetensors into fp32 host weights.
inline LoadedModel load_model_dir(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) throw CheckpointError(dir.string() + ": not a directory (expected an HF model directory)");
  ConfigJson meta = load_config_json(dir / "config.json");
  SafetensorsCheckpoint ckpt(dir);
  HostWeights w = load_weights(ckpt, meta, dir.string());
  return LoadedModel{std::move(meta), std::move(w), dir, find_tokenizer_model(dir)};
}

/// How save_model_dir writes.
struct SaveOptions {
  Dtype dtype = Dtype::F32;           ///< F32, F16 or BF16
  std::uint64_t max_shard_bytes = 0;  ///< 0: one model.safetensors; else shards + index
};

inline const char* torch_dtype_name(Dtype d) {
  return d == Dtype::BF16 ? "bfloat16" : d == Dtype::F16 ? "float16" : "float32";
}

/// Writes config.json and the weights as HF does (`model.safetensors`, or
/// `model-0000i-of-0000N.safetensors` + `model.safetensors.index.json`).
/// A standard plan is written as model_type "llama", which HF transformers
/// loads as LlamaForCausalLM; other plans as "lckv-llama".
inline void save_model_dir(const std::filesystem::path& dir, const HostWeights& w, ConfigJson meta = {},
                           const SaveOptions& options = {}) {
  std::filesystem::create_directories(dir);
  meta.config = w.config();
  meta.dtype = torch_dtype_name(options.dtype);
  {
    std::ofstream out(dir / "config.json", std::ios::trunc);
    if (!out) throw FormatError((dir / "config.json").string() + ": cannot open for writing");
    out << to_config_json(meta).dump(2) << "\n";
  }
  std::vector<TensorToWrite> all;
  for (const auto& t : w.tensors())
    all.push_back({t.name, t.shape, {w.data(t.name), static_cast<std::size_t>(t.numel())}});
  // Drop files of an earlier save that this one would not overwrite.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string f = entry.path().filename().string();
    if (f == SafetensorsCheckpoint::kIndexFile || (f.rfind("model", 0) == 0 && entry.path().extension() == ".safetensors"))
      std::filesystem::remove(entry.path());
  }
  const std::uint64_t total = safetensors_data_bytes(all, options.dtype);
  if (options.max_shard_bytes == 0 || total <= options.max_shard_bytes) {
    write_safetensors(dir / SafetensorsCheckpoint::kSingleFile, all, options.dtype);
    return;
  }
  std::vector<std::vector<TensorToWrite>> shards(1);
  std::uint64_t in_shard = 0;
  for (const auto& t : all) {
    const std::uint64_t b = t.data.size() * dtype_size(options.dtype);
    if (!shards.back().empty() && in_shard + b > options.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(t);
    in_shard += b;
  }
  auto shard_name = [&](std::size_t i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    return std::string(buf);
  };
  nlohmann::json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = nlohmann::json::object();
  for (std::size_t i = 0; i < shards.size(); ++i) {
    write_safetensors(dir / shard_name(i), shards[i], options.dtype);
    for (const auto& t : shards[i]) index["weight_map"][t.name] = shard_name(i);
  }
  std::ofstream out(dir / SafetensorsCheckpoint::kIndexFile, std::ios::trunc);
  out << index.dump(2) << "\n";
}

}  // namespace lckv
