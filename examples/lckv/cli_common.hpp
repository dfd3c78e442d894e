#pragma once
// Shared pieces of the `lckv` program: how variants, shapes and dtypes are named
// on the command line, a progress bar on stderr, and table printing.

#include <CLI/CLI.hpp>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <unistd.h>

#include "lckv/lckv.hpp"

namespace lckv::cli {

/// How a layer plan is chosen on the command line.
struct PlanOptions {
  std::string layer_types;  // wins when given
  std::string variant = "lckv";
  int layers = 0;  // 0: the shape's layer count
  std::string warmup = "sandwich:2";
  std::string select = "top";
  int group = 2;
};

inline void add_plan_options(CLI::App& cmd, PlanOptions& o) {
  cmd.add_option("--layer-types", o.layer_types, "explicit layer_types, e.g. 0_6_6_6_6_6_6_7");
  cmd.add_option("--variant", o.variant, "standard | lckv | pure-top | middle | cla | yoco | mix")
      ->check(CLI::IsMember({"standard", "lckv", "pure-top", "middle", "cla", "yoco", "mix"}));
  cmd.add_option("--layers", o.layers, "number of layers (default: the shape's)")->check(CLI::Range(1, kMaxLayers));
  cmd.add_option("--warmup", o.warmup, "lckv warm-up schedule: bottom:W | top:W | sandwich:W");
  cmd.add_option("--select", o.select, "lckv KV-layer selection: top | middle | bottom")
      ->check(CLI::IsMember({"top", "middle", "bottom"}));
  cmd.add_option("--group", o.group, "cla group size")->check(CLI::PositiveNumber);
}

/// The warm-up schedule named "kind:w"; throws CLI::ValidationError naming --warmup.
template <class F>
decltype(auto) with_warmup(const std::string& spec, F&& f) {
  const auto colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  int w = 0;
  try {
    std::size_t used = 0;
    w = colon == std::string::npos ? -1 : std::stoi(spec.substr(colon + 1), &used);
    if (colon != std::string::npos && used != spec.size() - colon - 1) w = -1;
  } catch (const std::exception&) {
    w = -1;
  }
  if (w < 0) throw CLI::ValidationError("--warmup", "\"" + spec + "\", expected bottom:W, top:W or sandwich:W with W >= 0");
  if (kind == "bottom") return f(warmup::Bottom{w});
  if (kind == "top") return f(warmup::Top{w});
  if (kind == "sandwich") return f(warmup::Sandwich{w});
  throw CLI::ValidationError("--warmup", "\"" + kind + "\", expected bottom, top or sandwich");
}

/// The plan the options describe, for a model of `num_layers` layers.
inline LayerPlan make_plan(const PlanOptions& o, int num_layers) {
  if (!o.layer_types.empty()) return parse_layer_types(o.layer_types);
  const int L = o.layers > 0 ? o.layers : num_layers;
  if (o.variant == "standard") return plans::standard(L);
  if (o.variant == "pure-top") return plans::pure_top(L);
  if (o.variant == "cla") return plans::cla(L, o.group);
  if (o.variant == "middle")
    return with_warmup(o.warmup, [&](auto warm) { return plans::lckv(L, warm, select::Middle{}); });
  if (o.variant == "yoco") return plans::yoco(L);
  if (o.variant == "mix") return plans::mix_attention(L);
  return with_warmup(o.warmup, [&](auto warm) {
    if (o.select == "middle") return plans::lckv(L, warm, select::Middle{});
    if (o.select == "bottom") return plans::lckv(L, warm, select::Bottom{});
    return plans::lckv(L, warm, select::Top{});
  });
}

/// Built-in model shapes by name.
inline ModelShape shape_by_name(const std::string& name) {
  if (name == "llama-tiny") return configs::llama_tiny_shape();
  if (name == "tinyllama-1.1b") return configs::tinyllama_1b_shape();
  if (name == "llama2-7b") return configs::llama2_7b_shape();
  throw CLI::ValidationError("--shape", "\"" + name + "\", expected llama-tiny, tinyllama-1.1b or llama2-7b");
}
inline const std::vector<std::string>& shape_names() {
  static const std::vector<std::string> names{"llama-tiny", "tinyllama-1.1b", "llama2-7b"};
  return names;
}

inline int dtype_bytes(const std::string& dtype) {
  if (dtype == "fp32") return 4;
  if (dtype == "bf16" || dtype == "fp16") return 2;
  throw CLI::ValidationError("--dtype", "\"" + dtype + "\", expected fp32, bf16 or fp16");
}

/// Token ids separated by commas and/or white space ("1,2,3" or "1 2 3");
/// throws CLI::ValidationError naming `option` and the bad item.
inline std::vector<int> parse_ids(const std::string& text, const std::string& option) {
  std::vector<int> ids;
  std::string item;
  auto flush = [&] {
    if (item.empty()) return;
    try {
      std::size_t used = 0;
      const long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > 0x7fffffff) throw std::invalid_argument(item);
      ids.push_back(static_cast<int>(v));
    } catch (const std::exception&) {
      throw CLI::ValidationError(option, "item " + std::to_string(ids.size()) + " \"" + item +
                                             "\" is not a non-negative integer token id (expected e.g. 1,15043,3186)");
    }
    item.clear();
  };
  for (char c : text) {
    if (c == ',' || std::isspace(static_cast<unsigned char>(c))) flush();
    else item += c;
  }
  flush();
  return ids;
}

/// A one-line progress bar on stderr, redrawn in place at most every 100 ms;
/// only on a terminal, so redirected logs stay clean.
class Progress {
public:
  Progress(std::string label, long total)
      : label_(std::move(label)), total_(total > 0 ? total : 1), enabled_(isatty(fileno(stderr)) != 0) {}
  void update(long done) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int width = 30, filled = static_cast<int>(width * std::min(done, total_) / total_);
    std::fprintf(stderr, "\r%-24s [%s%s] %ld/%ld", label_.c_str(), std::string(static_cast<std::size_t>(filled), '#').c_str(),
                 std::string(static_cast<std::size_t>(width - filled), '.').c_str(), done, total_);
    if (done >= total_) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

private:
  std::string label_;
  long total_;
  bool enabled_;
  std::chrono::steady_clock::time_point last_{};
};

/// Prints rows as an aligned text table.
inline void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& r : rows)
    for (std::size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], r[c].size());
  auto line = [&](const std::vector<std::string>& r) {
    for (std::size_t c = 0; c < r.size(); ++c) std::printf(c ? "  %*s" : "%-*s", static_cast<int>(width[c]), r[c].c_str());
    std::printf("\n");
  };
  line(header);
  std::size_t total = 0;
  for (auto w : width) total += w + 2;
  std::printf("%s\n", std::string(total - 2, '-').c_str());
  for (const auto& r : rows) line(r);
}

inline std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

/// Throws unless `device` can run here: "cpu" always; "cuda" only in a build with
/// the CUDA backend (LCKV_WITH_CUDA) on a machine with a CUDA device.
void require_device(const std::string& device);

// Subcommands, one file each.
void add_plan_command(CLI::App& app);
void add_compare_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_perplexity_command(CLI::App& app);

}  // namespace lckv::cli
