// keel::Error and helpers to build messages. keel reports bad input (a missing
// file, a corrupt header, a wrong shape) by throwing keel::Error at a module's
// edge with a message that names the file, tensor or field at fault; frontends
// catch it, print it and exit non-zero.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace keel {

/// The one exception type keel throws for bad input or a failed operation.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Concatenates its arguments with operator<< into a string.
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

/// Throws keel::Error with the concatenated message.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

}  // namespace keel

/// Throws keel::Error(message...) when cond is false.
#define KEEL_CHECK(cond, ...)      \
  do {                             \
    if (!(cond)) {                 \
      ::keel::fail(__VA_ARGS__);   \
    }                              \
  } while (0)
