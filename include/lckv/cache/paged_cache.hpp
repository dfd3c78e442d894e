#pragma once
/// \file paged_cache.hpp
/// A block table over a pool of fixed-size pages. A sequence takes pages as it
/// grows and returns them when it is truncated or closed, so memory follows the
/// tokens actually held rather than the longest possible sequence.

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "lckv/cache/memory.hpp"
#include "lckv/cache/sequence_table.hpp"
#include "lckv/cache/slot_view.hpp"
#include "lckv/core/buffer.hpp"

namespace lckv {

template <class T, class Memory = HostMemory>
class PagedCache {
public:
  using value_type = T;
  using Slot = PagedSlot<T>;

  /// `max_length`: the longest sequence (sets the block table's width).
  PagedCache(const CacheGeometry& g, int max_sequences, int max_length, int num_pages, int page_size)
      : g_(checked_geometry(g, sizeof(T))),
        table_(max_sequences),
        max_length_(max_length),
        page_size_(page_size),
        num_pages_(num_pages) {
    if (page_size < 1) throw InvalidArgument("paged cache: page_size = " + std::to_string(page_size) + ", expected >= 1");
    if (num_pages < 1) throw InvalidArgument("paged cache: num_pages = " + std::to_string(num_pages) + ", expected >= 1");
    if (max_length < 1) throw InvalidArgument("cache: max_length = " + std::to_string(max_length) + ", expected >= 1");
    max_pages_per_seq_ = pages_for(max_length, page_size);
    host_table_.assign(static_cast<std::size_t>(max_sequences) * max_pages_per_seq_, -1);
    pages_of_.resize(static_cast<std::size_t>(max_sequences));
    for (int p = num_pages - 1; p >= 0; --p) free_pages_.push_back(p);
    const std::size_t n = page_elems() * static_cast<std::size_t>(num_pages);
    k_ = typename Memory::template Buffer<T>(n);
    v_ = typename Memory::template Buffer<T>(n);
    table_buf_ = typename Memory::template Buffer<int>(host_table_.size());
    sync_table();
  }

  static std::size_t bytes_required(const CacheGeometry& g, int num_pages, int page_size) {
    return paged_cache_bytes(g, num_pages, page_size);
  }

  int num_slots() const { return g_.num_slots; }
  int max_sequences() const { return table_.max_sequences(); }
  int capacity() const { return max_length_; }
  int max_chunk() const { return INT_MAX; }
  int page_size() const { return page_size_; }
  int num_pages() const { return num_pages_; }
  int free_pages() const { return static_cast<int>(free_pages_.size()); }
  int pages_held(int seq) const { return static_cast<int>(pages_of_[static_cast<std::size_t>(seq)].size()); }

  int open() { return table_.open(); }
  void close(int seq) {
    truncate(seq, 0);
    table_.close(seq);
  }
  bool is_open(int seq) const { return table_.is_open(seq); }
  int length(int seq) const { return table_.length(seq); }

  /// Takes the pages for n positions, or throws OutOfCapacity taking none.
  void reserve(int seq, int n) {
    table_.check_room(seq, n, max_length_);
    auto& held = pages_of_[static_cast<std::size_t>(seq)];
    const int need = pages_for(n, page_size_) - static_cast<int>(held.size());
    if (need <= 0) return;
    if (need > free_pages())
      throw OutOfCapacity("paged cache: sequence " + std::to_string(seq) + " needs " + std::to_string(need) +
                          " more pages of " + std::to_string(page_size_) + " positions, " +
                          std::to_string(free_pages()) + " of " + std::to_string(num_pages_) + " are free");
    for (int i = 0; i < need; ++i) {
      const int page = free_pages_.back();
      free_pages_.pop_back();
      host_table_[static_cast<std::size_t>(seq) * max_pages_per_seq_ + held.size()] = page;
      held.push_back(page);
    }
    sync_table();
  }
  /// Back to n positions; pages past them return to the pool.
  void truncate(int seq, int n) {
    table_.check(seq);
    n = std::max(n, 0);
    auto& held = pages_of_[static_cast<std::size_t>(seq)];
    const std::size_t keep = static_cast<std::size_t>(pages_for(n, page_size_));
    while (held.size() > keep) {
      free_pages_.push_back(held.back());
      host_table_[static_cast<std::size_t>(seq) * max_pages_per_seq_ + held.size() - 1] = -1;
      held.pop_back();
    }
    if (table_.length(seq) > n) table_.set_length(seq, n);
    sync_table();
  }
  void commit(int seq, int n) { table_.set_length(seq, n); }

  Slot slot(int s) const {
    return Slot{const_cast<T*>(k_.data()),
                const_cast<T*>(v_.data()),
                table_buf_.data(),
                max_pages_per_seq_,
                page_size_,
                static_cast<std::int64_t>(page_elems()),
                static_cast<std::int64_t>(s) * page_size_ * static_cast<std::int64_t>(g_.elems_per_position()),
                g_.kv_heads,
                g_.head_dim};
  }
  std::size_t allocated_bytes() const { return k_.bytes() + v_.bytes(); }

private:
  std::size_t page_elems() const {
    return g_.elems_per_position() * static_cast<std::size_t>(g_.num_slots) * static_cast<std::size_t>(page_size_);
  }
  void sync_table() { Memory::upload(table_buf_, host_table_.data(), host_table_.size()); }

  CacheGeometry g_;
  SequenceTable table_;
  int max_length_;
  int page_size_;
  int num_pages_;
  int max_pages_per_seq_ = 0;
  std::vector<int> host_table_;
  std::vector<std::vector<int>> pages_of_;
  std::vector<int> free_pages_;
  typename Memory::template Buffer<T> k_, v_;
  typename Memory::template Buffer<int> table_buf_;
};

}  // namespace lckv
