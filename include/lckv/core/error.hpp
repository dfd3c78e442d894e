#pragma once
/// \file error.hpp
/// The exception types of lckv. Every message names the offending input and
/// what was expected, so a user can fix the call without reading our code.

#include <stdexcept>
#include <string>

namespace lckv {

/// Base of every lckv error.
class Error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A `layer_types` string or layer plan that does not describe a valid model.
class PlanError : public Error {
public:
  using Error::Error;
};

/// A call whose arguments contradict the model or the cache (token id out of
/// range, prompt longer than the cache, unknown sequence, ...).
class InvalidArgument : public Error {
public:
  using Error::Error;
};

/// The cache (or a memory budget) cannot hold what was asked for.
class OutOfCapacity : public Error {
public:
  using Error::Error;
};

}  // namespace lckv
