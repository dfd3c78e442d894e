#pragma once
/// \file tokenizer.hpp
/// A SentencePiece `tokenizer.model` (Llama / TinyLlama), through Debian's
/// libsentencepiece-dev. Compiled only when LCKV_HAVE_SENTENCEPIECE is defined
/// (link -lsentencepiece); without it, lckv works on token ids.
///
/// \code
///   lckv::Tokenizer tok("model/tokenizer.model", config.shape.vocab_size);
///   std::vector<int> ids = tok.encode("Hello world", /*add_bos=*/true);
///   std::string text = tok.decode(ids);
/// \endcode

#include <filesystem>
#include <string>
#include <vector>

#include "lckv/io/errors.hpp"

#ifdef LCKV_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>

#include <memory>

namespace lckv {

/// Whether this build can read tokenizer.model files.
inline constexpr bool kHaveTokenizer = true;

class Tokenizer {
public:
  /// Loads `path`; with `model_vocab_size` >= 0 the piece count must equal it
  /// (CheckpointError otherwise). Throws FormatError when the file is unreadable.
  explicit Tokenizer(const std::filesystem::path& path, int model_vocab_size = -1)
      : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
    const auto status = sp_->Load(path.string());
    if (!status.ok())
      throw FormatError(path.string() + ": not a SentencePiece model (" + status.ToString() + ")");
    if (model_vocab_size >= 0 && sp_->GetPieceSize() != model_vocab_size)
      throw CheckpointError(path.string() + ": tokenizer has " + std::to_string(sp_->GetPieceSize()) +
                            " pieces, expected the model's vocab_size = " + std::to_string(model_vocab_size));
  }

  int vocab_size() const { return sp_->GetPieceSize(); }
  int bos_id() const { return sp_->bos_id(); }  ///< -1 when the model has none
  int eos_id() const { return sp_->eos_id(); }

  /// Token ids of `text`, preceded by BOS when asked and the model has one.
  std::vector<int> encode(const std::string& text, bool add_bos = true) const {
    std::vector<int> ids;
    const auto status = sp_->Encode(text, &ids);
    if (!status.ok()) throw InvalidArgument("tokenizer: cannot encode text (" + status.ToString() + ")");
    if (add_bos && bos_id() >= 0) ids.insert(ids.begin(), bos_id());
    return ids;
  }

  /// The text of `ids` (control tokens such as BOS/EOS decode to nothing).
  std::string decode(const std::vector<int>& ids) const {
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= vocab_size())
        throw InvalidArgument("tokenizer: id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                              " is outside [0, " + std::to_string(vocab_size()) + ")");
    std::string text;
    const auto status = sp_->Decode(ids, &text);
    if (!status.ok()) throw InvalidArgument("tokenizer: cannot decode ids (" + status.ToString() + ")");
    return text;
  }

private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace lckv

#else

namespace lckv {
inline constexpr bool kHaveTokenizer = false;

/// Stands in for the SentencePiece tokenizer in builds without it, so callers
/// need no #ifdef: loading one is an error that names the missing dependency.
class Tokenizer {
public:
  explicit Tokenizer(const std::filesystem::path& path, int = -1) {
    throw InvalidArgument(path.string() + ": this build of lckv has no SentencePiece (install libsentencepiece-dev "
                          "and rebuild), so it works on token ids only");
  }
  int vocab_size() const { return 0; }
  int bos_id() const { return -1; }
  int eos_id() const { return -1; }
  std::vector<int> encode(const std::string&, bool = true) const { return {}; }
  std::string decode(const std::vector<int>&) const { return {}; }
};
}  // namespace lckv

#endif
