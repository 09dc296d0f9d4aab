// Internal: the state behind keel::tokenizer::Tokenizer, filled by the loaders
// in load.cpp (tokenizer.json, or vocab.json + merges.txt) and used by
// tokenizer.cpp to encode, decode and render chats.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/tokenizer.h"

namespace keel::jinja {
class Template;
}

namespace keel::tokenizer {

struct Tokenizer::Impl {
  Kind kind = Kind::ByteLevelBpe;
  std::unique_ptr<BpeModel> bpe;
  Normalizer normalizer;
  PreTokenizer pre;
  AddedTokenMatcher raw_added;         // matched on the input text
  AddedTokenMatcher normalized_added;  // matched after normalization
  StringIdMap added_ids;               // added token content -> id

  std::vector<std::string> pieces;  // id -> vocab piece as written in the file, or added content
  std::vector<std::string> bytes;   // id -> what the token adds to decoded text (before the final strip)
  std::vector<uint8_t> flags;       // id -> kExists | kSpecial
  static constexpr uint8_t kExists = 1, kSpecial = 2;

  // Decoder: after concatenating token bytes, up to strip_count leading
  // copies of strip_char are removed (SentencePiece's Strip / Metaspace).
  std::string strip_char;
  int strip_count = 0;

  std::vector<int32_t> prefix_ids, suffix_ids;  // added around the text by encode(add_special)
  std::optional<int32_t> bos;
  std::vector<int32_t> eos;
  ChatFormat chat = ChatFormat::None;
  std::string default_system;  // ChatML: the system prompt the template adds when none is given
  // The checkpoint's chat template, parsed; null when there is none or it
  // does not parse (chat_template_error then says why).
  std::shared_ptr<const jinja::Template> chat_template;
  std::string chat_template_error;
  std::optional<std::string> bos_text, eos_text;  // bos_token / eos_token as the config names them

  bool valid_id(int32_t id) const { return id >= 0 && size_t(id) < flags.size() && (flags[id] & kExists); }
  bool special(int32_t id) const { return valid_id(id) && (flags[id] & kSpecial); }
};

/// Builds the Impl from a folder (load.cpp).
std::unique_ptr<Tokenizer::Impl> load_impl(const std::string& dir);
/// Builds the Impl from a tokenizer.json object and a tokenizer_config.json
/// object (load.cpp); `origin` names their source in errors. The GGUF reader
/// (gguf_tokenizer.cpp) writes its metadata into these two objects.
std::unique_ptr<Tokenizer::Impl> load_impl_json(const nlohmann::json& tokenizer, const nlohmann::json& config,
                                                const std::string& origin);
/// True for a path load_impl_gguf reads (a .gguf name or the GGUF magic).
bool is_gguf_path(const std::string& path);
/// Builds the Impl from a GGUF file's tokenizer.ggml.* metadata (gguf_tokenizer.cpp).
std::unique_ptr<Tokenizer::Impl> load_impl_gguf(const std::string& path);

}  // namespace keel::tokenizer
