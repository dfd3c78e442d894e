#pragma once
/// \file transformer.hpp
/// The Llama decoder with cross-layer KV sharing (DESIGN.md §1-4), written once
/// over a backend's ops and a cache layout.
///
/// \code
///   auto config  = lckv::configs::make(lckv::configs::llama_tiny_shape(),
///                                      lckv::plans::lckv(8, lckv::warmup::Sandwich{2}));
///   auto weights = lckv::HostWeights::random(config, /*seed=*/1);
///   lckv::ContiguousCache<float> cache(lckv::CacheGeometry::of(config), /*batch=*/4, /*max_length=*/256);
///   lckv::Transformer<lckv::CpuBackend, decltype(cache)> model(config, weights.view());
///   int seq = cache.open();
///   std::vector<int> prompt{1, 15043, 3186};
///   lckv::SequenceChunk chunk{seq, prompt};
///   lckv::Logits logits = model.forward({&chunk, 1}, cache);
/// \endcode

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <type_traits>
#include <set>
#include <string>
#include <vector>

#include "lckv/cache/cache_concept.hpp"
#include "lckv/core/error.hpp"
#include "lckv/core/rows.hpp"
#include "lckv/engine/forward_options.hpp"
#include "lckv/engine/fused_steps.hpp"
#include "lckv/model/config.hpp"
#include "lckv/model/weights.hpp"
#include "lckv/plan/iteration_plan.hpp"

namespace lckv {

template <class Backend, KvCacheStore Cache>
class Transformer {
public:
  using WeightT = typename Backend::WeightT;

  Transformer(const ModelConfig& config, WeightsView<WeightT> weights, Backend backend = {})
      : config_(config), weights_(std::move(weights)), backend_(std::move(backend)) {
    config_.validate();
    if (static_cast<int>(weights_.layers.size()) != config_.shape.num_layers)
      throw InvalidArgument("transformer: weights have " + std::to_string(weights_.layers.size()) +
                            " layers, config has " + std::to_string(config_.shape.num_layers));
    for (int l = 0; l < config_.shape.num_layers; ++l)
      masks_.push_back(layer_attention(config_.plan, l, config_.attention, config_.shape.rope_theta));
  }

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }
  const MaskSpec& mask(int layer) const { return masks_[static_cast<std::size_t>(layer)]; }

  /// The mode a chunk of n new tokens gets under `requested`.
  PrefillMode resolve_mode(PrefillMode requested, int n) const {
    if (!config_.plan.any_attends_top()) return PrefillMode::Iterative;  // one pass is exact
    if (requested != PrefillMode::Auto) return requested;
    if (config_.use_sequential || n <= config_.passes.total()) return PrefillMode::Sequential;
    return PrefillMode::Iterative;
  }

  /// Appends each chunk's tokens to its sequence and returns logits. All chunks
  /// are checked and all cache room is reserved before anything is written, so
  /// a bad chunk leaves every sequence as it was.
  /// With `sampling` it returns each chunk's next token instead (Logits::tokens).
  Logits forward(std::span<const SequenceChunk> chunks, Cache& cache, ForwardOptions options = {},
                 TokenSampling sampling = {}) {
    validate(chunks, cache);
    validate_sampling(chunks.size(), options, sampling);
    Logits out;
    out.vocab = config_.shape.vocab_size;
    int total_rows = 0;
    for (const auto& c : chunks) {
      out.first_row.push_back(total_rows);
      out.mode_used.push_back(resolve_mode(options.mode, static_cast<int>(c.tokens.size())));
      total_rows += options.all_logits ? static_cast<int>(c.tokens.size()) : 1;
    }
    out.rows = total_rows;
    // An acyclic plan is exact in one pass over any split of the tokens, so it
    // may go in pieces that fit a ring cache; a cyclic group's passes may not.
    const bool cyclic = config_.plan.any_attends_top();
    const std::size_t piece = static_cast<std::size_t>(cache.max_chunk());
    std::size_t longest_parallel = 0, longest_sequential = 0;
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const std::size_t len = chunks[c].tokens.size();
      if (out.mode_used[c] == PrefillMode::Sequential) {
        longest_sequential = std::max(longest_sequential, len);
        continue;
      }
      if (cyclic && len > piece)
        throw InvalidArgument("forward: chunk " + std::to_string(c) + " has " + std::to_string(len) +
                              " tokens for an iterative prefill, the ring cache takes at most " +
                              std::to_string(piece) + " at once; use sequential prefill or a larger ring chunk");
      longest_parallel = std::max(longest_parallel, len);
    }
    reserve_all(chunks, cache);
    if (sampling.empty())
      out.data = HostBuffer<float>(static_cast<std::size_t>(total_rows) * static_cast<std::size_t>(out.vocab));
    else
      out.tokens.assign(chunks.size(), -1);

    for (std::size_t from = 0; from < longest_parallel; from += piece) {
      Batch batch;
      for (std::size_t c = 0; c < chunks.size(); ++c)
        if (out.mode_used[c] == PrefillMode::Iterative && from < chunks[c].tokens.size())
          add_tokens(batch, chunks[c], cache, from, std::min(from + piece, chunks[c].tokens.size()), c, options, out);
      run(batch, cache, sampling, out);
    }
    for (std::size_t t = 0; t < longest_sequential; ++t) {
      Batch step;
      for (std::size_t c = 0; c < chunks.size(); ++c)
        if (out.mode_used[c] == PrefillMode::Sequential && t < chunks[c].tokens.size())
          add_tokens(step, chunks[c], cache, t, t + 1, c, options, out);
      run(step, cache, sampling, out);
    }
    for (const auto& c : chunks) cache.commit(c.seq, cache.length(c.seq) + static_cast<int>(c.tokens.size()));
    return out;
  }

private:
  /// Rows of one run: every row is a new token at a known sequence and position.
  struct Batch {
    std::vector<int> tokens;
    std::vector<RowInfo> rows;
    std::vector<int> logit_rows;  ///< batch rows whose logits are wanted
    std::vector<int> logit_dest;  ///< and where they go in the output
    int longest_chunk = 0;
  };

  void add_tokens(Batch& b, const SequenceChunk& c, const Cache& cache, std::size_t from, std::size_t to,
                  std::size_t chunk_index, const ForwardOptions& options, const Logits& out) const {
    const int past = cache.length(c.seq);
    for (std::size_t t = from; t < to; ++t) {
      const int row = static_cast<int>(b.tokens.size());
      b.tokens.push_back(c.tokens[t]);
      b.rows.push_back({c.seq, past + static_cast<int>(t)});
      const bool last = t + 1 == c.tokens.size();
      if (options.all_logits || last) {
        b.logit_rows.push_back(row);
        b.logit_dest.push_back(out.first_row[chunk_index] + (options.all_logits ? static_cast<int>(t) : 0));
      }
    }
    b.longest_chunk = std::max(b.longest_chunk, static_cast<int>(to - from));
  }

  void validate(std::span<const SequenceChunk> chunks, const Cache& cache) const {
    if (chunks.empty()) throw InvalidArgument("forward: no sequence chunks given");
    std::set<int> seen;
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const auto& chunk = chunks[c];
      const std::string where = "forward: chunk " + std::to_string(c) + " (sequence " + std::to_string(chunk.seq) + ")";
      if (!cache.is_open(chunk.seq)) throw InvalidArgument(where + " is not an open cache sequence");
      if (!seen.insert(chunk.seq).second) throw InvalidArgument(where + " appears twice in one forward");
      if (chunk.tokens.empty()) throw InvalidArgument(where + " has no tokens");
      for (std::size_t t = 0; t < chunk.tokens.size(); ++t)
        if (chunk.tokens[t] < 0 || chunk.tokens[t] >= config_.shape.vocab_size)
          throw InvalidArgument(where + ": token " + std::to_string(t) + " has id " + std::to_string(chunk.tokens[t]) +
                                ", expected an id in [0, " + std::to_string(config_.shape.vocab_size) + ")");
    }
  }

  static void validate_sampling(std::size_t chunks, const ForwardOptions& options, const TokenSampling& o) {
    if (o.empty()) return;
    if (o.params.size() != chunks || o.uniforms.size() != chunks)
      throw InvalidArgument("forward: sampling needs one parameter set and one uniform per chunk: " +
                            std::to_string(chunks) + " chunks, " + std::to_string(o.params.size()) +
                            " parameter sets, " + std::to_string(o.uniforms.size()) + " uniforms");
    if (options.all_logits)
      throw InvalidArgument("forward: sampling takes each chunk's last row; all_logits asks for every row's logits");
    for (std::size_t c = 0; c < chunks; ++c) {
      o.params[c].validate();
      if (!(o.uniforms[c] >= 0.0 && o.uniforms[c] < 1.0))
        throw InvalidArgument("forward: chunk " + std::to_string(c) + "'s uniform is " + std::to_string(o.uniforms[c]) +
                              ", expected a value in [0, 1)");
    }
  }

  void reserve_all(std::span<const SequenceChunk> chunks, Cache& cache) const {
    std::size_t done = 0;
    try {
      for (; done < chunks.size(); ++done)
        cache.reserve(chunks[done].seq, cache.length(chunks[done].seq) + static_cast<int>(chunks[done].tokens.size()));
    } catch (...) {
      for (std::size_t c = 0; c < done; ++c) cache.truncate(chunks[c].seq, cache.length(chunks[c].seq));
      throw;
    }
  }

  void ensure_scratch(int rows) {
    if (rows <= scratch_rows_) return;
    const auto& s = config_.shape;
    const std::size_t n = static_cast<std::size_t>(rows);
    x_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.hidden_size));
    x_in_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.hidden_size));
    xn_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.hidden_size));
    q_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.q_dim()));
    attn_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.q_dim()));
    k_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.kv_dim()));
    v_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.kv_dim()));
    gate_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.intermediate_size));
    up_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.intermediate_size));
    logits_ = backend_.template alloc<float>(n * static_cast<std::size_t>(s.vocab_size));
    scratch_rows_ = rows;
  }

  template <class Buf>
  static MatrixView<float> view(Buf& b, int rows, int cols) {
    return {b.data(), rows, cols};
  }

  /// One run over the batch's rows following the iteration plan.
  void run(const Batch& b, Cache& cache, const TokenSampling& sampling, Logits& out) {
    const auto& s = config_.shape;
    const int n = static_cast<int>(b.tokens.size());
    ensure_scratch(n);
    const RowInfo* rows = backend_.stage(b.rows);
    const int* tokens = backend_.stage(b.tokens);
    const int* logit_index = backend_.stage(b.logit_rows);
    const int m = static_cast<int>(b.logit_rows.size());
    bool every_row = m == n;
    for (int i = 0; every_row && i < m; ++i) every_row = b.logit_rows[static_cast<std::size_t>(i)] == i;
    auto x = view(x_, n, s.hidden_size);
    auto logits = view(logits_, m, s.vocab_size);
    // After k passes the KV of the first k new tokens is exact, and more passes
    // recompute identical values, so a group needs at most `longest_chunk` passes.
    const int passes = std::min(config_.passes.total(), b.longest_chunk);
    auto compute = [&] {
      backend_.embed(tokens, weights_.embed_tokens, x);
      int l = 0;
      for (const auto& group : cyclic_groups(config_.plan)) {
        run_layers(l, group.begin, n, rows, cache);
        for (int layer = group.begin; layer < group.end; ++layer)
          if (config_.plan.computes_kv(layer))
            backend_.zero_kv(cache.slot(config_.plan.kv_slot(layer)), rows, n);
        auto x_in = view(x_in_, n, s.hidden_size);
        backend_.copy(x, x_in);
        for (int p = 0; p < passes; ++p) {
          if (p > 0) backend_.copy(x_in, x);
          run_layers(group.begin, group.end, n, rows, cache);
        }
        l = group.end;
      }
      run_layers(l, s.num_layers, n, rows, cache);

      // Final norm and lm_head on the wanted rows only (decode: all of them, in order).
      auto picked = x;
      if (!every_row) {
        picked = view(x_in_, m, s.hidden_size);
        backend_.gather_rows(x, logit_index, picked);
      }
      const steps::Projection<WeightT> head[] = {{weights_.lm_head, logits}};
      steps::norm_project(backend_, picked, weights_.norm, s.rms_norm_eps, view(xn_, m, s.hidden_size), head);
    };
    // A backend that can record launches (CUDA Graphs) replays decode steps;
    // the key names everything the launches depend on besides staged data.
    if constexpr (requires { backend_.step(std::vector<std::int64_t>{}, true, compute); })
      backend_.step(step_key(n, m, passes, cache), b.longest_chunk == 1, compute);
    else
      compute();
    if (!sampling.empty()) {
      sample_rows(b, logits, sampling, out);
      return;
    }
    // Rows that land in order at the start of the output (decode) come straight back; others via a staging copy.
    bool in_place = true;
    for (int i = 0; in_place && i < m; ++i) in_place = b.logit_dest[static_cast<std::size_t>(i)] == i;
    if (in_place) {
      backend_.download(logits, out.data.data());
      return;
    }
    HostBuffer<float> host(static_cast<std::size_t>(m) * static_cast<std::size_t>(s.vocab_size));
    backend_.download(logits, host.data());
    for (int i = 0; i < m; ++i)
      std::copy_n(host.data() + static_cast<std::size_t>(i) * s.vocab_size, s.vocab_size,
                  out.data.data() + static_cast<std::size_t>(b.logit_dest[static_cast<std::size_t>(i)]) * s.vocab_size);
  }

  /// TokenSampling: the token of each wanted row (a chunk's last; its logit_dest is the
  /// chunk's index). A backend that samples on the device takes every row, each with its own
  /// parameters, in one call and sends back token ids only; otherwise the rows come back and
  /// sample_token picks. logits: [rows wanted, vocab].
  void sample_rows(const Batch& b, MatrixView<float> logits, const TokenSampling& o, Logits& out) {
    const int m = logits.rows, vocab = logits.cols;
    auto chunk = [&](int i) { return static_cast<std::size_t>(b.logit_dest[static_cast<std::size_t>(i)]); };
    if constexpr (requires {
                    backend_.sample(MatrixView<const float>{}, std::span<const SamplingParams>{}, std::span<const double>{});
                  }) {
      std::vector<SamplingParams> params;
      std::vector<double> u;
      for (int i = 0; i < m; ++i) {
        params.push_back(o.params[chunk(i)]);
        u.push_back(o.uniforms[chunk(i)]);
      }
      const std::vector<int> tokens = backend_.sample(MatrixView<const float>{logits.data, m, vocab}, params, u);
      for (int i = 0; i < m; ++i) out.tokens[chunk(i)] = tokens[static_cast<std::size_t>(i)];
    } else {
      HostBuffer<float> host(static_cast<std::size_t>(m) * static_cast<std::size_t>(vocab));
      backend_.download(logits, host.data());
      for (int i = 0; i < m; ++i)
        out.tokens[chunk(i)] = sample_token({host.data() + static_cast<std::size_t>(i) * vocab, static_cast<std::size_t>(vocab)},
                                            o.params[chunk(i)], o.uniforms[chunk(i)]);
    }
  }

  /// Shapes, cache identity, every slot view, the scratch buffers and the weights of a run: a
  /// recorded step replays all of these pointers, and copies of a backend share its recordings.
  std::vector<std::int64_t> step_key(int n, int m, int passes, const Cache& cache) const {
    using Slot = typename Cache::Slot;
    static_assert(std::is_trivially_copyable_v<Slot>);
    std::vector<std::int64_t> key{n, m, passes, scratch_rows_, reinterpret_cast<std::int64_t>(&cache)};
    push_addresses(key, x_.data(), x_in_.data(), xn_.data(), q_.data(), attn_.data(), k_.data(), v_.data(), gate_.data(),
                   up_.data(), logits_.data());
    push_addresses(key, weights_.embed_tokens, weights_.norm, weights_.lm_head);
    for (std::size_t l = 0; l < weights_.layers.size(); ++l) {
      const auto& w = weights_.layers[l];
      push_addresses(key, w.q_proj, w.k_proj, w.v_proj, w.o_proj, w.gate_proj, w.up_proj, w.down_proj, w.input_layernorm,
                     w.post_attention_layernorm);
    }
    for (int s = 0; s < cache.num_slots(); ++s) {
      const Slot slot = cache.slot(s);
      std::int64_t words[(sizeof(Slot) + 7) / 8] = {};
      std::memcpy(words, &slot, sizeof(Slot));
      key.insert(key.end(), std::begin(words), std::end(words));
    }
    return key;
  }

  template <class... T>
  static void push_addresses(std::vector<std::int64_t>& key, const T*... p) {
    (key.push_back(reinterpret_cast<std::int64_t>(p)), ...);
  }

  /// Layers [begin, end) over all rows; each KV layer writes its new KV before
  /// anyone reads it in this pass, so a top target still holds the previous pass.
  void run_layers(int begin, int end, int n, const RowInfo* rows, Cache& cache) {
    const auto& s = config_.shape;
    auto x = view(x_, n, s.hidden_size);
    auto xn = view(xn_, n, s.hidden_size);
    auto q = view(q_, n, s.q_dim());
    auto attn = view(attn_, n, s.q_dim());
    auto gate = view(gate_, n, s.intermediate_size);
    auto up = view(up_, n, s.intermediate_size);
    const float theta = config_.attention.sink == 0 ? s.rope_theta : 0.0f;  // StreamingLLM: RoPE at read time
    for (int l = begin; l < end; ++l) {
      const auto& w = weights_.layers[static_cast<std::size_t>(l)];
      const auto attended = cache.slot(config_.plan.kv_slot(config_.plan.attends_to(l)));
      if (config_.plan.computes_kv(l)) {
        auto k = view(k_, n, s.kv_dim());
        auto v = view(v_, n, s.kv_dim());
        const steps::Projection<WeightT> qkv[] = {{w.q_proj, q}, {w.k_proj, k}, {w.v_proj, v}};
        steps::attention_input(backend_, x, w.input_layernorm, s.rms_norm_eps, xn,
                               std::span<const steps::Projection<WeightT>>(qkv), s.num_heads,
                               cache.slot(config_.plan.kv_slot(l)), rows, theta);
      } else {
        const steps::Projection<WeightT> q_only[] = {{w.q_proj, q}};
        steps::attention_input(backend_, x, w.input_layernorm, s.rms_norm_eps, xn,
                               std::span<const steps::Projection<WeightT>>(q_only), s.num_heads, attended, rows,
                               theta);
      }
      steps::attention_output(backend_, q, attended, rows, mask(l), s.num_heads, attn, w.o_proj, x);
      steps::mlp(backend_, x, w.post_attention_layernorm, s.rms_norm_eps, xn, w.gate_proj, w.up_proj, w.down_proj, gate,
                 up);
    }
  }

  using FloatBuffer = typename Backend::template Buffer<float>;
  ModelConfig config_;
  WeightsView<WeightT> weights_;
  Backend backend_;
  std::vector<MaskSpec> masks_;
  int scratch_rows_ = 0;
  FloatBuffer x_, x_in_, xn_, q_, attn_, k_, v_, gate_, up_, logits_;
};

}  // namespace lckv
