#pragma once
/// \file contiguous_cache.hpp
/// The simplest layout: every sequence owns `max_length` positions of every slot.

#include <climits>
#include <string>

#include "lckv/cache/memory.hpp"
#include "lckv/cache/sequence_table.hpp"
#include "lckv/cache/slot_view.hpp"
#include "lckv/core/buffer.hpp"

namespace lckv {

template <class T, class Memory = HostMemory>
class ContiguousCache {
public:
  using value_type = T;
  using Slot = ContiguousSlot<T>;

  ContiguousCache(const CacheGeometry& g, int max_sequences, int max_length)
      : g_(checked_geometry(g, sizeof(T))), table_(max_sequences), max_length_(max_length) {
    if (max_length < 1) throw InvalidArgument("cache: max_length = " + std::to_string(max_length) + ", expected >= 1");
    const std::size_t n = g_.elems_per_position() * static_cast<std::size_t>(g_.num_slots) *
                          static_cast<std::size_t>(max_sequences) * static_cast<std::size_t>(max_length);
    k_ = typename Memory::template Buffer<T>(n);
    v_ = typename Memory::template Buffer<T>(n);
  }

  static std::size_t bytes_required(const CacheGeometry& g, int max_sequences, int max_length) {
    return contiguous_cache_bytes(g, max_sequences, max_length);
  }

  int num_slots() const { return g_.num_slots; }
  int max_sequences() const { return table_.max_sequences(); }
  int capacity() const { return max_length_; }
  int max_chunk() const { return INT_MAX; }
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
    const std::int64_t per_slot = static_cast<std::int64_t>(g_.elems_per_position()) * max_length_;
    const std::int64_t seq_stride = per_slot * g_.num_slots;
    T* k = const_cast<T*>(k_.data()) + s * per_slot;
    T* v = const_cast<T*>(v_.data()) + s * per_slot;
    return Slot{k, v, seq_stride, max_length_, 0, g_.kv_heads, g_.head_dim};
  }
  std::size_t allocated_bytes() const { return k_.bytes() + v_.bytes(); }

private:
  CacheGeometry g_;
  SequenceTable table_;
  int max_length_;
  typename Memory::template Buffer<T> k_, v_;
};

}  // namespace lckv
