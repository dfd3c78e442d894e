#pragma once
/// \file sequence_table.hpp
/// Which sequence ids of a cache are in use and how many positions each holds.

#include <string>
#include <vector>

#include "lckv/core/error.hpp"

namespace lckv {

class SequenceTable {
public:
  explicit SequenceTable(int max_sequences) : length_(static_cast<std::size_t>(max_sequences), -1) {
    if (max_sequences < 1)
      throw InvalidArgument("cache: max_sequences = " + std::to_string(max_sequences) + ", expected >= 1");
  }
  int max_sequences() const { return static_cast<int>(length_.size()); }
  /// Takes the lowest free id; throws OutOfCapacity when all are in use.
  int open() {
    for (std::size_t s = 0; s < length_.size(); ++s)
      if (length_[s] < 0) {
        length_[s] = 0;
        return static_cast<int>(s);
      }
    throw OutOfCapacity("cache: all " + std::to_string(length_.size()) + " sequence slots are in use");
  }
  void close(int seq) {
    check(seq);
    length_[static_cast<std::size_t>(seq)] = -1;
  }
  bool is_open(int seq) const {
    return seq >= 0 && seq < max_sequences() && length_[static_cast<std::size_t>(seq)] >= 0;
  }
  int length(int seq) const {
    check(seq);
    return length_[static_cast<std::size_t>(seq)];
  }
  void set_length(int seq, int n) {
    check(seq);
    length_[static_cast<std::size_t>(seq)] = n;
  }
  int num_open() const {
    int n = 0;
    for (int l : length_) n += l >= 0;
    return n;
  }
  /// Throws OutOfCapacity unless sequence `seq` (open) may hold n positions of at most `max_length`.
  void check_room(int seq, int n, int max_length) const {
    check(seq);
    if (n > max_length)
      throw OutOfCapacity("cache: sequence " + std::to_string(seq) + " needs " + std::to_string(n) +
                          " positions, the cache holds " + std::to_string(max_length) + " per sequence");
  }
  void check(int seq) const {
    if (!is_open(seq))
      throw InvalidArgument("cache: sequence " + std::to_string(seq) + " is not open (max_sequences = " +
                            std::to_string(max_sequences()) + ")");
  }

private:
  std::vector<int> length_;  // -1: free
};

}  // namespace lckv
