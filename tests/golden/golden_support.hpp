#pragma once
/// \file golden_support.hpp
/// Reading the golden fixtures of tests/golden/make_golden.py (manifest.json, golden.json,
/// golden.safetensors) and comparing logits with them: shared by the CPU golden test
/// (tests/io/test_golden.cpp) and the CUDA one (tests/cuda/test_cuda.cpp).

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <utility>

#include "lckv/io/checkpoint.hpp"
#include "lckv/lckv.hpp"

namespace lckv::golden {

using json = nlohmann::json;

constexpr int kFormatVersion = 1;

inline json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  REQUIRE_MESSAGE(in.good(), "cannot open " << p << " (regenerate: python3 tests/golden/make_golden.py, see its header)");
  return json::parse(in);
}

/// manifest.json of a fixture directory, its format checked.
inline json read_manifest(const std::filesystem::path& root) {
  json manifest = read_json(root / "manifest.json");
  REQUIRE(manifest.at("format_version").get<int>() == kFormatVersion);
  return manifest;
}

/// golden.json of one case, its format checked.
inline json read_case(const std::filesystem::path& dir) {
  json g = read_json(dir / "golden.json");
  REQUIRE(g.at("format") == "lckv-golden");
  REQUIRE(g.at("format_version").get<int>() == kFormatVersion);
  return g;
}

/// max |got - want| / max |want| over rows of `vocab`, and where the largest difference is
/// (a non-finite `got` counts as infinitely far).
struct Diff {
  double rel = 0;
  int worst_row = -1, worst_col = -1;
};

inline Diff compare(std::span<const float> got, std::span<const float> want, int vocab) {
  REQUIRE(got.size() == want.size());
  double scale = 0, worst = 0;
  for (float w : want) scale = std::max(scale, static_cast<double>(std::fabs(w)));
  Diff d;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = std::isfinite(got[i]) ? std::fabs(static_cast<double>(got[i]) - want[i]) : INFINITY;
    if (e > worst) {
      worst = e;
      d.worst_row = static_cast<int>(i) / vocab;
      d.worst_col = static_cast<int>(i) % vocab;
    }
  }
  d.rel = worst / std::max(scale, 1e-30);
  return d;
}

/// Rows of `got` and `want` ([rows, vocab]) whose argmax differs.
inline int argmax_mismatches(std::span<const float> got, std::span<const float> want, int vocab) {
  int n = 0;
  for (std::size_t r = 0; r * vocab < want.size(); ++r)
    n += argmax(got.subspan(r * vocab, vocab)) != argmax(want.subspan(r * vocab, vocab));
  return n;
}

/// The prefill mode a check asks for ("any": the engine's choice).
inline PrefillMode mode_of(const json& check) {
  const std::string p = check.at("prefill");
  return p == "any" ? PrefillMode::Auto : parse_prefill_mode(p);
}

/// The model's config with the check's iterative pass counts, when it names them.
inline ModelConfig config_for(const LoadedModel& m, const json& check) {
  ModelConfig c = m.config();
  if (check.contains("forward_passes"))
    c.passes = PassCounts{check["forward_passes"].get<int>(), check["backward_passes"].get<int>()};
  return c;
}

/// Calls f(model, check, golden) for every check of every case in a fixture directory, with the
/// case's and the check's names captured for doctest; returns {cases, checks}.
template <class F>
std::pair<int, int> for_each_check(const std::filesystem::path& root, F&& f) {
  const json manifest = read_manifest(root);
  int cases = 0, checks = 0;
  for (const auto& c : manifest.at("cases")) {
    const std::string name = c.at("case");
    CAPTURE(name);
    const LoadedModel m = load_model_dir(root / name);
    const json g = read_case(root / name);
    const SafetensorsFile golden(root / name / "golden.safetensors");
    // HF keeps RoPE frequencies in float32 whatever the weights' dtype; fixtures say so.
    if (g.at("source") == "hf-transformers") REQUIRE(g.at("rope_inv_freq") == "float32");
    for (const auto& check : g.at("checks")) {
      const std::string label = check.at("name");
      CAPTURE(label);
      f(m, check, golden);
      ++checks;
    }
    ++cases;
  }
  return {cases, checks};
}

/// Whether the check fixes a prefill mode the engine must report using (an acyclic plan is exact
/// in one pass, so lckv reports it as iterative whatever was asked).
inline bool mode_is_checked(const ModelConfig& config, const json& check) {
  return check.at("prefill") != "any" && config.plan.any_attends_top();
}

}  // namespace lckv::golden
