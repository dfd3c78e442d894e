#pragma once
/// \file generator.hpp
/// Batched generation with continuous admission: prompts of different lengths
/// share decode steps, each request samples from its own seeded stream, and a
/// sequence that stops (EOS or length) closes its cache sequence at once so a
/// waiting request can take its place.

#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "lckv/core/error.hpp"
#include "lckv/core/random.hpp"
#include "lckv/engine/forward_options.hpp"
#include "lckv/engine/sampling.hpp"

namespace lckv {

struct GenerationRequest {
  std::vector<int> prompt;
  int max_new_tokens = 16;
  SamplingParams sampling;
  std::optional<int> eos;  ///< stop after emitting this token
  std::uint64_t seed = 0;
};

enum class StopReason { Eos, Length };

struct GenerationResult {
  std::vector<int> tokens;  ///< generated tokens only (EOS included when it stopped)
  StopReason stop = StopReason::Length;
  PrefillMode prefill_mode = PrefillMode::Auto;  ///< how the prompt was computed
};

struct GenerationStats {
  double prefill_seconds = 0;
  double decode_seconds = 0;
  long decode_steps = 0;
  long generated_tokens = 0;
  int peak_batch = 0;
};

struct GenerateOptions {
  PrefillMode prefill = PrefillMode::Auto;
  /// Called after every step with (tokens generated so far, tokens at most).
  std::function<void(long, long)> on_progress;
};

/// Runs every request to completion on `model` (a Transformer) and `cache`.
template <class Model, class Cache>
std::vector<GenerationResult> generate(Model& model, Cache& cache, const std::vector<GenerationRequest>& requests,
                                       const GenerateOptions& options = {}, GenerationStats* stats = nullptr) {
  using clock = std::chrono::steady_clock;
  GenerationStats local;
  GenerationStats& st = stats ? *stats : local;
  const int vocab = model.config().shape.vocab_size;
  long budget = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    const std::string where = "generate: request " + std::to_string(i);
    r.sampling.validate();
    if (r.prompt.empty()) throw InvalidArgument(where + " has an empty prompt");
    if (r.max_new_tokens < 1) throw InvalidArgument(where + ": max_new_tokens = " + std::to_string(r.max_new_tokens) + ", expected >= 1");
    if (r.eos && (*r.eos < 0 || *r.eos >= vocab))
      throw InvalidArgument(where + ": eos id " + std::to_string(*r.eos) + " is outside [0, " + std::to_string(vocab) + ")");
    for (std::size_t t = 0; t < r.prompt.size(); ++t)
      if (r.prompt[t] < 0 || r.prompt[t] >= vocab)
        throw InvalidArgument(where + ": prompt token " + std::to_string(t) + " has id " + std::to_string(r.prompt[t]) +
                              ", expected an id in [0, " + std::to_string(vocab) + ")");
    const long need = static_cast<long>(r.prompt.size()) + r.max_new_tokens - 1;  // the last token is never fed back
    if (need > cache.capacity())
      throw OutOfCapacity(where + ": prompt of " + std::to_string(r.prompt.size()) + " tokens + " +
                          std::to_string(r.max_new_tokens) + " new needs " + std::to_string(need) +
                          " cache positions, the cache holds " + std::to_string(cache.capacity()));
    budget += r.max_new_tokens;
  }

  struct Active {
    std::size_t request;
    int seq;
    Rng rng;
  };
  std::vector<GenerationResult> results(requests.size());
  std::deque<std::size_t> waiting;
  for (std::size_t i = 0; i < requests.size(); ++i) waiting.push_back(i);
  std::vector<Active> active;

  // Each sequence's next token is sampled inside the forward (on the device where the backend
  // samples there, so only token ids come back) from the sequence's next uniform: one per token,
  // so a seed fixes the generation whatever the batch.
  std::vector<SamplingParams> params;
  std::vector<double> uniforms;
  auto sampling_for = [&](std::vector<Active>& batch) {
    params.clear();
    uniforms.clear();
    for (auto& a : batch) {
      params.push_back(requests[a.request].sampling);
      uniforms.push_back(a.rng.uniform());
    }
    return TokenSampling{params, uniforms};
  };
  // Records each sequence's sampled token; closes finished ones.
  auto take = [&](const Logits& logits, std::vector<Active>& batch) {
    std::vector<Active> still;
    for (std::size_t c = 0; c < batch.size(); ++c) {
      auto& a = batch[c];
      const auto& req = requests[a.request];
      auto& res = results[a.request];
      const int token = logits.tokens[c];
      res.tokens.push_back(token);
      ++st.generated_tokens;
      if (req.eos && token == *req.eos) res.stop = StopReason::Eos;
      else if (static_cast<int>(res.tokens.size()) >= req.max_new_tokens) res.stop = StopReason::Length;
      else {
        still.push_back(a);
        continue;
      }
      cache.close(a.seq);
    }
    batch = std::move(still);
  };

  std::vector<Active> admitted;
  // Whatever fails (the cache, the backend), the sequences this call opened are closed.
  try {
    while (!waiting.empty() || !active.empty()) {
      // Admit waiting requests while sequences and memory allow.
      admitted.clear();
      std::vector<SequenceChunk> chunks;
      while (!waiting.empty() && static_cast<int>(active.size() + admitted.size()) < cache.max_sequences()) {
        const std::size_t i = waiting.front();
        const int seq = cache.open();
        // Take the room for the whole generation now, so no step can run out later.
        try {
          cache.reserve(seq, static_cast<int>(requests[i].prompt.size()) + requests[i].max_new_tokens - 1);
        } catch (const OutOfCapacity&) {
          cache.close(seq);
          if (active.empty() && admitted.empty()) throw;
          break;
        }
        waiting.pop_front();
        admitted.push_back({i, seq, Rng(requests[i].seed)});
        chunks.push_back({seq, requests[i].prompt});
      }
      if (!admitted.empty()) {
        const auto t0 = clock::now();
        Logits logits = model.forward(chunks, cache, {options.prefill, false}, sampling_for(admitted));
        st.prefill_seconds += std::chrono::duration<double>(clock::now() - t0).count();
        for (std::size_t c = 0; c < admitted.size(); ++c) results[admitted[c].request].prefill_mode = logits.mode_used[c];
        take(logits, admitted);
        active.insert(active.end(), admitted.begin(), admitted.end());
        if (options.on_progress) options.on_progress(st.generated_tokens, budget);
      }
      if (active.empty()) continue;

      // One decode step for every active sequence.
      st.peak_batch = std::max(st.peak_batch, static_cast<int>(active.size()));
      chunks.clear();
      for (const auto& a : active)
        chunks.push_back({a.seq, std::span<const int>(&results[a.request].tokens.back(), 1)});
      const auto t0 = clock::now();
      Logits logits = model.forward(chunks, cache, {PrefillMode::Auto, false}, sampling_for(active));
      st.decode_seconds += std::chrono::duration<double>(clock::now() - t0).count();
      ++st.decode_steps;
      take(logits, active);
      if (options.on_progress) options.on_progress(st.generated_tokens, budget);
    }
  } catch (...) {
    for (const auto* list : {&active, &admitted})
      for (const auto& a : *list)
        if (cache.is_open(a.seq)) cache.close(a.seq);
    throw;
  }
  return results;
}

}  // namespace lckv
