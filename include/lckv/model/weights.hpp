#pragma once
/// \file weights.hpp
/// Model weights: one owning fp32 host store (HostWeights) whose tensors carry
/// their HF checkpoint names, handed out as non-owning views (WeightsView) that
/// both backends consume. A layer that computes no KV has no k/v tensors.

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lckv/core/buffer.hpp"
#include "lckv/core/error.hpp"
#include "lckv/core/random.hpp"
#include "lckv/model/config.hpp"

namespace lckv {

/// Pointers into one layer's weights. Linear weights are [out, in] row-major.
template <class T>
struct LayerWeightsView {
  const T* q_proj = nullptr;                    ///< [q_dim, hidden]
  const T* k_proj = nullptr;                    ///< [kv_dim, hidden], null unless computes_kv
  const T* v_proj = nullptr;                    ///< [kv_dim, hidden], null unless computes_kv
  const T* o_proj = nullptr;                    ///< [hidden, q_dim]
  const T* gate_proj = nullptr;                 ///< [intermediate, hidden]
  const T* up_proj = nullptr;                   ///< [intermediate, hidden]
  const T* down_proj = nullptr;                 ///< [hidden, intermediate]
  const T* input_layernorm = nullptr;           ///< [hidden]
  const T* post_attention_layernorm = nullptr;  ///< [hidden]
};

/// Pointers into a whole model's weights.
template <class T>
struct WeightsView {
  const T* embed_tokens = nullptr;  ///< [vocab, hidden]
  const T* norm = nullptr;          ///< [hidden]
  const T* lm_head = nullptr;       ///< [vocab, hidden]; equals embed_tokens when tied
  std::vector<LayerWeightsView<T>> layers;
};

/// Name and shape of one checkpoint tensor, and where it lives in the store.
struct TensorInfo {
  std::string name;
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;  ///< in elements
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

/// The tensors a config needs, in checkpoint order (names as in DESIGN.md §1).
/// HostWeights stores them in this order, so a layer's q / k / v and gate / up
/// lie back to back (the CUDA backend runs each group as one GEMM).
inline std::vector<TensorInfo> expected_tensors(const ModelConfig& config) {
  const ModelShape& s = config.shape;
  std::vector<TensorInfo> t;
  auto add = [&](std::string name, std::vector<std::int64_t> shape) { t.push_back({std::move(name), std::move(shape), 0}); };
  add("model.embed_tokens.weight", {s.vocab_size, s.hidden_size});
  for (int l = 0; l < s.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "self_attn.q_proj.weight", {s.q_dim(), s.hidden_size});
    if (config.plan.computes_kv(l)) {
      add(p + "self_attn.k_proj.weight", {s.kv_dim(), s.hidden_size});
      add(p + "self_attn.v_proj.weight", {s.kv_dim(), s.hidden_size});
    }
    add(p + "self_attn.o_proj.weight", {s.hidden_size, s.q_dim()});
    add(p + "mlp.gate_proj.weight", {s.intermediate_size, s.hidden_size});
    add(p + "mlp.up_proj.weight", {s.intermediate_size, s.hidden_size});
    add(p + "mlp.down_proj.weight", {s.hidden_size, s.intermediate_size});
    add(p + "input_layernorm.weight", {s.hidden_size});
    add(p + "post_attention_layernorm.weight", {s.hidden_size});
  }
  add("model.norm.weight", {s.hidden_size});
  if (!s.tie_word_embeddings) add("lm_head.weight", {s.vocab_size, s.hidden_size});
  std::size_t offset = 0;
  for (auto& info : t) {
    info.offset = offset;
    offset += static_cast<std::size_t>(info.numel());
  }
  return t;
}

/// Owns every weight of a model in one fp32 buffer.
class HostWeights {
public:
  /// Zero-filled weights laid out for `config`.
  explicit HostWeights(const ModelConfig& config)
      : config_((config.validate(), config)), tensors_(expected_tensors(config_)) {
    std::size_t total = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      index_[tensors_[i].name] = i;
      total += static_cast<std::size_t>(tensors_[i].numel());
    }
    data_ = HostBuffer<float>(total);
  }

  /// Weights drawn from N(0, std^2) with a fixed seed; norm weights 1 + N(0, std^2).
  /// Each block of 2^16 elements has its own stream, so the values do not depend
  /// on the number of threads that fill them.
  static HostWeights random(const ModelConfig& config, std::uint64_t seed, float std = 0.02f) {
    HostWeights w(config);
    constexpr std::int64_t kBlock = std::int64_t{1} << 16;
    struct Block {
      std::size_t tensor;
      std::int64_t begin;
    };
    std::vector<Block> blocks;
    for (std::size_t t = 0; t < w.tensors_.size(); ++t)
      for (std::int64_t b = 0; b < w.tensors_[t].numel(); b += kBlock) blocks.push_back({t, b});
#pragma omp parallel for schedule(dynamic, 16)
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const TensorInfo& t = w.tensors_[blocks[i].tensor];
      const float mean = t.shape.size() == 1 ? 1.0f : 0.0f;
      Rng rng(seed ^ (0x9E3779B97F4A7C15ull * (blocks[i].tensor + 1)) ^ static_cast<std::uint64_t>(blocks[i].begin));
      float* p = w.data_.data() + t.offset;
      const std::int64_t end = std::min(t.numel(), blocks[i].begin + kBlock);
      for (std::int64_t e = blocks[i].begin; e < end; e += 2) {
        const auto [a, b] = rng.normal_pair();
        p[e] = mean + static_cast<float>(a) * std;
        if (e + 1 < end) p[e + 1] = mean + static_cast<float>(b) * std;
      }
    }
    return w;
  }

  const ModelConfig& config() const { return config_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) throw InvalidArgument("weights: no tensor \"" + name + "\" in this model");
    return tensors_[it->second];
  }
  float* data(const std::string& name) { return data_.data() + info(name).offset; }
  const float* data(const std::string& name) const { return data_.data() + info(name).offset; }
  std::size_t bytes() const { return data_.bytes(); }
  std::size_t num_parameters() const { return data_.size(); }

  /// Non-owning pointers for a backend; valid while this object lives.
  WeightsView<float> view() const {
    WeightsView<float> v;
    v.embed_tokens = data("model.embed_tokens.weight");
    v.norm = data("model.norm.weight");
    v.lm_head = config_.shape.tie_word_embeddings ? v.embed_tokens : data("lm_head.weight");
    for (int l = 0; l < config_.shape.num_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      LayerWeightsView<float> lw;
      lw.q_proj = data(p + "self_attn.q_proj.weight");
      if (config_.plan.computes_kv(l)) {
        lw.k_proj = data(p + "self_attn.k_proj.weight");
        lw.v_proj = data(p + "self_attn.v_proj.weight");
      }
      lw.o_proj = data(p + "self_attn.o_proj.weight");
      lw.gate_proj = data(p + "mlp.gate_proj.weight");
      lw.up_proj = data(p + "mlp.up_proj.weight");
      lw.down_proj = data(p + "mlp.down_proj.weight");
      lw.input_layernorm = data(p + "input_layernorm.weight");
      lw.post_attention_layernorm = data(p + "post_attention_layernorm.weight");
      v.layers.push_back(lw);
    }
    return v;
  }

private:
  ModelConfig config_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  HostBuffer<float> data_;
};

}  // namespace lckv
