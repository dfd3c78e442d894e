#pragma once
/// \file ring_cache.hpp
/// A contiguous cache whose windowed slots are rings: a layer read only through
/// sliding windows keeps the sink positions plus the last window (+ chunk - 1)
/// positions. This is where YOCO's memory saving comes from; other slots keep
/// every position. One run may write at most `max_chunk()` tokens of a sequence.

#include <climits>
#include <numeric>
#include <string>
#include <vector>

#include "lckv/cache/memory.hpp"
#include "lckv/cache/sequence_table.hpp"
#include "lckv/cache/slot_view.hpp"
#include "lckv/core/buffer.hpp"

namespace lckv {

template <class T, class Memory = HostMemory>
class RingCache {
public:
  using value_type = T;
  using Slot = RingSlot<T>;

  /// `chunk`: the most tokens one forward appends to a sequence (1 for pure decode).
  RingCache(const ModelConfig& config, int max_sequences, int max_length, int chunk)
      : g_(checked_geometry(CacheGeometry::of(config), sizeof(T))),
        table_(max_sequences),
        max_length_(max_length),
        chunk_(chunk),
        sink_(config.attention.sink) {
    if (max_length < 1) throw InvalidArgument("cache: max_length = " + std::to_string(max_length) + ", expected >= 1");
    if (chunk < 1) throw InvalidArgument("ring cache: chunk = " + std::to_string(chunk) + ", expected >= 1");
    capacity_ = ring_slot_capacities(config, max_length, chunk);
    slot_begin_.resize(capacity_.size());
    std::exclusive_scan(capacity_.begin(), capacity_.end(), slot_begin_.begin(), std::int64_t{0});
    positions_per_seq_ = std::accumulate(capacity_.begin(), capacity_.end(), std::int64_t{0});
    const std::size_t n = static_cast<std::size_t>(positions_per_seq_) * g_.elems_per_position() *
                          static_cast<std::size_t>(max_sequences);
    k_ = typename Memory::template Buffer<T>(n);
    v_ = typename Memory::template Buffer<T>(n);
  }

  static std::size_t bytes_required(const ModelConfig& config, int max_sequences, int max_length, int chunk) {
    return ring_cache_bytes(config, sizeof(T), max_sequences, max_length, chunk);
  }

  int num_slots() const { return g_.num_slots; }
  int max_sequences() const { return table_.max_sequences(); }
  int capacity() const { return max_length_; }
  int max_chunk() const { return chunk_; }
  /// Positions slot `s` keeps per sequence.
  int slot_capacity(int s) const { return capacity_[static_cast<std::size_t>(s)]; }
  bool is_ring(int s) const { return slot_capacity(s) < max_length_; }
  int open() { return table_.open(); }
  void close(int seq) { table_.close(seq); }
  bool is_open(int seq) const { return table_.is_open(seq); }
  int length(int seq) const { return table_.length(seq); }
  void reserve(int seq, int n) const {
    table_.check_room(seq, n, max_length_);
  }
  void truncate(int seq, int n) { table_.set_length(seq, std::min(n, table_.length(seq))); }
  void commit(int seq, int n) { table_.set_length(seq, n); }

  Slot slot(int s) const {
    const std::int64_t epp = static_cast<std::int64_t>(g_.elems_per_position());
    const std::int64_t base = slot_begin_[static_cast<std::size_t>(s)] * epp;
    // A full slot never wraps (positions < max_length = capacity), so one view type serves both.
    return Slot{const_cast<T*>(k_.data()) + base, const_cast<T*>(v_.data()) + base, positions_per_seq_ * epp,
                slot_capacity(s), is_ring(s) ? sink_ : 0, g_.kv_heads, g_.head_dim};
  }
  std::size_t allocated_bytes() const { return k_.bytes() + v_.bytes(); }

private:
  CacheGeometry g_;
  SequenceTable table_;
  int max_length_;
  int chunk_;
  int sink_;
  std::vector<int> capacity_;
  std::vector<std::int64_t> slot_begin_;  // in positions
  std::int64_t positions_per_seq_ = 0;
  typename Memory::template Buffer<T> k_, v_;
};

}  // namespace lckv
