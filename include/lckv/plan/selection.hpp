#pragma once
/// \file selection.hpp
/// KV-layer selection strategies: which layer of the condensed block every
/// layer of the block attends to (the NAACL 2025 study's "top", "middle",
/// "bottom" choices).

#include <concepts>

#include "lckv/plan/warmup.hpp"

namespace lckv {

template <class S>
concept KvSelection = requires(const S& s, LayerBlock block) {
  { s.target(block) } -> std::same_as<int>;
  { S::name } -> std::convertible_to<const char*>;
};

namespace select {

/// The last layer of the block (LCKV): every lower layer of the block attends top.
struct Top {
  static constexpr const char* name = "top";
  constexpr int target(LayerBlock b) const { return b.end - 1; }
};

/// The middle layer of the block ((begin + end - 1) / 2, rounding down).
struct Middle {
  static constexpr const char* name = "middle";
  constexpr int target(LayerBlock b) const { return (b.begin + b.end - 1) / 2; }
};

/// The first layer of the block: no cyclic dependency at all.
struct Bottom {
  static constexpr const char* name = "bottom";
  constexpr int target(LayerBlock b) const { return b.begin; }
};

}  // namespace select
}  // namespace lckv
