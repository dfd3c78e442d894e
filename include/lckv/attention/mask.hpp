#pragma once
/// \file mask.hpp
/// Attention policies (DESIGN.md §3): which key positions j a query at
/// absolute position i may see. Small structs usable on host and device; a
/// backend iterates only over `keys(i)`, never over masked positions, so ring
/// caches that dropped old positions are never read out of their window.
///
/// \code
///   lckv::mask::SlidingWindow<lckv::mask::NoDiagonal> m{4};
///   auto k = m.keys(10);   // keys 7, 8, 9: window of 4 minus the diagonal
/// \endcode

#include <algorithm>
#include <concepts>

#include "lckv/core/macros.hpp"

namespace lckv {

/// Allowed keys: [0, sink_end) and [begin, end), with sink_end <= begin.
struct KeySpans {
  int sink_end = 0;
  int begin = 0;
  int end = 0;
  LCKV_HD int count() const { return sink_end + (end > begin ? end - begin : 0); }
  LCKV_HD bool contains(int j) const { return j < sink_end || (j >= begin && j < end); }
  /// StreamingLLM: a kept key's position in the cache (sink keys first, then the
  /// window), and the query's position right after its window's last key.
  LCKV_HD int cache_position(int j) const { return j < sink_end ? j : sink_end + (j - begin); }
  LCKV_HD int query_cache_position(int i) const { return sink_end + (i - begin); }
};

/// An attention policy: the key spans for a query position.
template <class P>
concept AttentionPolicy = requires(const P& p, int i) {
  { p.keys(i) } -> std::same_as<KeySpans>;
  { P::no_diagonal } -> std::convertible_to<bool>;
};

namespace mask {

/// j <= i.
struct Causal {
  static constexpr bool no_diagonal = false;
  static constexpr const char* name = "causal";
  LCKV_HD KeySpans keys(int i) const { return {0, 0, i + 1}; }
};

/// j < i: the target KV of token i does not exist yet (attends-top layers).
struct NoDiagonal {
  static constexpr bool no_diagonal = true;
  static constexpr const char* name = "no-diagonal";
  LCKV_HD KeySpans keys(int i) const { return {0, 0, i}; }
};

/// Base mask restricted to j > i - window (window keys including the diagonal).
template <AttentionPolicy Base>
struct SlidingWindow {
  int window = 1;
  static constexpr bool no_diagonal = Base::no_diagonal;
  static constexpr const char* name = Base::no_diagonal ? "no-diagonal+window" : "window";
  LCKV_HD KeySpans keys(int i) const {
    KeySpans s = Base{}.keys(i);
    s.begin = i - window + 1 > s.begin ? i - window + 1 : s.begin;
    return s;
  }
};

/// StreamingLLM: the first `sink` positions plus the base mask's last `window` positions.
template <AttentionPolicy Base>
struct SinkWindow {
  int sink = 0;
  int window = 1;
  static constexpr bool no_diagonal = Base::no_diagonal;
  static constexpr const char* name = Base::no_diagonal ? "no-diagonal+sink+window" : "sink+window";
  LCKV_HD KeySpans keys(int i) const {
    KeySpans s = SlidingWindow<Base>{window}.keys(i);
    s.sink_end = sink < s.begin ? sink : s.begin;  // sink positions inside the window count once
    if (s.sink_end > s.end) s.sink_end = s.end;
    return s;
  }
};

}  // namespace mask
}  // namespace lckv
