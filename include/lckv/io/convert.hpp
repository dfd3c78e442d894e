#pragma once
/// \file convert.hpp
/// A plain Llama checkpoint -> an LCKV one, the way the LCKV authors initialise
/// from a pretrained model: the k/v projections of a KV-computing layer t become
/// the mean of the k/v projections of all layers that attend to t; every other
/// weight is copied unchanged, and layers that compute no KV lose their k/v.
///
/// \code
///   lckv::LoadedModel src = lckv::load_model_dir("TinyLlama-1.1B");
///   lckv::ModelConfig target = src.config();
///   target.plan = lckv::parse_layer_types("0_20_20_..._20_21", target.shape.num_layers);
///   lckv::HostWeights lckv_weights = lckv::convert_to_lckv(src.weights, target);
/// \endcode

#include <algorithm>
#include <string>
#include <vector>

#include "lckv/io/errors.hpp"
#include "lckv/model/weights.hpp"

namespace lckv {

/// The layers whose k/v are averaged into layer t's under `plan`.
inline std::vector<int> kv_sources(const LayerPlan& plan, int t) {
  std::vector<int> out;
  for (int l = 0; l < plan.num_layers(); ++l)
    if (plan.attends_to(l) == t) out.push_back(l);
  return out;
}

/// Weights for `target` (same shape as the source, any plan) from `source`,
/// whose layers must all have k/v projections for the layers averaged.
/// Throws CheckpointError when the shapes differ or a needed k/v is absent.
inline HostWeights convert_to_lckv(const HostWeights& source, const ModelConfig& target) {
  const ModelShape& a = source.config().shape;
  const ModelShape& b = target.shape;
  if (a.vocab_size != b.vocab_size || a.hidden_size != b.hidden_size || a.intermediate_size != b.intermediate_size ||
      a.num_layers != b.num_layers || a.num_heads != b.num_heads || a.num_kv_heads != b.num_kv_heads ||
      a.head_dim != b.head_dim || a.tie_word_embeddings != b.tie_word_embeddings)
    throw CheckpointError("convert: the target config's shape differs from the source checkpoint's; expected the same "
                          "vocab, hidden, MLP, layers, heads, head_dim and tie_word_embeddings");
  HostWeights out(target);
  for (const auto& t : out.tensors()) {
    const bool is_kv = t.name.find(".self_attn.k_proj.") != std::string::npos ||
                       t.name.find(".self_attn.v_proj.") != std::string::npos;
    if (is_kv) continue;
    const float* src = source.data(t.name);
    std::copy(src, src + t.numel(), out.data(t.name));
  }
  for (int layer = 0; layer < b.num_layers; ++layer) {
    if (!target.plan.computes_kv(layer)) continue;
    const std::vector<int> from = kv_sources(target.plan, layer);
    for (const char* proj : {"k_proj", "v_proj"}) {
      auto name = [&](int l) { return "model.layers." + std::to_string(l) + ".self_attn." + proj + ".weight"; };
      float* dst = out.data(name(layer));
      const auto n = static_cast<std::size_t>(out.info(name(layer)).numel());
      std::vector<double> sum(n, 0.0);
      for (int l : from) {
        if (!source.has(name(l)))
          throw CheckpointError("convert: layer " + std::to_string(layer) + "'s " + proj + " is the mean over layers attending to it, but the source has no \"" +
                                name(l) + "\" (layer " + std::to_string(l) + " computes no KV there); expected a plain Llama checkpoint");
        const float* src = source.data(name(l));
        for (std::size_t i = 0; i < n; ++i) sum[i] += src[i];
      }
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(sum[i] / static_cast<double>(from.size()));
    }
  }
  return out;
}

}  // namespace lckv
