#pragma once
/// \file config_json.hpp
/// HF `config.json` <-> ModelConfig, for model_type "llama" (a standard plan)
/// and "lckv-llama" (DESIGN.md §1: layer_types, forward_passes, backward_passes,
/// sliding_window, use_sequential, force_nodiag).
///
/// Both transformers forms are read: v4 (`rope_theta`, `torch_dtype`) and v5
/// (`rope_parameters: {rope_type, rope_theta}`, `dtype`, explicit `head_dim`).
/// Missing fields take HF LlamaConfig's defaults and DESIGN.md's for the LCKV ones.
///
/// \code
///   lckv::ConfigJson c = lckv::load_config_json("model/config.json");
///   c.config.plan.to_string();                  // "0_20_20_..._20_21"
///   nlohmann::json j = lckv::to_config_json(c);  // writes it back
/// \endcode

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "lckv/io/errors.hpp"
#include "lckv/model/config.hpp"
#include "lckv/plan/layer_plan.hpp"
#include "lckv/plan/variants.hpp"

namespace lckv {

/// The two transformers config forms.
enum class ConfigForm {
  V4,  ///< rope_theta, torch_dtype (what the LCKV authors' code, pinned to transformers 4.45, reads)
  V5,  ///< rope_parameters, dtype
};

/// A parsed config.json: the model, plus the fields lckv carries but does not compute with.
struct ConfigJson {
  ModelConfig config;
  std::string model_type = "llama";  ///< "llama" or "lckv-llama"
  std::string dtype = "float32";     ///< torch_dtype / dtype as written
  std::optional<int> bos_token_id;
  std::optional<int> eos_token_id;   ///< the first one when config.json gives a list
  ConfigForm form = ConfigForm::V5;  ///< the form it was read in
};

namespace detail {

/// The double whose shortest decimal is the float's (1e-5f -> 1e-05, not 9.99999974e-06).
inline double shortest_double(float f) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, f);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

class ConfigReader {
public:
  ConfigReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw FormatError(where_ + ": field \"" + field + "\" " + what);
  }
  const nlohmann::json* get(const char* field) const {
    auto it = j_.find(field);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  std::string describe(const nlohmann::json& v) const {
    std::string s = v.dump();
    if (s.size() > 40) s = s.substr(0, 37) + "...";
    return s;
  }
  long long integer(const nlohmann::json& v, const std::string& field, long long lo, long long hi) const {
    if (!v.is_number_integer()) fail(field, "is " + describe(v) + ", expected an integer");
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
      fail(field, "is " + describe(v) + ", expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    const long long x = v.is_number_unsigned() ? static_cast<long long>(v.get<std::uint64_t>()) : v.get<long long>();
    if (x < lo || x > hi)
      fail(field, "is " + std::to_string(x) + ", expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }
  int integer(const char* field, int fallback, int lo = 1, int hi = std::numeric_limits<int>::max()) const {
    const auto* v = get(field);
    return v ? static_cast<int>(integer(*v, field, lo, hi)) : fallback;
  }
  double number(const nlohmann::json& v, const std::string& field) const {
    if (!v.is_number()) fail(field, "is " + describe(v) + ", expected a number");
    const double x = v.get<double>();
    if (!std::isfinite(x) || !(x > 0)) fail(field, "is " + describe(v) + ", expected a positive number");
    return x;
  }
  double number(const char* field, double fallback) const {
    const auto* v = get(field);
    return v ? number(*v, field) : fallback;
  }
  bool boolean(const char* field, bool fallback) const {
    const auto* v = get(field);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(field, "is " + describe(*v) + ", expected true or false");
    return v->get<bool>();
  }
  std::string string(const char* field, const std::string& fallback) const {
    const auto* v = get(field);
    if (!v) return fallback;
    if (!v->is_string()) fail(field, "is " + describe(*v) + ", expected a string");
    return v->get<std::string>();
  }
  const std::string& where() const { return where_; }

private:
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace detail

/// Reads a parsed config.json. `where` names the file in messages.
/// Throws FormatError (wrong field type or value, unsupported model) or
/// PlanError (layer_types malformed, of the wrong length or out of range).
inline ConfigJson parse_config_json(const nlohmann::json& j, const std::string& where = "config.json") {
  if (!j.is_object()) throw FormatError(where + " is a JSON " + std::string(j.type_name()) + ", expected an object");
  detail::ConfigReader r(j, where);
  ConfigJson out;
  const auto* mt = r.get("model_type");
  if (!mt) r.fail("model_type", "is missing, expected \"llama\" or \"lckv-llama\"");
  out.model_type = r.string("model_type", "");
  if (out.model_type != "llama" && out.model_type != "lckv-llama")
    r.fail("model_type", "is \"" + out.model_type + "\", expected \"llama\" or \"lckv-llama\"");
  const bool is_lckv = out.model_type == "lckv-llama";

  ModelShape& s = out.config.shape;
  s.vocab_size = r.integer("vocab_size", 32000);
  s.hidden_size = r.integer("hidden_size", 4096);
  s.intermediate_size = r.integer("intermediate_size", 11008);
  s.num_layers = r.integer("num_hidden_layers", 32, 1, kMaxLayers);
  s.num_heads = r.integer("num_attention_heads", 32);
  s.num_kv_heads = r.integer("num_key_value_heads", s.num_heads);
  if (s.num_heads > s.hidden_size && !r.get("head_dim"))
    r.fail("num_attention_heads", "is " + std::to_string(s.num_heads) + ", more than hidden_size = " + std::to_string(s.hidden_size));
  if (!r.get("head_dim") && s.hidden_size % s.num_heads != 0)
    r.fail("num_attention_heads", "is " + std::to_string(s.num_heads) + ", which does not divide hidden_size = " +
                                      std::to_string(s.hidden_size) + " (give head_dim explicitly)");
  s.head_dim = r.integer("head_dim", s.hidden_size / s.num_heads);
  // Every tensor dimension must fit an int: q_dim = heads x head_dim, and so on.
  constexpr long long kIntMax = std::numeric_limits<int>::max();
  if (static_cast<long long>(s.num_heads) * s.head_dim > kIntMax)
    r.fail("head_dim", "is " + std::to_string(s.head_dim) + ": num_attention_heads x head_dim exceeds " + std::to_string(kIntMax));
  s.rms_norm_eps = static_cast<float>(r.number("rms_norm_eps", 1e-6));
  s.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  out.config.max_position_embeddings = r.integer("max_position_embeddings", 2048);

  // RoPE: v5 rope_parameters, else v4 rope_theta (+ rope_scaling, which must be absent).
  out.form = ConfigForm::V4;
  double theta = 10000.0;
  if (const auto* rp = r.get("rope_parameters")) {
    out.form = ConfigForm::V5;
    if (!rp->is_object()) r.fail("rope_parameters", "is " + r.describe(*rp) + ", expected an object");
    detail::ConfigReader rr(*rp, where + ": rope_parameters");
    const std::string type = rr.string("rope_type", "default");
    if (type != "default") r.fail("rope_parameters.rope_type", "is \"" + type + "\", expected \"default\" (RoPE scaling is not supported)");
    theta = rr.number("rope_theta", r.number("rope_theta", 10000.0));
  } else {
    theta = r.number("rope_theta", 10000.0);
  }
  if (const auto* rs = r.get("rope_scaling")) {
    detail::ConfigReader rr(*rs, where + ": rope_scaling");
    if (!rs->is_object()) r.fail("rope_scaling", "is " + r.describe(*rs) + ", expected null");
    const std::string type = rr.string("rope_type", rr.string("type", "default"));
    if (type != "default") r.fail("rope_scaling", "has type \"" + type + "\", expected null (RoPE scaling is not supported)");
  }
  s.rope_theta = static_cast<float>(theta);
  if (r.get("dtype")) {
    out.form = ConfigForm::V5;
    out.dtype = r.string("dtype", "float32");
  } else {
    out.dtype = r.string("torch_dtype", "float32");
  }

  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu") r.fail("hidden_act", "is \"" + act + "\", expected \"silu\"");
  if (r.boolean("attention_bias", false)) r.fail("attention_bias", "is true, expected false (lckv has no biases)");
  if (r.boolean("mlp_bias", false)) r.fail("mlp_bias", "is true, expected false (lckv has no biases)");

  if (const auto* b = r.get("bos_token_id")) out.bos_token_id = static_cast<int>(r.integer(*b, "bos_token_id", 0, s.vocab_size - 1));
  if (const auto* e = r.get("eos_token_id")) {
    if (e->is_array()) {
      if (!e->empty()) out.eos_token_id = static_cast<int>(r.integer((*e)[0], "eos_token_id", 0, s.vocab_size - 1));
    } else {
      out.eos_token_id = static_cast<int>(r.integer(*e, "eos_token_id", 0, s.vocab_size - 1));
    }
  }

  // The plan. A plain llama may carry v5-style layer_types (["full_attention", ...]).
  const auto* lt = r.get("layer_types");
  if (is_lckv && lt) {
    if (!lt->is_string()) r.fail("layer_types", "is " + r.describe(*lt) + ", expected a string like \"0_2_2_3\"");
    try {
      out.config.plan = parse_layer_types(lt->get_ref<const std::string&>(), s.num_layers);
    } catch (const PlanError& e) {
      throw PlanError(where + ": " + e.what());
    }
  } else {
    if (lt) {
      if (!lt->is_array() || lt->size() != static_cast<std::size_t>(s.num_layers))
        r.fail("layer_types", "is " + r.describe(*lt) + ", expected " + std::to_string(s.num_layers) +
                                  " entries \"full_attention\" for model_type \"llama\"");
      for (const auto& t : *lt)
        if (!t.is_string() || t.get<std::string>() != "full_attention")
          r.fail("layer_types", "has entry " + r.describe(t) + ", expected \"full_attention\" for model_type \"llama\"");
    }
    out.config.plan = plans::standard(s.num_layers);
  }
  if (is_lckv) {
    out.config.passes.forward_passes = r.integer("forward_passes", 7, 0, 1 << 16);
    out.config.passes.backward_passes = r.integer("backward_passes", 2, 1, 1 << 16);
    out.config.attention.sliding_window = r.integer("sliding_window", 4096);
    out.config.use_sequential = r.boolean("use_sequential", false);
    out.config.attention.force_nodiag = r.boolean("force_nodiag", false);
  }
  try {
    out.config.validate();
  } catch (const PlanError& e) {
    throw PlanError(where + ": " + e.what());
  } catch (const Error& e) {
    throw FormatError(where + ": " + e.what());
  }
  return out;
}

/// Parses config.json text; throws FormatError naming `where` when it is not JSON.
inline ConfigJson parse_config_json_text(std::string_view text, const std::string& where = "config.json") {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(where + " is not JSON (" + e.what() + ")");
  }
  return parse_config_json(j, where);
}

inline ConfigJson load_config_json(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path.string() + ": cannot open (expected an HF config.json)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config_json_text(ss.str(), path.string());
}

/// Whether a config needs model_type "lckv-llama" (any non-standard plan or LCKV option).
inline bool needs_lckv_model_type(const ModelConfig& c) {
  return !(c.plan == plans::standard(c.shape.num_layers)) || c.attention.force_nodiag;
}

/// config.json for `c`. A standard plan is written as model_type "llama"
/// (LlamaForCausalLM) unless `c.model_type` says "lckv-llama"; any other plan as
/// "lckv-llama" (LCKVLlamaForCausalLM) with its LCKV fields.
inline nlohmann::json to_config_json(const ConfigJson& c) {
  const ModelShape& s = c.config.shape;
  const bool lckv = c.model_type == "lckv-llama" || needs_lckv_model_type(c.config);
  nlohmann::json j;
  j["architectures"] = {lckv ? "LCKVLlamaForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = lckv ? "lckv-llama" : "llama";
  j["vocab_size"] = s.vocab_size;
  j["hidden_size"] = s.hidden_size;
  j["intermediate_size"] = s.intermediate_size;
  j["num_hidden_layers"] = s.num_layers;
  j["num_attention_heads"] = s.num_heads;
  j["num_key_value_heads"] = s.num_kv_heads;
  j["head_dim"] = s.head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = detail::shortest_double(s.rms_norm_eps);
  j["max_position_embeddings"] = c.config.max_position_embeddings;
  j["tie_word_embeddings"] = s.tie_word_embeddings;
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  j["bos_token_id"] = c.bos_token_id ? nlohmann::json(*c.bos_token_id) : nlohmann::json(nullptr);
  j["eos_token_id"] = c.eos_token_id ? nlohmann::json(*c.eos_token_id) : nlohmann::json(nullptr);
  if (c.form == ConfigForm::V5) {
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", detail::shortest_double(s.rope_theta)}};
    j["dtype"] = c.dtype;
    // The LCKV authors' code (transformers 4.45) reads only rope_theta.
    if (lckv) j["rope_theta"] = detail::shortest_double(s.rope_theta);
  } else {
    j["rope_theta"] = detail::shortest_double(s.rope_theta);
    j["rope_scaling"] = nullptr;
    j["torch_dtype"] = c.dtype;
  }
  if (lckv) {
    j["layer_types"] = c.config.plan.to_string();
    j["forward_passes"] = c.config.passes.forward_passes;
    j["backward_passes"] = c.config.passes.backward_passes;
    j["sliding_window"] = c.config.attention.sliding_window;
    j["use_sequential"] = c.config.use_sequential;
    j["force_nodiag"] = c.config.attention.force_nodiag;
  }
  return j;
}

}  // namespace lckv
