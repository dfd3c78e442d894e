#pragma once
/// \file errors.hpp
/// Exceptions of checkpoint I/O. Both derive from lckv::Error; every message
/// names the file, and the tensor or field, and what was expected.

#include "lckv/core/error.hpp"

namespace lckv {

/// A file that is not what its format says: truncated safetensors, a header
/// length beyond the file, a header or config.json that is not JSON, offsets
/// that overlap or leave the buffer, an unknown dtype, a config field of the
/// wrong type or value.
class FormatError : public Error {
public:
  using Error::Error;
};

/// Well-formed files that do not fit together: a tensor missing, unexpected or
/// of the wrong shape for config.json, a tokenizer whose vocabulary differs
/// from the model's, a conversion the source checkpoint cannot support.
class CheckpointError : public Error {
public:
  using Error::Error;
};

}  // namespace lckv
