// Internal: the state behind keel::tokenizer::Tokenizer, filled by the loaders
// in load.cpp (tokenizer.json, or vocab.json + merges.txt) and used by
// tokenizer.cpp to encode, decode and render chats.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/tokenizer.h"

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

  bool valid_id(int32_t id) const { return id >= 0 && size_t(id) < flags.size() && (flags[id] & kExists); }
  bool special(int32_t id) const { return valid_id(id) && (flags[id] & kSpecial); }
};

/// Builds the Impl from a folder (load.cpp).
std::unique_ptr<Tokenizer::Impl> load_impl(const std::string& dir);

}  // namespace keel::tokenizer
