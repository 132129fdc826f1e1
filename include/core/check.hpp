// SPDX-License-Identifier: MIT
#pragma once
// Errors: one exception type, messages that name the file, tensor and values involved.
#include <sstream>
#include <stdexcept>
#include <string>

namespace loralab {

/// Every run-time failure in loralab throws this; programs print `what()` and exit non-zero.
struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Throws loralab::error whose message is the streamed concatenation of `parts`.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw error(os.str());
}

}  // namespace loralab

/// LORALAB_CHECK(cond, "K=", K, " block=", B): throws loralab::error with the message (the file, key and values).
/// Debug builds (no NDEBUG) append the failed condition for developers; user-facing builds never show source.
#ifdef NDEBUG
#define LORALAB_CHECK(cond, ...)                     \
  do {                                               \
    if (!(cond)) ::loralab::fail(__VA_ARGS__);       \
  } while (0)
#else
#define LORALAB_CHECK(cond, ...)                                               \
  do {                                                                         \
    if (!(cond)) ::loralab::fail(__VA_ARGS__, " [check failed: " #cond "]");  \
  } while (0)
#endif
