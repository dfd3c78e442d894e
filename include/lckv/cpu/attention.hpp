#pragma once
/// \file attention.hpp
/// CPU attention over any cache slot view and attention policy, plus the cache
/// writes the model needs. GQA: query head h reads kv head h / (heads / kv_heads).

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <vector>

#include "lckv/attention/layer_mask.hpp"
#include "lckv/attention/mask.hpp"
#include "lckv/core/buffer.hpp"
#include "lckv/core/rows.hpp"
#include "lckv/cpu/ops.hpp"

namespace lckv::cpu {

/// Writes rows of k, v into the slot at (rows[r].seq, rows[r].pos).
/// k, v: [rows, kv_heads * head_dim].
template <class Slot>
void store_kv(MatrixView<const float> k, MatrixView<const float> v, const Slot& slot, const RowInfo* rows) {
  for (int r = 0; r < k.rows; ++r)
    for (int h = 0; h < slot.kv_heads; ++h) {
      std::copy_n(k.row(r) + h * slot.head_dim, slot.head_dim, slot.key(rows[r].seq, rows[r].pos, h));
      std::copy_n(v.row(r) + h * slot.head_dim, slot.head_dim, slot.value(rows[r].seq, rows[r].pos, h));
    }
}

/// Zeroes the slot's keys and values at the given rows (before a cyclic group's first pass).
template <class Slot>
void zero_kv(const Slot& slot, const RowInfo* rows, int n) {
  for (int r = 0; r < n; ++r)
    for (int h = 0; h < slot.kv_heads; ++h) {
      std::fill_n(slot.key(rows[r].seq, rows[r].pos, h), slot.head_dim, 0.0f);
      std::fill_n(slot.value(rows[r].seq, rows[r].pos, h), slot.head_dim, 0.0f);
    }
}

/// out[r, h] = softmax_j(q[r, h] . K[j] / sqrt(d)) V[j] over the keys the policy
/// allows at rows[r].pos; zero when it allows none (first token, no-diagonal).
/// With rope_theta_on_read > 0 (StreamingLLM), q and K are unrotated and are
/// rotated here by their cache positions. q, out: [rows, heads * head_dim].
template <class Slot, AttentionPolicy Policy>
void attention(MatrixView<const float> q, const Slot& slot, const RowInfo* rows, const Policy& policy, int heads,
               MatrixView<float> out, float rope_theta_on_read = 0.0f) {
  const int d = slot.head_dim, group = heads / slot.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::int64_t work = 0;  // multiply-adds: one thread below kMinParallelWork
  for (int r = 0; r < q.rows; ++r) work += static_cast<std::int64_t>(policy.keys(rows[r].pos).count()) * heads * d;
#pragma omp parallel if (work >= kMinParallelWork)
  {
    std::vector<float> score;
    Eigen::VectorXf q_rotated(d), k_rotated(d);
#pragma omp for collapse(2) schedule(static)
    for (int r = 0; r < q.rows; ++r)
      for (int h = 0; h < heads; ++h) {
        const KeySpans keys = policy.keys(rows[r].pos);
        Eigen::Map<Eigen::VectorXf> o(out.row(r) + h * d, d);
        o.setZero();
        if (keys.count() == 0) continue;
        const bool rotate = rope_theta_on_read > 0.0f;
        if (rotate) {
          q_rotated = Eigen::Map<const Eigen::VectorXf>(q.row(r) + h * d, d);
          rotate_half(q_rotated.data(), d, keys.query_cache_position(rows[r].pos), rope_theta_on_read);
        }
        Eigen::Map<const Eigen::VectorXf> qv(rotate ? q_rotated.data() : q.row(r) + h * d, d);
        const int seq = rows[r].seq, kvh = h / group;
        auto key = [&](int j) -> const float* {
          if (!rotate) return slot.key(seq, j, kvh);
          k_rotated = Eigen::Map<const Eigen::VectorXf>(slot.key(seq, j, kvh), d);
          rotate_half(k_rotated.data(), d, keys.cache_position(j), rope_theta_on_read);
          return k_rotated.data();
        };
        score.resize(static_cast<std::size_t>(keys.count()));
        float max_score = -std::numeric_limits<float>::infinity();
        int n = 0;
        auto each_key = [&](auto&& f) {
          int i = 0;
          for (int j = 0; j < keys.sink_end; ++j) f(j, i++);
          for (int j = keys.begin; j < keys.end; ++j) f(j, i++);
        };
        each_key([&](int j, int i) {
          score[static_cast<std::size_t>(i)] = qv.dot(Eigen::Map<const Eigen::VectorXf>(key(j), d)) * scale;
          max_score = std::max(max_score, score[static_cast<std::size_t>(i)]);
          ++n;
        });
        float sum = 0.0f;
        for (int i = 0; i < n; ++i) sum += (score[static_cast<std::size_t>(i)] = std::exp(score[static_cast<std::size_t>(i)] - max_score));
        each_key([&](int j, int i) {
          o += (score[static_cast<std::size_t>(i)] / sum) * Eigen::Map<const Eigen::VectorXf>(slot.value(seq, j, kvh), d);
        });
      }
  }
}

/// Runtime mask: dispatches to the compile-time policy once per call.
template <class Slot>
void attention(MatrixView<const float> q, const Slot& slot, const RowInfo* rows, const MaskSpec& mask, int heads,
               MatrixView<float> out) {
  dispatch_mask(mask, [&](auto policy) { attention(q, slot, rows, policy, heads, out, mask.rope_theta_on_read); });
}

}  // namespace lckv::cpu
