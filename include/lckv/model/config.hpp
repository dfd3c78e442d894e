#pragma once
/// \file config.hpp
/// The model as data: a Llama shape (DESIGN.md §1) plus the KV-sharing plan and
/// its inference options. Named factories give the shapes used across lckv.

#include <string>

#include "lckv/attention/layer_mask.hpp"
#include "lckv/core/error.hpp"
#include "lckv/plan/iteration_plan.hpp"
#include "lckv/plan/layer_plan.hpp"

namespace lckv {

/// Tensor shapes of a Llama decoder.
struct ModelShape {
  int vocab_size = 32000;
  int hidden_size = 512;
  int intermediate_size = 1024;
  int num_layers = 8;
  int num_heads = 8;
  int num_kv_heads = 4;
  int head_dim = 64;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool tie_word_embeddings = false;

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }

  /// Throws InvalidArgument naming the first inconsistent field.
  void validate() const {
    auto need = [](bool ok, const std::string& what) {
      if (!ok) throw InvalidArgument("model shape: " + what);
    };
    need(vocab_size > 0, "vocab_size = " + std::to_string(vocab_size) + ", expected > 0");
    need(hidden_size > 0, "hidden_size = " + std::to_string(hidden_size) + ", expected > 0");
    need(intermediate_size > 0, "intermediate_size = " + std::to_string(intermediate_size) + ", expected > 0");
    need(num_layers > 0 && num_layers <= kMaxLayers, "num_hidden_layers = " + std::to_string(num_layers) +
                                                         ", expected 1.." + std::to_string(kMaxLayers));
    need(num_heads > 0, "num_attention_heads = " + std::to_string(num_heads) + ", expected > 0");
    need(num_kv_heads > 0 && num_heads % num_kv_heads == 0,
         "num_key_value_heads = " + std::to_string(num_kv_heads) + ", expected a divisor of num_attention_heads = " +
             std::to_string(num_heads));
    need(head_dim > 0 && head_dim % 2 == 0, "head_dim = " + std::to_string(head_dim) + ", expected a positive even number");
    need(rms_norm_eps > 0, "rms_norm_eps = " + std::to_string(rms_norm_eps) + ", expected > 0");
    need(rope_theta > 0, "rope_theta = " + std::to_string(rope_theta) + ", expected > 0");
  }
};

/// A complete model description: shape, plan, masks and prefill passes.
struct ModelConfig {
  ModelShape shape;
  LayerPlan plan;
  AttentionOptions attention;
  PassCounts passes;
  bool use_sequential = false;  ///< always prefill token by token (config.json use_sequential)
  int max_position_embeddings = 2048;

  void validate() const {
    shape.validate();
    plan.validate();
    if (plan.num_layers() != shape.num_layers)
      throw PlanError("layer_types has " + std::to_string(plan.num_layers()) + " layers, expected num_hidden_layers = " +
                      std::to_string(shape.num_layers));
    if (attention.sink < 0)
      throw InvalidArgument("sink = " + std::to_string(attention.sink) + ", expected >= 0 (0: no StreamingLLM sink)");
    if (attention.sliding_window < 1)
      throw InvalidArgument("sliding_window = " + std::to_string(attention.sliding_window) + ", expected >= 1");
    if (passes.forward_passes < 0 || passes.backward_passes < 1)
      throw InvalidArgument("forward_passes = " + std::to_string(passes.forward_passes) + ", backward_passes = " +
                            std::to_string(passes.backward_passes) + ", expected >= 0 and >= 1");
  }
};

namespace configs {

/// The authors' "llama_tiny" shape: 8 layers, hidden 512, MLP 1024, 8 / 4 heads, vocab 32000.
inline ModelShape llama_tiny_shape() { return ModelShape{}; }

/// TinyLlama-1.1B: 22 layers, hidden 2048, MLP 5632, 32 / 4 heads, head_dim 64, vocab 32000.
inline ModelShape tinyllama_1b_shape() {
  ModelShape s;
  s.hidden_size = 2048;
  s.intermediate_size = 5632;
  s.num_layers = 22;
  s.num_heads = 32;
  s.num_kv_heads = 4;
  s.head_dim = 64;
  return s;
}

/// Llama-2-7B: 32 layers, hidden 4096, MLP 11008, 32 / 32 heads, head_dim 128.
inline ModelShape llama2_7b_shape() {
  ModelShape s;
  s.hidden_size = 4096;
  s.intermediate_size = 11008;
  s.num_layers = 32;
  s.num_heads = 32;
  s.num_kv_heads = 32;
  s.head_dim = 128;
  s.rms_norm_eps = 1e-6f;
  return s;
}

/// A config from a shape and a plan, with DESIGN.md's defaults for the rest.
inline ModelConfig make(const ModelShape& shape, const LayerPlan& plan) {
  ModelConfig c;
  c.shape = shape;
  c.plan = plan;
  c.validate();
  return c;
}

}  // namespace configs
}  // namespace lckv
