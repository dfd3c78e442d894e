#pragma once
/// \file safetensors.hpp
/// The safetensors format (HF): an 8-byte little-endian header length N, N bytes
/// of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
/// then the raw tensor buffer (offsets relative to its start).
///
/// - SafetensorsFile: one file, memory-mapped; F32 tensors are viewed in place
///   (zero-copy), F16 / BF16 are converted to fp32 on read.
/// - SafetensorsCheckpoint: every shard of a model directory, through
///   `model.safetensors.index.json` when present, else `model.safetensors`.
/// - write_safetensors: writes fp32 data as F32, F16 or BF16.
///
/// \code
///   lckv::SafetensorsFile f("model.safetensors");
///   const auto& t = f.at("model.norm.weight");          // dtype, shape, offsets
///   if (auto v = f.view_f32(t)) use(*v);                 // zero-copy when F32
///   std::vector<float> x = f.to_f32(t);                  // any float dtype
/// \endcode
///
/// Every malformed input throws FormatError naming the file, the tensor and
/// what was expected; parse_safetensors_bytes() is the fuzzing entry point.

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "lckv/io/errors.hpp"

namespace lckv {

static_assert(std::endian::native == std::endian::little, "lckv's safetensors I/O assumes a little-endian host");

/// Element types of the safetensors format. Only F32, F16 and BF16 convert to fp32.
enum class Dtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2 };

inline const char* to_string(Dtype d) {
  switch (d) {
    case Dtype::F64: return "F64";
    case Dtype::F32: return "F32";
    case Dtype::F16: return "F16";
    case Dtype::BF16: return "BF16";
    case Dtype::I64: return "I64";
    case Dtype::I32: return "I32";
    case Dtype::I16: return "I16";
    case Dtype::I8: return "I8";
    case Dtype::U8: return "U8";
    case Dtype::BOOL: return "BOOL";
    case Dtype::F8_E4M3: return "F8_E4M3";
    case Dtype::F8_E5M2: return "F8_E5M2";
  }
  return "?";
}

inline std::size_t dtype_size(Dtype d) {
  switch (d) {
    case Dtype::F64: case Dtype::I64: return 8;
    case Dtype::F32: case Dtype::I32: return 4;
    case Dtype::F16: case Dtype::BF16: case Dtype::I16: return 2;
    default: return 1;
  }
}

/// The dtype named `s`, or nullopt when the format has no such name.
inline std::optional<Dtype> parse_dtype(std::string_view s) {
  static constexpr Dtype all[] = {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I64, Dtype::I32,
                                  Dtype::I16, Dtype::I8,  Dtype::U8,  Dtype::BOOL, Dtype::F8_E4M3, Dtype::F8_E5M2};
  for (Dtype d : all)
    if (s == to_string(d)) return d;
  return std::nullopt;
}

// ---- fp16 / bf16 <-> fp32 (round to nearest even; inf and NaN kept) ----

inline float bf16_to_f32(std::uint16_t h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

inline std::uint16_t f32_to_bf16(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float f16_to_f32(std::uint16_t h) {
  const std::uint32_t shifted_exp = 0x7c00u << 13;
  std::uint32_t o = (static_cast<std::uint32_t>(h) & 0x7fffu) << 13;
  const std::uint32_t exp = shifted_exp & o;
  o += (127u - 15u) << 23;
  if (exp == shifted_exp) {
    o += (128u - 16u) << 23;  // inf / NaN
  } else if (exp == 0) {      // zero / subnormal: renormalise through the FPU
    o += 1u << 23;
    o = std::bit_cast<std::uint32_t>(std::bit_cast<float>(o) - std::bit_cast<float>(113u << 23));
  }
  o |= (static_cast<std::uint32_t>(h) & 0x8000u) << 16;
  return std::bit_cast<float>(o);
}

inline std::uint16_t f32_to_f16(float f) {
  std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = x & 0x80000000u;
  x ^= sign;
  std::uint32_t o;
  if (x >= (143u << 23)) {  // >= 65536 before rounding, inf or NaN
    o = x > (255u << 23) ? 0x7e00u : 0x7c00u;
  } else if (x < (113u << 23)) {  // half subnormal or zero: let the FPU round
    o = std::bit_cast<std::uint32_t>(std::bit_cast<float>(x) + 0.5f) - 0x3f000000u;
  } else {
    const std::uint32_t mant_odd = (x >> 13) & 1u;
    x += ((15u - 127u) << 23) + 0xfffu;
    x += mant_odd;
    o = x >> 13;
  }
  return static_cast<std::uint16_t>(o | (sign >> 16));
}

/// One tensor of a safetensors header. Offsets are relative to the buffer after the header.
struct TensorEntry {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

/// A parsed, validated header.
struct SafetensorsHeader {
  std::vector<TensorEntry> tensors;  ///< in buffer order
  std::map<std::string, std::string> metadata;
  std::uint64_t header_bytes = 0;  ///< N, the JSON length
  std::uint64_t data_bytes = 0;    ///< bytes after the header
};

/// A header larger than this is refused (the reference implementation's limit).
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100u << 20;

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// Parses and checks a header's JSON against a buffer of `data_bytes` bytes.
/// `file` only names the source in messages.
inline SafetensorsHeader parse_safetensors_header(std::string_view json_text, std::uint64_t data_bytes,
                                                  const std::string& file) {
  const std::string where = file + ": safetensors header";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(where + " is not JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw FormatError(where + " is a JSON " + j.type_name() + ", expected an object");
  SafetensorsHeader h;
  h.header_bytes = json_text.size();
  h.data_bytes = data_bytes;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw FormatError(where + ": __metadata__ is a " + v.type_name() + ", expected an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw FormatError(where + ": __metadata__ \"" + m.key() + "\" is a " + m.value().type_name() + ", expected a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = where + ": tensor \"" + name + "\"";
    if (!v.is_object()) throw FormatError(tw + " is a " + std::string(v.type_name()) + ", expected an object");
    TensorEntry e;
    e.name = name;
    const auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) throw FormatError(tw + " has no \"dtype\" string");
    const auto parsed = parse_dtype(dt->get_ref<const std::string&>());
    if (!parsed) throw FormatError(tw + " has unknown dtype \"" + dt->get<std::string>() + "\", expected F32, F16, BF16 (or another safetensors dtype)");
    e.dtype = *parsed;
    const auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) throw FormatError(tw + " has no \"shape\" array");
    // numel * element size must stay below 2^62: checked dimension by dimension.
    std::uint64_t bytes = dtype_size(e.dtype);
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) throw FormatError(tw + ": shape " + sh->dump() + " has an entry that is not a non-negative integer");
      const std::uint64_t dim = d.get<std::uint64_t>();
      if (dim > (1ull << 62)) throw FormatError(tw + ": shape " + sh->dump() + " is too large");
      e.shape.push_back(static_cast<std::int64_t>(dim));
      if (dim != 0 && bytes > (1ull << 62) / dim) throw FormatError(tw + ": shape " + sh->dump() + " is too large");
      bytes *= dim;
    }
    const auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      throw FormatError(tw + " has no \"data_offsets\" [begin, end] of non-negative integers");
    e.begin = (*off)[0].get<std::uint64_t>();
    e.end = (*off)[1].get<std::uint64_t>();
    if (e.begin > e.end)
      throw FormatError(tw + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] end before they begin");
    if (e.end > data_bytes)
      throw FormatError(tw + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                        "] are out of range, the buffer has " + std::to_string(data_bytes) + " bytes");
    if (e.end - e.begin != bytes)
      throw FormatError(tw + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] span " +
                        std::to_string(e.end - e.begin) + " bytes, expected " + std::to_string(bytes) + " for " +
                        to_string(e.dtype) + " " + shape_string(e.shape));
    h.tensors.push_back(std::move(e));
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Sorted by begin, a tensor overlaps an earlier one iff it begins before the
  // furthest end so far (empty tensors occupy nothing).
  const TensorEntry* furthest = nullptr;
  for (const auto& b : h.tensors) {
    if (b.end == b.begin) continue;
    if (furthest == nullptr || furthest->end <= b.begin) {
      if (furthest == nullptr || b.end > furthest->end) furthest = &b;
      continue;
    }
    const auto& a = *furthest;
    throw FormatError(where + ": tensors \"" + a.name + "\" [" + std::to_string(a.begin) + ", " + std::to_string(a.end) +
                        ") and \"" + b.name + "\" [" + std::to_string(b.begin) + ", " + std::to_string(b.end) +
                        ") overlap; expected disjoint data_offsets");
  }
  return h;
}

/// Parses a whole file's bytes: length prefix, header, buffer size. Returns the
/// header; the buffer starts at 8 + header_bytes.
inline SafetensorsHeader parse_safetensors_bytes(std::span<const std::byte> bytes, const std::string& file) {
  if (bytes.size() < 8)
    throw FormatError(file + ": truncated safetensors file of " + std::to_string(bytes.size()) +
                      " bytes, expected at least 8 (the header length)");
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (n > bytes.size() - 8)
    throw FormatError(file + ": safetensors header length " + std::to_string(n) + " goes beyond the file (" +
                      std::to_string(bytes.size()) + " bytes, at most " + std::to_string(bytes.size() - 8) +
                      " for the header); truncated file?");
  if (n > kMaxSafetensorsHeader)
    throw FormatError(file + ": safetensors header length " + std::to_string(n) + ", expected at most " +
                      std::to_string(kMaxSafetensorsHeader));
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, static_cast<std::size_t>(n));
  return parse_safetensors_header(text, bytes.size() - 8 - n, file);
}

namespace detail {

/// A read-only memory map of a whole file (empty files are read, not mapped).
class MappedFile {
public:
  explicit MappedFile(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw FormatError(path.string() + ": cannot open (" + std::strerror(errno) + ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw FormatError(path.string() + ": not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        throw FormatError(path.string() + ": mmap failed (" + std::strerror(err) + ")");
      }
      data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
  }
  std::span<const std::byte> bytes() const { return {data_, size_}; }

private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace detail

/// One safetensors file, memory-mapped for its lifetime.
class SafetensorsFile {
public:
  explicit SafetensorsFile(std::filesystem::path path)
      : path_(std::move(path)), map_(std::make_unique<detail::MappedFile>(path_)),
        header_(parse_safetensors_bytes(map_->bytes(), path_.string())) {
    for (std::size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
  }

  const std::filesystem::path& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<TensorEntry>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }

  const TensorEntry* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &header_.tensors[it->second];
  }
  const TensorEntry& at(std::string_view name) const {
    if (const auto* e = find(name)) return *e;
    throw CheckpointError(path_.string() + ": no tensor \"" + std::string(name) + "\"");
  }

  /// The raw bytes of a tensor, in the mapped file.
  std::span<const std::byte> bytes(const TensorEntry& e) const {
    return map_->bytes().subspan(8 + header_.header_bytes + e.begin, e.end - e.begin);
  }

  /// A zero-copy fp32 view when the tensor is F32 and 4-byte aligned in the map.
  std::optional<std::span<const float>> view_f32(const TensorEntry& e) const {
    const auto b = bytes(e);
    if (e.dtype != Dtype::F32 || reinterpret_cast<std::uintptr_t>(b.data()) % alignof(float) != 0) return std::nullopt;
    return std::span<const float>(reinterpret_cast<const float*>(b.data()), b.size() / sizeof(float));
  }

  /// Copies (F32) or converts (F16, BF16) a tensor into `out` (numel floats).
  void read_f32(const TensorEntry& e, std::span<float> out) const {
    const auto n = static_cast<std::size_t>(e.numel());
    if (out.size() != n)
      throw InvalidArgument(path_.string() + ": tensor \"" + e.name + "\" has " + std::to_string(n) +
                            " elements, the destination " + std::to_string(out.size()));
    const std::byte* src = bytes(e).data();
    switch (e.dtype) {
      case Dtype::F32:
        if (n) std::memcpy(out.data(), src, n * 4);
        return;
      case Dtype::F16:
      case Dtype::BF16:
        for (std::size_t i = 0; i < n; ++i) {
          std::uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          out[i] = e.dtype == Dtype::F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        return;
      default:
        throw FormatError(path_.string() + ": tensor \"" + e.name + "\" has dtype " + to_string(e.dtype) +
                          ", expected F32, F16 or BF16");
    }
  }
  std::vector<float> to_f32(const TensorEntry& e) const {
    std::vector<float> out(static_cast<std::size_t>(e.numel()));
    read_f32(e, out);
    return out;
  }

private:
  std::filesystem::path path_;
  std::unique_ptr<detail::MappedFile> map_;
  SafetensorsHeader header_;
  std::map<std::string, std::size_t> index_;
};

/// Every tensor of a checkpoint directory, across shards.
class SafetensorsCheckpoint {
public:
  static constexpr const char* kSingleFile = "model.safetensors";
  static constexpr const char* kIndexFile = "model.safetensors.index.json";

  /// Opens `dir/model.safetensors.index.json` and its shards, else `dir/model.safetensors`.
  explicit SafetensorsCheckpoint(const std::filesystem::path& dir) {
    const auto index_path = dir / kIndexFile;
    if (std::filesystem::exists(index_path)) {
      open_index(dir, index_path);
      return;
    }
    const auto single = dir / kSingleFile;
    if (!std::filesystem::exists(single))
      throw CheckpointError(dir.string() + ": no " + kSingleFile + " and no " + kIndexFile +
                            " (expected an HF safetensors checkpoint)");
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& e : files_[0]->tensors()) where_[e.name] = 0;
  }

  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, f] : where_) out.push_back(name);
    return out;
  }
  const TensorEntry* find(std::string_view name) const {
    auto it = where_.find(std::string(name));
    return it == where_.end() ? nullptr : files_[it->second]->find(name);
  }
  /// The file that holds a tensor (find() it first).
  const SafetensorsFile& file_of(std::string_view name) const { return *files_[where_.at(std::string(name))]; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

private:
  void open_index(const std::filesystem::path& dir, const std::filesystem::path& index_path) {
    const std::string where = index_path.string();
    std::ifstream in(index_path, std::ios::binary);
    if (!in) throw FormatError(where + ": cannot open");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(where + " is not JSON (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw FormatError(where + ": expected an object with a \"weight_map\" object {tensor: file}");
    std::map<std::string, std::size_t> file_index;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        throw FormatError(where + ": weight_map[\"" + it.key() + "\"] is a " + it.value().type_name() + ", expected a file name");
      const std::string file = it.value().get<std::string>();
      if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos || file == "." ||
          file == "..")
        throw FormatError(where + ": weight_map[\"" + it.key() + "\"] = \"" + file +
                          "\", expected a file name in the checkpoint directory");
      auto [pos, inserted] = file_index.try_emplace(file, files_.size());
      if (inserted) {
        if (!std::filesystem::exists(dir / file))
          throw CheckpointError(where + ": shard \"" + file + "\" (holding \"" + it.key() + "\") does not exist");
        files_.push_back(std::make_unique<SafetensorsFile>(dir / file));
      }
      if (!files_[pos->second]->find(it.key()))
        throw CheckpointError(where + ": maps tensor \"" + it.key() + "\" to shard \"" + file +
                              "\", which has no such tensor");
      where_[it.key()] = pos->second;
    }
  }

  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::size_t> where_;
};

/// A tensor to write: fp32 data of `shape`, stored as the writer's dtype.
struct TensorToWrite {
  std::string name;
  std::vector<std::int64_t> shape;
  std::span<const float> data;
};

/// Bytes a set of tensors takes in `dtype`.
inline std::uint64_t safetensors_data_bytes(std::span<const TensorToWrite> tensors, Dtype dtype) {
  std::uint64_t n = 0;
  for (const auto& t : tensors) n += t.data.size() * dtype_size(dtype);
  return n;
}

/// Writes `tensors` (in this order) to `path` as F32, F16 or BF16, with
/// `__metadata__` (HF expects {"format": "pt"}). Writes `path`.tmp and renames.
inline void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                              Dtype dtype = Dtype::F32,
                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}}) {
  if (dtype != Dtype::F32 && dtype != Dtype::F16 && dtype != Dtype::BF16)
    throw InvalidArgument(path.string() + ": cannot write dtype " + std::string(to_string(dtype)) + ", expected F32, F16 or BF16");
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    std::int64_t numel = 1;
    for (auto d : t.shape) numel *= d;
    if (numel != static_cast<std::int64_t>(t.data.size()))
      throw InvalidArgument(path.string() + ": tensor \"" + t.name + "\" of shape " + shape_string(t.shape) + " has " +
                            std::to_string(t.data.size()) + " values, expected " + std::to_string(numel));
    if (header.contains(t.name)) throw InvalidArgument(path.string() + ": tensor \"" + t.name + "\" given twice");
    const std::uint64_t bytes = t.data.size() * dtype_size(dtype);
    header[t.name] = {{"dtype", to_string(dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the buffer 8-byte aligned
  const auto tmp = std::filesystem::path(path.string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw FormatError(tmp.string() + ": cannot open for writing");
    const std::uint64_t n = text.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    std::vector<std::uint16_t> half;
    for (const auto& t : tensors) {
      if (dtype == Dtype::F32) {
        out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size() * 4));
        continue;
      }
      half.resize(t.data.size());
      for (std::size_t i = 0; i < t.data.size(); ++i)
        half[i] = dtype == Dtype::F16 ? f32_to_f16(t.data[i]) : f32_to_bf16(t.data[i]);
      out.write(reinterpret_cast<const char*>(half.data()), static_cast<std::streamsize>(half.size() * 2));
    }
    if (!out.flush()) throw FormatError(tmp.string() + ": write failed");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace lckv
