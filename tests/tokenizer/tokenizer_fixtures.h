// Shared helpers for the tokenizer tests: the real tokenizers under
// KEEL_SHARED_DIR/models, each loaded once per test binary, and JSON fixture reading.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "tokenizer/tokenizer.h"

namespace keel::tokenizer::testing {

inline std::string shared_path(const std::string& rel) { return std::string(KEEL_SHARED_DIR) + "/" + rel; }

inline const Tokenizer& qwen3() {
  static const Tokenizer t = Tokenizer::load(shared_path("models/qwen3-tokenizer"));
  return t;
}
inline const Tokenizer& llama3() {
  static const Tokenizer t = Tokenizer::load(shared_path("models/llama3-tokenizer"));
  return t;
}
inline const Tokenizer& stories() {
  static const Tokenizer t = Tokenizer::load(shared_path("models/stories260K"));
  return t;
}

inline nlohmann::json load_json(const std::string& rel) { return nlohmann::json::parse(read_text_file(shared_path(rel))); }

}  // namespace keel::tokenizer::testing
