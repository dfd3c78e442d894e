#pragma once
// Helpers of the checkpoint I/O tests: a temporary directory, file writing,
// and a check that an exception's type and message are the expected ones.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lckv/io/checkpoint.hpp"

namespace lckv::test {

/// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lckv-io-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
  std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// A safetensors file from a header JSON text and a buffer of `data_bytes` zero bytes.
inline std::string safetensors_bytes(const std::string& header, std::size_t data_bytes) {
  std::string out(8, '\0');
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

/// Runs f; checks it throws exactly E (or a subclass) with every `parts` in its message.
template <class E, class F>
void check_throws(F&& f, std::vector<std::string> parts) {
  bool thrown = false;
  try {
    f();
  } catch (const E& e) {
    thrown = true;
    const std::string msg = e.what();
    INFO("message: " << msg);
    for (const auto& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "expected \"" << p << "\" in the message");
  }
  CHECK_MESSAGE(thrown, "expected an exception of the named type");
}

/// A small config: vocab 64, hidden 16, MLP 32, 4 heads / 2 KV heads, head_dim 4.
inline ModelConfig tiny_config(const std::string& layer_types, bool tied = false) {
  ModelShape s;
  s.vocab_size = 64;
  s.hidden_size = 16;
  s.intermediate_size = 32;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 4;
  s.rope_theta = 500000.0f;
  s.rms_norm_eps = 1e-5f;
  s.tie_word_embeddings = tied;
  const LayerPlan plan = parse_layer_types(layer_types);
  s.num_layers = plan.num_layers();
  return configs::make(s, plan);
}

}  // namespace lckv::test
