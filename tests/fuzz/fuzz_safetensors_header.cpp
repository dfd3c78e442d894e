// libFuzzer target: a whole safetensors file's bytes (length prefix, JSON header,
// buffer). Anything but a clean result or an lckv::Error is a finding.
#include <cstddef>
#include <cstdint>
#include <span>

#include "lckv/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto h = lckv::parse_safetensors_bytes({reinterpret_cast<const std::byte*>(data), size}, "fuzz.safetensors");
    // Accepted headers must describe disjoint, in-range tensors of the stated size.
    std::uint64_t last_end = 0;
    for (const auto& t : h.tensors) {
      if (t.end > h.data_bytes || t.begin > t.end) __builtin_trap();
      if (t.end > t.begin && t.begin < last_end) __builtin_trap();
      if (t.end > t.begin) last_end = t.end;
      if (static_cast<std::uint64_t>(t.numel()) * lckv::dtype_size(t.dtype) != t.end - t.begin) __builtin_trap();
    }
  } catch (const lckv::Error&) {
  }
  return 0;
}
