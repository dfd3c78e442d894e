#pragma once
/// \file random.hpp
/// A small seeded generator with the same stream on every platform
/// (std::normal_distribution is implementation-defined).

#include <cmath>
#include <cstdint>
#include <utility>

namespace lckv {

/// SplitMix64: seeded, fast, portable.
class Rng {
public:
  explicit Rng(std::uint64_t seed = 0) : state_(seed) {}
  std::uint64_t next_u64() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  /// Standard normal (Box-Muller, one value per call).
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  /// Two independent standard normals (both outputs of one Box-Muller draw).
  std::pair<double, double> normal_pair() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
    return {r * std::cos(a), r * std::sin(a)};
  }
  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) { return n ? next_u64() % n : 0; }

private:
  std::uint64_t state_;
};

}  // namespace lckv
