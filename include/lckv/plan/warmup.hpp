#pragma once
/// \file warmup.hpp
/// Warm-up schedules: which layers keep their own KV in an LCKV model. The
/// layers that do not form one contiguous "condensed" block [begin, end);
/// a KV-layer selection strategy (selection.hpp) then picks the layer that the
/// whole block attends to.

#include <concepts>

namespace lckv {

/// A contiguous block of layers [begin, end).
struct LayerBlock {
  int begin = 0;
  int end = 0;
  constexpr int size() const { return end - begin; }
  constexpr bool contains(int l) const { return l >= begin && l < end; }
};

/// What a warm-up schedule must provide: the condensed block for L layers.
template <class W>
concept WarmupSchedule = requires(const W& w, int num_layers) {
  { w.condensed_block(num_layers) } -> std::same_as<LayerBlock>;
  { W::name } -> std::convertible_to<const char*>;
};

namespace warmup {

/// The bottom `w` layers keep their own KV; layers [w, L) are condensed.
struct Bottom {
  int w = 0;
  static constexpr const char* name = "bottom";
  constexpr LayerBlock condensed_block(int num_layers) const { return {w, num_layers}; }
};

/// The top `w` layers keep their own KV; layers [0, L - w) are condensed.
struct Top {
  int w = 0;
  static constexpr const char* name = "top";
  constexpr LayerBlock condensed_block(int num_layers) const { return {0, num_layers - w}; }
};

/// The paper's default: w/2 layers at the bottom and w - w/2 at the top keep their KV.
struct Sandwich {
  int w = 0;
  static constexpr const char* name = "sandwich";
  constexpr LayerBlock condensed_block(int num_layers) const { return {w / 2, num_layers - (w - w / 2)}; }
};

}  // namespace warmup
}  // namespace lckv
