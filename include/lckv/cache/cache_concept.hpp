#pragma once
/// \file cache_concept.hpp
/// What the model needs from a KV cache, whatever its layout. A cache holds
/// only the layers that compute KV ("slots"); sequences are opened, grown
/// (reserve, then commit once written) and closed, which frees their memory.

#include <climits>
#include <concepts>
#include <cstddef>

namespace lckv {

template <class C>
concept KvCacheStore = requires(C& c, const C& cc, int seq, int n) {
  typename C::Slot;
  typename C::value_type;
  { cc.num_slots() } -> std::same_as<int>;
  { cc.max_sequences() } -> std::same_as<int>;
  { c.open() } -> std::same_as<int>;
  { c.close(seq) };
  { cc.is_open(seq) } -> std::same_as<bool>;
  { cc.length(seq) } -> std::same_as<int>;
  { cc.capacity() } -> std::same_as<int>;
  { cc.max_chunk() } -> std::same_as<int>;
  { c.reserve(seq, n) };   // room for n positions or OutOfCapacity, all-or-nothing
  { c.truncate(seq, n) };  // back to n positions, freeing what reserve took
  { c.commit(seq, n) };    // n positions are now written
  { cc.slot(n) } -> std::same_as<typename C::Slot>;
  { cc.allocated_bytes() } -> std::same_as<std::size_t>;
};

}  // namespace lckv
