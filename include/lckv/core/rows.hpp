#pragma once
/// \file rows.hpp
/// Which sequence and absolute position each activation row belongs to.

namespace lckv {

/// Row r of a batch's activations: token at position `pos` of cache sequence `seq`.
struct RowInfo {
  int seq = 0;
  int pos = 0;
};

}  // namespace lckv
