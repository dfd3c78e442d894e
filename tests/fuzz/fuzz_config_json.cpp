// libFuzzer target: config.json text. Accepted configs must validate and
// survive a write -> read round trip with the same plan and shape.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lckv/io/config_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto c = lckv::parse_config_json_text({reinterpret_cast<const char*>(data), size}, "fuzz/config.json");
    c.config.validate();
    const auto again = lckv::parse_config_json(lckv::to_config_json(c));
    if (!(again.config.plan == c.config.plan) || again.config.shape.head_dim != c.config.shape.head_dim ||
        again.config.shape.num_kv_heads != c.config.shape.num_kv_heads ||
        again.config.shape.vocab_size != c.config.shape.vocab_size)
      __builtin_trap();
  } catch (const lckv::Error&) {
  }
  return 0;
}
