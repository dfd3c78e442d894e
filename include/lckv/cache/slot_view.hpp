#pragma once
/// \file slot_view.hpp
/// Non-owning views of one KV layer ("slot") of a cache: where the key and the
/// value of (sequence, position, kv head) live. Attention kernels on both
/// backends are templated on these; a view is a POD passed by value to kernels.
/// Each vector is head_dim contiguous elements.

#include <cstdint>

#include "lckv/core/macros.hpp"

namespace lckv {

/// Contiguous storage [sequence][position][kv_head][head_dim]. With `Ring`,
/// positions >= sink wrap around a buffer of `capacity` positions (ring cache).
template <class T, bool Ring>
struct StridedSlot {
  T* k = nullptr;
  T* v = nullptr;
  std::int64_t seq_stride = 0;  ///< elements between two sequences
  int capacity = 0;             ///< positions held per sequence
  int sink = 0;                 ///< Ring: positions [0, sink) never wrap
  int kv_heads = 0;
  int head_dim = 0;

  LCKV_HD int physical(int pos) const {
    if constexpr (Ring) return pos < sink ? pos : sink + (pos - sink) % (capacity - sink);
    else return pos;
  }
  LCKV_HD std::int64_t offset(int seq, int pos, int head) const {
    return seq * seq_stride + (static_cast<std::int64_t>(physical(pos)) * kv_heads + head) * head_dim;
  }
  LCKV_HD T* key(int seq, int pos, int head) const { return k + offset(seq, pos, head); }
  LCKV_HD T* value(int seq, int pos, int head) const { return v + offset(seq, pos, head); }
};

template <class T>
using ContiguousSlot = StridedSlot<T, false>;
template <class T>
using RingSlot = StridedSlot<T, true>;

/// Paged storage: a sequence's positions live in fixed-size pages named by its
/// row of the block table. A page holds every slot: [slot][page_size][kv_head][head_dim].
template <class T>
struct PagedSlot {
  T* k_pool = nullptr;
  T* v_pool = nullptr;
  const int* block_table = nullptr;  ///< [max_sequences, max_pages_per_seq] page ids
  int max_pages_per_seq = 0;
  int page_size = 0;
  std::int64_t page_stride = 0;  ///< elements per page (all slots)
  std::int64_t slot_offset = 0;  ///< elements from a page's start to this slot
  int kv_heads = 0;
  int head_dim = 0;

  LCKV_HD std::int64_t offset(int seq, int pos, int head) const {
    const int page = block_table[seq * max_pages_per_seq + pos / page_size];
    return page * page_stride + slot_offset +
           (static_cast<std::int64_t>(pos % page_size) * kv_heads + head) * head_dim;
  }
  LCKV_HD T* key(int seq, int pos, int head) const { return k_pool + offset(seq, pos, head); }
  LCKV_HD T* value(int seq, int pos, int head) const { return v_pool + offset(seq, pos, head); }
};

}  // namespace lckv
