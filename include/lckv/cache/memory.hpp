#pragma once
/// \file memory.hpp
/// KV-cache memory accounting (DESIGN.md §5). Every cache layout allocates
/// exactly what these functions say; tests hold them to it.

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "lckv/core/error.hpp"
#include "lckv/model/config.hpp"

namespace lckv {

/// What one cache slot holds per position: a key and a value of kv_heads x head_dim.
struct CacheGeometry {
  int num_slots = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int elem_bytes = 4;

  static CacheGeometry of(const ModelConfig& c, int elem_bytes = 4) {
    return {c.plan.num_kv_layers(), c.shape.num_kv_heads, c.shape.head_dim, elem_bytes};
  }
  /// Elements of one key (or one value) vector set at one position of one slot.
  std::size_t elems_per_position() const { return static_cast<std::size_t>(kv_heads) * head_dim; }
  /// Bytes (K and V) one position costs in one slot.
  std::size_t slot_bytes_per_token() const { return 2 * elems_per_position() * static_cast<std::size_t>(elem_bytes); }
  /// Bytes (K and V) one token costs across all slots.
  std::size_t bytes_per_token() const { return slot_bytes_per_token() * static_cast<std::size_t>(num_slots); }
};

/// `g` with its element size set to `elem_bytes`; throws InvalidArgument on an empty geometry.
inline CacheGeometry checked_geometry(CacheGeometry g, std::size_t elem_bytes) {
  if (g.num_slots < 1 || g.kv_heads < 1 || g.head_dim < 1)
    throw InvalidArgument("cache: geometry needs num_slots, kv_heads and head_dim >= 1, got " +
                          std::to_string(g.num_slots) + ", " + std::to_string(g.kv_heads) + ", " +
                          std::to_string(g.head_dim));
  g.elem_bytes = static_cast<int>(elem_bytes);
  return g;
}

/// KV bytes per token of a plan: (KV layers) x 2 x kv_heads x head_dim x bytes.
inline std::size_t kv_bytes_per_token(const ModelConfig& c, int elem_bytes) {
  return CacheGeometry::of(c, elem_bytes).bytes_per_token();
}

/// Contiguous cache of `batch` sequences of `max_length` positions.
inline std::size_t contiguous_cache_bytes(const CacheGeometry& g, int batch, int max_length) {
  return g.bytes_per_token() * static_cast<std::size_t>(batch) * static_cast<std::size_t>(max_length);
}

/// Positions a ring slot keeps: sink + window + chunk - 1 (the window of the
/// last query of a chunk of `chunk` new tokens), at most max_length.
inline int ring_slot_positions(int sink, int window, int chunk, int max_length) {
  return std::min(max_length, sink + window + chunk - 1);
}

/// Per-slot capacity of a ring cache: ring slots (only windowed readers) keep
/// ring_slot_positions(), the others max_length.
inline std::vector<int> ring_slot_capacities(const ModelConfig& c, int max_length, int chunk) {
  std::vector<int> caps;
  for (int s = 0; s < c.plan.num_kv_layers(); ++s) {
    const int layer = c.plan.layer_of_slot(s);
    caps.push_back(c.plan.only_windowed_readers(layer)
                       ? ring_slot_positions(c.attention.sink, c.attention.sliding_window, chunk, max_length)
                       : max_length);
  }
  return caps;
}

inline std::size_t ring_cache_bytes(const ModelConfig& c, int elem_bytes, int batch, int max_length, int chunk) {
  const CacheGeometry g = CacheGeometry::of(c, elem_bytes);
  std::size_t positions = 0;
  for (int cap : ring_slot_capacities(c, max_length, chunk)) positions += static_cast<std::size_t>(cap);
  return positions * g.slot_bytes_per_token() * static_cast<std::size_t>(batch);
}

/// Paged cache: a pool of `num_pages` pages of `page_size` positions (all slots).
inline std::size_t paged_cache_bytes(const CacheGeometry& g, int num_pages, int page_size) {
  return g.bytes_per_token() * static_cast<std::size_t>(num_pages) * static_cast<std::size_t>(page_size);
}

/// Pages a sequence of `length` positions occupies.
inline int pages_for(int length, int page_size) { return (length + page_size - 1) / page_size; }

/// The largest batch whose contiguous cache of `max_length` fits `budget_bytes`.
inline int max_batch_for_budget(const CacheGeometry& g, int max_length, std::size_t budget_bytes) {
  const std::size_t per_seq = contiguous_cache_bytes(g, 1, max_length);
  return per_seq == 0 ? 0 : static_cast<int>(budget_bytes / per_seq);
}

/// Throws OutOfCapacity when `batch` sequences of `max_length` exceed `budget_bytes`.
inline void require_batch_fits(const CacheGeometry& g, int batch, int max_length, std::size_t budget_bytes) {
  const int most = max_batch_for_budget(g, max_length, budget_bytes);
  if (batch > most)
    throw OutOfCapacity("batch " + std::to_string(batch) + " x " + std::to_string(max_length) + " positions needs " +
                        std::to_string(contiguous_cache_bytes(g, batch, max_length)) + " bytes of KV cache; the budget of " +
                        std::to_string(budget_bytes) + " bytes holds at most batch " + std::to_string(most));
}

}  // namespace lckv
