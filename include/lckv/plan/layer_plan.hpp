#pragma once
/// \file layer_plan.hpp
/// Which layer's keys/values each layer attends to: the `layer_types` of
/// DESIGN.md §2 as a value type usable at compile time and at run time.
///
/// \code
///   constexpr auto plan = lckv::parse_layer_types("0_2_2_3");
///   static_assert(plan.attends_top(1) && plan.num_kv_layers() == 3);
///   std::string s = plan.to_string();   // "0_2_2_3"
/// \endcode

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "lckv/core/error.hpp"

namespace lckv {

/// The largest model depth a plan can describe (Llama-3 405B has 126 layers).
inline constexpr int kMaxLayers = 256;

/// One token of `layer_types`: layer i attends to the KV of `attends_to`,
/// through a sliding window when `sliding` (the trailing `s`).
struct LayerSpec {
  int attends_to = 0;
  bool sliding = false;
  friend constexpr bool operator==(const LayerSpec&, const LayerSpec&) = default;
};

/// Per-layer KV sharing of a decoder. Everything else (which layers compute KV,
/// which own a cache slot, which attend to a layer above) is derived.
class LayerPlan {
public:
  constexpr LayerPlan() = default;

  /// Appends a layer; throws PlanError past kMaxLayers. Validity of the targets
  /// is checked by validate() once the plan is complete.
  constexpr LayerPlan& push(LayerSpec spec) {
    if (num_layers_ >= kMaxLayers) throw_too_many_layers();
    specs_[static_cast<std::size_t>(num_layers_++)] = spec;
    return *this;
  }

  constexpr int num_layers() const { return num_layers_; }
  constexpr const LayerSpec& operator[](int i) const { return specs_[static_cast<std::size_t>(i)]; }
  constexpr LayerSpec& operator[](int i) { return specs_[static_cast<std::size_t>(i)]; }

  constexpr int attends_to(int i) const { return (*this)[i].attends_to; }
  constexpr bool sliding(int i) const { return (*this)[i].sliding; }
  /// Layer i reads KV of a layer above it: a cyclic dependency across tokens.
  constexpr bool attends_top(int i) const { return attends_to(i) > i; }
  /// Layer i appears as a target somewhere, so it has k/v projections and a cache slot.
  constexpr bool computes_kv(int i) const {
    for (int l = 0; l < num_layers_; ++l)
      if (attends_to(l) == i) return true;
    return false;
  }
  /// Number of layers that compute (and cache) KV.
  constexpr int num_kv_layers() const {
    int n = 0;
    for (int l = 0; l < num_layers_; ++l) n += computes_kv(l) ? 1 : 0;
    return n;
  }
  /// Cache slot of a KV-computing layer (its rank among them), -1 otherwise.
  constexpr int kv_slot(int i) const {
    if (!computes_kv(i)) return -1;
    int slot = 0;
    for (int l = 0; l < i; ++l) slot += computes_kv(l) ? 1 : 0;
    return slot;
  }
  /// The layer owning cache slot s (inverse of kv_slot).
  constexpr int layer_of_slot(int s) const {
    for (int l = 0; l < num_layers_; ++l)
      if (computes_kv(l) && s-- == 0) return l;
    return -1;
  }
  /// Whether every layer reading layer t's KV uses a sliding window, so a ring
  /// buffer of the window suffices for t (YOCO's lower half).
  constexpr bool only_windowed_readers(int t) const {
    bool any = false;
    for (int l = 0; l < num_layers_; ++l) {
      if (attends_to(l) != t) continue;
      if (!sliding(l)) return false;
      any = true;
    }
    return any;
  }
  constexpr bool any_attends_top() const {
    for (int l = 0; l < num_layers_; ++l)
      if (attends_top(l)) return true;
    return false;
  }

  /// Throws PlanError unless the plan has at least one layer and every target is in [0, L).
  constexpr const LayerPlan& validate() const {
    if (num_layers_ == 0) throw_plan_error("a layer plan needs at least one layer");
    for (int l = 0; l < num_layers_; ++l)
      if (attends_to(l) < 0 || attends_to(l) >= num_layers_) throw_target_out_of_range(l);
    return *this;
  }

  /// The canonical `layer_types` string, e.g. "0s_1s_1_1".
  std::string to_string() const {
    std::string out;
    for (int l = 0; l < num_layers_; ++l) {
      if (l) out += '_';
      out += std::to_string(attends_to(l));
      if (sliding(l)) out += 's';
    }
    return out;
  }

  friend constexpr bool operator==(const LayerPlan& a, const LayerPlan& b) {
    if (a.num_layers_ != b.num_layers_) return false;
    for (int l = 0; l < a.num_layers_; ++l)
      if (!(a[l] == b[l])) return false;
    return true;
  }

private:
  [[noreturn]] static void throw_plan_error(const char* what) { throw PlanError(what); }
  [[noreturn]] static void throw_too_many_layers() {
    throw PlanError("layer plan: more than " + std::to_string(kMaxLayers) + " layers");
  }
  [[noreturn]] void throw_target_out_of_range(int l) const {
    throw PlanError("layer plan: layer " + std::to_string(l) + " attends to layer " +
                    std::to_string(attends_to(l)) + ", expected a layer in [0, " +
                    std::to_string(num_layers_) + ")");
  }

  int num_layers_ = 0;
  std::array<LayerSpec, kMaxLayers> specs_{};
};

namespace detail {
[[noreturn]] inline void throw_bad_token(std::string_view text, int position, std::string_view token,
                                         const char* why) {
  throw PlanError("layer_types \"" + std::string(text) + "\": token " + std::to_string(position) + " \"" +
                  std::string(token) + "\" " + why);
}
}  // namespace detail

/// Parses `layer_types` (DESIGN.md §2): tokens `^\d+s?$` joined by '_'.
/// With `expected_layers` >= 0 the count must match (config.json's num_hidden_layers).
/// Throws PlanError naming the token, its position and what was expected.
constexpr LayerPlan parse_layer_types(std::string_view text, int expected_layers = -1) {
  if (text.empty()) throw PlanError("layer_types is empty; expected tokens like \"0_1_2\"");
  LayerPlan plan;
  std::size_t begin = 0;
  int position = 0;
  while (true) {
    std::size_t end = text.find('_', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view token = text.substr(begin, end - begin);
    std::size_t digits = 0;
    long value = 0;
    while (digits < token.size() && token[digits] >= '0' && token[digits] <= '9') {
      value = value * 10 + (token[digits] - '0');
      if (value > kMaxLayers) detail::throw_bad_token(text, position, token, "is out of range");
      ++digits;
    }
    const bool sliding = digits < token.size() && token[digits] == 's';
    if (digits == 0 || digits + (sliding ? 1u : 0u) != token.size())
      detail::throw_bad_token(text, position, token, "is not of the form <layer>[s], e.g. \"3\" or \"3s\"");
    if (plan.num_layers() == kMaxLayers)
      detail::throw_bad_token(text, position, token, "exceeds the maximum number of layers");
    plan.push({static_cast<int>(value), sliding});
    ++position;
    if (end == text.size()) break;
    begin = end + 1;
  }
  if (expected_layers >= 0 && plan.num_layers() != expected_layers)
    throw PlanError("layer_types \"" + std::string(text) + "\" has " + std::to_string(plan.num_layers()) +
                    " tokens, expected " + std::to_string(expected_layers) + " (num_hidden_layers)");
  for (int l = 0; l < plan.num_layers(); ++l)
    if (plan.attends_to(l) >= plan.num_layers()) {
      const std::size_t at = [&] {
        std::size_t p = 0;
        for (int k = 0; k < l; ++k) p = text.find('_', p) + 1;
        return p;
      }();
      const std::size_t stop = text.find('_', at);
      detail::throw_bad_token(text, l, text.substr(at, stop == std::string_view::npos ? text.size() - at : stop - at),
                              ("attends to a layer outside [0, " + std::to_string(plan.num_layers()) + ")").c_str());
    }
  return plan;
}

}  // namespace lckv
