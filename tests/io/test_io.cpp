// Checkpoint I/O: safetensors, config.json, model directories, conversion.
// Every malformed input of issue 3's "Bad input" list gets its exception here.

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "io_test_util.hpp"
#include "lckv/io/checkpoint.hpp"
#include "lckv/io/convert.hpp"

using namespace lckv;
using lckv::test::check_throws;
using lckv::test::safetensors_bytes;
using lckv::test::TempDir;
using lckv::test::tiny_config;
using lckv::test::write_file;

// ---------------------------------------------------------------- dtype conversions

TEST_CASE("f16 and bf16 conversions: known values and every f16 bit pattern round-trips") {
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);                 // rounds to inf
  CHECK(f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);    // smallest subnormal
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // a tie rounds to even
  CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(f16_to_f32(0x3555) == doctest::Approx(0.333251953125).epsilon(1e-12));
  CHECK(std::isinf(f16_to_f32(0x7c00)));
  CHECK(std::isnan(f16_to_f32(0x7e00)));
  int mismatches = 0;
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) continue;
    mismatches += f32_to_f16(f) != h;
  }
  CHECK(mismatches == 0);
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3f808000u)) == 0x3f80);  // tie to even
  CHECK(f32_to_bf16(std::bit_cast<float>(0x3f818000u)) == 0x3f82);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
}

// ---------------------------------------------------------------- round trips

static void check_same_weights(const HostWeights& a, const HostWeights& b) {
  REQUIRE(a.tensors().size() == b.tensors().size());
  for (const auto& t : a.tensors()) {
    REQUIRE(b.has(t.name));
    CHECK(b.info(t.name).shape == t.shape);
    CHECK_MESSAGE(std::memcmp(a.data(t.name), b.data(t.name), static_cast<std::size_t>(t.numel()) * 4) == 0,
                  t.name << " differs after the round trip");
  }
}

TEST_CASE("save -> load is bit-exact: single file, shards, lckv plans, tied") {
  for (const char* types : {"0_1_2", "0_2_2_3", "0s_1s_1_1", "2_2_2"}) {
    for (bool tied : {false, true}) {
      CAPTURE(types);
      CAPTURE(tied);
      const ModelConfig config = tiny_config(types, tied);
      const HostWeights w = HostWeights::random(config, 42, 0.3f);
      TempDir dir;
      ConfigJson meta;
      meta.bos_token_id = 1;
      meta.eos_token_id = 2;
      save_model_dir(dir.path(), w, meta);
      LoadedModel m = load_model_dir(dir.path());
      check_same_weights(w, m.weights);
      CHECK(m.config().plan == config.plan);
      CHECK(m.config().shape.rope_theta == config.shape.rope_theta);
      CHECK(m.config().shape.tie_word_embeddings == tied);
      CHECK(m.meta.model_type == (std::string(types) == "0_1_2" ? "llama" : "lckv-llama"));
      CHECK(m.meta.eos_token_id == 2);
      CHECK_FALSE(m.tokenizer_model.has_value());

      // Sharded: a shard per ~2 KiB, read back through the index.
      TempDir sharded;
      save_model_dir(sharded.path(), w, meta, SaveOptions{Dtype::F32, 2048});
      CHECK(std::filesystem::exists(sharded / "model.safetensors.index.json"));
      CHECK_FALSE(std::filesystem::exists(sharded / "model.safetensors"));
      SafetensorsCheckpoint ckpt(sharded.path());
      CHECK(ckpt.files().size() > 2);
      check_same_weights(w, load_model_dir(sharded.path()).weights);
    }
  }
}

TEST_CASE("F32 tensors are viewed in place; BF16 and F16 saves round to nearest even") {
  const ModelConfig config = tiny_config("0_2_2_3");
  const HostWeights w = HostWeights::random(config, 7, 0.5f);
  TempDir dir;
  save_model_dir(dir.path(), w);
  SafetensorsFile f(dir / "model.safetensors");
  CHECK(f.metadata().at("format") == "pt");
  const auto& e = f.at("model.layers.2.self_attn.k_proj.weight");
  auto view = f.view_f32(e);
  REQUIRE(view.has_value());
  const auto mapped = f.bytes(e);
  CHECK(reinterpret_cast<const std::byte*>(view->data()) == mapped.data());  // no copy
  CHECK(std::memcmp(view->data(), w.data(e.name), view->size_bytes()) == 0);

  for (Dtype d : {Dtype::BF16, Dtype::F16}) {
    CAPTURE(to_string(d));
    TempDir half;
    save_model_dir(half.path(), w, {}, SaveOptions{d, 0});
    LoadedModel m = load_model_dir(half.path());
    CHECK(m.meta.dtype == (d == Dtype::BF16 ? "bfloat16" : "float16"));
    SafetensorsFile hf(half / "model.safetensors");
    CHECK(hf.at("model.norm.weight").dtype == d);
    CHECK_FALSE(hf.view_f32(hf.at("model.norm.weight")).has_value());
    int wrong = 0;
    for (const auto& t : w.tensors())
      for (std::int64_t i = 0; i < t.numel(); ++i) {
        const float x = w.data(t.name)[i];
        const float expect = d == Dtype::BF16 ? bf16_to_f32(f32_to_bf16(x)) : f16_to_f32(f32_to_f16(x));
        wrong += m.weights.data(t.name)[i] != expect;
      }
    CHECK(wrong == 0);
  }
}

// ---------------------------------------------------------------- malformed safetensors

TEST_CASE("malformed safetensors files get a FormatError naming the file and tensor") {
  TempDir dir;
  const auto p = dir / "x.safetensors";
  const std::string good_header = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  write_file(p, safetensors_bytes(good_header, 16));
  CHECK(SafetensorsFile(p).at("a").numel() == 4);

  SUBCASE("truncated: shorter than the length prefix") {
    write_file(p, std::string("\x10\0\0", 3));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {p.string(), "truncated", "3 bytes"});
  }
  SUBCASE("empty file") {
    write_file(p, "");
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {p.string(), "truncated"});
  }
  SUBCASE("header length beyond the file") {
    std::string b = safetensors_bytes(good_header, 16);
    b[0] = static_cast<char>(0xff);
    b[1] = static_cast<char>(0x7f);
    write_file(p, b);
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {p.string(), "header length 32767", "beyond the file"});
  }
  SUBCASE("truncated buffer: the last tensor's offsets leave the file") {
    std::string b = safetensors_bytes(good_header, 16);
    b.resize(b.size() - 4);
    write_file(p, b);
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {p.string(), "\"a\"", "out of range", "12 bytes"});
  }
  SUBCASE("header that is not JSON") {
    write_file(p, safetensors_bytes("{\"a\": [1, 2", 0));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {p.string(), "is not JSON"});
  }
  SUBCASE("header that is JSON but not an object") {
    write_file(p, safetensors_bytes("[1,2]", 0));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {p.string(), "expected an object"});
  }
  SUBCASE("overlapping offsets") {
    write_file(p, safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},
                                        "b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                    16));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {p.string(), "\"a\"", "\"b\"", "overlap"});
  }
  SUBCASE("offsets out of range") {
    write_file(p, safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})", 16));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {"\"a\"", "out of range", "16 bytes"});
  }
  SUBCASE("offsets that end before they begin") {
    write_file(p, safetensors_bytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 16));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {"\"a\"", "end before they begin"});
  }
  SUBCASE("offsets that contradict dtype and shape") {
    write_file(p, safetensors_bytes(R"({"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,16]}})", 16));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {"\"a\"", "span 16 bytes, expected 8", "BF16 [4]"});
  }
  SUBCASE("unknown dtype") {
    write_file(p, safetensors_bytes(R"({"a":{"dtype":"F33","shape":[4],"data_offsets":[0,16]}})", 16));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {p.string(), "\"a\"", "unknown dtype \"F33\""});
  }
  SUBCASE("negative or fractional shape") {
    write_file(p, safetensors_bytes(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", 16));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {"\"a\"", "shape [-4]"});
  }
  SUBCASE("a known dtype that does not convert to fp32") {
    write_file(p, safetensors_bytes(R"({"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}})", 16));
    SafetensorsFile f(p);
    check_throws<FormatError>([&] { (void)f.to_f32(f.at("a")); }, {"\"a\"", "dtype I32", "expected F32, F16 or BF16"});
  }
  SUBCASE("metadata that is not strings") {
    write_file(p, safetensors_bytes(R"({"__metadata__":{"format":3}})", 0));
    check_throws<FormatError>([&] { SafetensorsFile f(p); }, {"__metadata__", "\"format\""});
  }
}

// ---------------------------------------------------------------- model directories that do not fit config.json

struct BrokenModel {
  TempDir dir;
  ModelConfig config = tiny_config("0_2_2_3");
  HostWeights weights = HostWeights::random(config, 3);
  BrokenModel() { save_model_dir(dir.path(), weights); }
  /// Rewrites model.safetensors with `edit` applied to the tensor list.
  template <class Edit>
  void rewrite(Edit edit) {
    std::vector<TensorToWrite> t;
    for (const auto& info : weights.tensors())
      t.push_back({info.name, info.shape, {weights.data(info.name), static_cast<std::size_t>(info.numel())}});
    edit(t);
    write_safetensors(dir / "model.safetensors", t);
  }
};

TEST_CASE("tensors that contradict config.json get a CheckpointError naming the tensor") {
  BrokenModel m;
  const std::string file = (m.dir / "model.safetensors").string();
  CHECK(load_model_dir(m.dir.path()).weights.num_parameters() == m.weights.num_parameters());
  std::vector<float> extra(16 * 8, 0.5f);

  SUBCASE("missing tensor") {
    m.rewrite([](auto& t) { std::erase_if(t, [](const auto& x) { return x.name == "model.layers.3.mlp.up_proj.weight"; }); });
    check_throws<CheckpointError>([&] { load_model_dir(m.dir.path()); },
                                  {"missing tensor \"model.layers.3.mlp.up_proj.weight\"", "[32, 16]"});
  }
  SUBCASE("missing k/v of a KV-computing layer") {
    m.rewrite([](auto& t) { std::erase_if(t, [](const auto& x) { return x.name == "model.layers.2.self_attn.v_proj.weight"; }); });
    check_throws<CheckpointError>([&] { load_model_dir(m.dir.path()); },
                                  {"missing tensor \"model.layers.2.self_attn.v_proj.weight\"", "0_2_2_3"});
  }
  SUBCASE("k/v projection in a layer that computes no KV") {
    m.rewrite([&](auto& t) { t.push_back({"model.layers.1.self_attn.k_proj.weight", {8, 16}, extra}); });
    check_throws<CheckpointError>([&] { load_model_dir(m.dir.path()); },
                                  {file, "unexpected tensor \"model.layers.1.self_attn.k_proj.weight\"",
                                   "layer 1 computes no KV", "0_2_2_3"});
  }
  SUBCASE("unexpected tensor") {
    m.rewrite([&](auto& t) { t.push_back({"model.layers.9.mlp.up_proj.weight", {8, 16}, extra}); });
    check_throws<CheckpointError>([&] { load_model_dir(m.dir.path()); },
                                  {"unexpected tensor \"model.layers.9.mlp.up_proj.weight\"", "num_hidden_layers = 4"});
  }
  SUBCASE("lm_head in a tied model") {
    m.config.shape.tie_word_embeddings = true;
    HostWeights tied = HostWeights::random(m.config, 3);
    save_model_dir(m.dir.path(), tied);
    std::vector<float> head(static_cast<std::size_t>(64 * 16), 0.1f);
    std::vector<TensorToWrite> t;
    for (const auto& info : tied.tensors())
      t.push_back({info.name, info.shape, {tied.data(info.name), static_cast<std::size_t>(info.numel())}});
    t.push_back({"lm_head.weight", {64, 16}, head});
    write_safetensors(m.dir / "model.safetensors", t);
    check_throws<CheckpointError>([&] { load_model_dir(m.dir.path()); }, {"\"lm_head.weight\"", "tie_word_embeddings"});
  }
  SUBCASE("shape that contradicts config.json") {
    m.rewrite([&](auto& t) {
      for (auto& x : t)
        if (x.name == "model.layers.0.self_attn.q_proj.weight") x.shape = {8, 32};
    });
    check_throws<CheckpointError>([&] { load_model_dir(m.dir.path()); },
                                  {file, "\"model.layers.0.self_attn.q_proj.weight\"", "shape [8, 32]", "expected [16, 16]"});
  }
  SUBCASE("config.json that is not JSON") {
    write_file(m.dir / "config.json", "{\"model_type\": \"llama\",");
    check_throws<FormatError>([&] { load_model_dir(m.dir.path()); }, {"config.json", "is not JSON"});
  }
  SUBCASE("no weights at all") {
    std::filesystem::remove(m.dir / "model.safetensors");
    check_throws<CheckpointError>([&] { load_model_dir(m.dir.path()); }, {"no model.safetensors"});
  }
  SUBCASE("an index that names a shard without the tensor") {
    save_model_dir(m.dir.path(), m.weights, {}, SaveOptions{Dtype::F32, 4096});
    auto index = nlohmann::json::parse(lckv::test::read_file(m.dir / "model.safetensors.index.json"));
    const std::string first = index["weight_map"]["model.embed_tokens.weight"];
    REQUIRE(first != index["weight_map"]["model.norm.weight"].get<std::string>());
    index["weight_map"]["model.norm.weight"] = first;
    write_file(m.dir / "model.safetensors.index.json", index.dump());
    check_throws<CheckpointError>([&] { load_model_dir(m.dir.path()); },
                                  {"\"model.norm.weight\"", first, "no such tensor"});
  }
  SUBCASE("an index that leaves the directory") {
    save_model_dir(m.dir.path(), m.weights, {}, SaveOptions{Dtype::F32, 4096});
    write_file(m.dir / "model.safetensors.index.json", R"({"weight_map": {"model.norm.weight": "../x.safetensors"}})");
    check_throws<FormatError>([&] { load_model_dir(m.dir.path()); }, {"model.safetensors.index.json", "../x.safetensors"});
  }
}

// ---------------------------------------------------------------- config.json

static const char* kV4 = R"({
  "architectures": ["LCKVLlamaForCausalLM"], "model_type": "lckv-llama",
  "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
  "num_attention_heads": 32, "num_key_value_heads": 4, "hidden_act": "silu", "rms_norm_eps": 1e-05,
  "max_position_embeddings": 2048, "rope_theta": 10000.0, "rope_scaling": null, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
  "layer_types": "0_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_20_21",
  "forward_passes": 7, "backward_passes": 2, "sliding_window": 4096, "use_sequential": false, "force_nodiag": false,
  "transformers_version": "4.45.2"
})";

static const char* kV5 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 1, "dtype": "float32", "eos_token_id": [2, 7], "head_dim": 16, "hidden_act": "silu",
  "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 64,
  "mlp_bias": false, "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
  "tie_word_embeddings": true, "transformers_version": "5.17.0", "use_cache": true, "vocab_size": 256
})";

TEST_CASE("config.json: transformers v4 form (lckv-llama, the authors' TinyLlama w=2)") {
  const ConfigJson c = parse_config_json_text(kV4);
  CHECK(c.form == ConfigForm::V4);
  CHECK(c.model_type == "lckv-llama");
  CHECK(c.dtype == "bfloat16");
  CHECK(c.config.shape.num_layers == 22);
  CHECK(c.config.shape.head_dim == 64);
  CHECK(c.config.shape.num_kv_heads == 4);
  CHECK(c.config.shape.rope_theta == 10000.0f);
  CHECK(c.config.shape.rms_norm_eps == 1e-5f);
  CHECK(c.config.plan.num_kv_layers() == 3);
  CHECK(c.config.plan.attends_to(1) == 20);
  CHECK(c.config.passes.forward_passes == 7);
  CHECK(c.config.passes.backward_passes == 2);
  CHECK(c.bos_token_id == 1);
  CHECK(c.eos_token_id == 2);
  // Written back in the same form, it reads back the same.
  const ConfigJson again = parse_config_json(to_config_json(c));
  CHECK(again.config.plan == c.config.plan);
  CHECK(again.form == ConfigForm::V4);
  CHECK(to_config_json(c).contains("rope_theta"));
  CHECK_FALSE(to_config_json(c).contains("rope_parameters"));
}

TEST_CASE("config.json: transformers v5 form (llama, rope_parameters, dtype, explicit head_dim)") {
  const ConfigJson c = parse_config_json_text(kV5);
  CHECK(c.form == ConfigForm::V5);
  CHECK(c.model_type == "llama");
  CHECK(c.dtype == "float32");
  CHECK(c.config.shape.head_dim == 16);
  CHECK(c.config.shape.q_dim() == 64);
  CHECK(c.config.shape.rope_theta == 500000.0f);
  CHECK(c.config.shape.tie_word_embeddings);
  CHECK(c.eos_token_id == 2);
  CHECK(c.config.plan == plans::standard(2));
  const auto j = to_config_json(c);
  CHECK(j["rope_parameters"]["rope_theta"] == 500000.0);
  CHECK(j["dtype"] == "float32");
  CHECK(j["model_type"] == "llama");
  CHECK(parse_config_json(j).config.shape.rope_theta == 500000.0f);
}

TEST_CASE("config.json: defaults of HF LlamaConfig and DESIGN.md") {
  const ConfigJson c = parse_config_json_text(R"({"model_type": "lckv-llama", "num_hidden_layers": 4,
      "hidden_size": 64, "num_attention_heads": 4})");
  CHECK(c.config.shape.num_kv_heads == 4);
  CHECK(c.config.shape.head_dim == 16);
  CHECK(c.config.shape.vocab_size == 32000);
  CHECK(c.config.shape.rope_theta == 10000.0f);
  CHECK(c.config.plan == plans::standard(4));  // the authors' default layer_types
  CHECK(c.config.passes.forward_passes == 7);
  CHECK(c.config.passes.backward_passes == 2);
  CHECK(c.config.attention.sliding_window == 4096);
  CHECK_FALSE(c.config.use_sequential);
  CHECK_FALSE(c.config.attention.force_nodiag);
}

TEST_CASE("config.json: bad fields name the field and what was expected") {
  check_throws<PlanError>([] { parse_config_json_text(R"({"model_type": "lckv-llama", "num_hidden_layers": 4,
      "hidden_size": 64, "num_attention_heads": 4, "layer_types": "0_2_2"})", "m/config.json"); },
                          {"m/config.json", "layer_types \"0_2_2\"", "3 tokens, expected 4"});
  check_throws<PlanError>([] { parse_config_json_text(R"({"model_type": "lckv-llama", "num_hidden_layers": 4,
      "hidden_size": 64, "num_attention_heads": 4, "layer_types": "0_2_4_3"})"); },
                          {"token 2 \"4\"", "outside [0, 4)"});
  check_throws<PlanError>([] { parse_config_json_text(R"({"model_type": "lckv-llama", "num_hidden_layers": 2,
      "hidden_size": 64, "num_attention_heads": 4, "layer_types": "0_x"})"); },
                          {"token 1 \"x\""});
  check_throws<FormatError>([] { parse_config_json_text(R"({"model_type": "gpt2"})"); }, {"model_type", "\"gpt2\""});
  check_throws<FormatError>([] { parse_config_json_text(R"({"hidden_size": 64})"); }, {"model_type", "missing"});
  check_throws<FormatError>([] { parse_config_json_text(R"({"model_type": "llama", "hidden_size": "64"})"); },
                            {"hidden_size", "expected an integer"});
  check_throws<FormatError>([] { parse_config_json_text(R"({"model_type": "llama", "hidden_size": 64,
      "num_attention_heads": 4, "num_key_value_heads": 3})"); },
                            {"num_key_value_heads = 3"});
  check_throws<FormatError>([] { parse_config_json_text(R"({"model_type": "llama", "rope_scaling": {"rope_type": "llama3"}})"); },
                            {"rope_scaling", "llama3"});
  check_throws<FormatError>([] { parse_config_json_text(R"({"model_type": "llama", "attention_bias": true})"); },
                            {"attention_bias"});
  check_throws<FormatError>([] { parse_config_json_text(R"({"model_type": "llama", "num_hidden_layers": 1e3})"); },
                            {"num_hidden_layers"});
  check_throws<FormatError>([] { parse_config_json_text("[]"); }, {"expected an object"});
}

// ---------------------------------------------------------------- conversion

TEST_CASE("convert: k/v of a KV layer is the mean over the layers attending to it, the rest is copied") {
  const ModelConfig plain = tiny_config("0_1_2_3_4");
  const HostWeights src = HostWeights::random(plain, 11, 0.5f);
  ModelConfig target = plain;
  target.plan = parse_layer_types("0_3_3_3_4");  // layers 1..3 attend to 3; 0 and 4 keep their own
  const HostWeights out = convert_to_lckv(src, target);
  CHECK_FALSE(out.has("model.layers.1.self_attn.k_proj.weight"));
  CHECK_FALSE(out.has("model.layers.2.self_attn.v_proj.weight"));
  for (const char* proj : {"k_proj", "v_proj"}) {
    auto name = [&](int l) { return "model.layers." + std::to_string(l) + ".self_attn." + proj + ".weight"; };
    const auto n = out.info(name(3)).numel();
    int wrong = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double mean = (double(src.data(name(1))[i]) + src.data(name(2))[i] + src.data(name(3))[i]) / 3.0;
      wrong += out.data(name(3))[i] != static_cast<float>(mean);
      wrong += out.data(name(0))[i] != src.data(name(0))[i];
      wrong += out.data(name(4))[i] != src.data(name(4))[i];
    }
    CHECK(wrong == 0);
    CHECK(out.data(name(3))[0] != src.data(name(3))[0]);  // it did change
  }
  for (const auto& t : out.tensors()) {
    if (t.name.find("k_proj") != std::string::npos || t.name.find("v_proj") != std::string::npos) continue;
    CHECK_MESSAGE(std::memcmp(out.data(t.name), src.data(t.name), static_cast<std::size_t>(t.numel()) * 4) == 0, t.name);
  }
  // The converted model saves as lckv-llama and loads back.
  TempDir dir;
  save_model_dir(dir.path(), out);
  LoadedModel m = load_model_dir(dir.path());
  CHECK(m.meta.model_type == "lckv-llama");
  check_same_weights(out, m.weights);
  // An LCKV source lacks the k/v to average for another plan.
  ModelConfig other = plain;
  other.plan = parse_layer_types("0_1_1_1_4");
  check_throws<CheckpointError>([&] { convert_to_lckv(out, other); },
                                {"model.layers.1.self_attn.k_proj.weight", "computes no KV"});
  ModelConfig wider = target;
  wider.shape.intermediate_size = 48;
  check_throws<CheckpointError>([&] { convert_to_lckv(src, wider); }, {"shape differs"});
}
