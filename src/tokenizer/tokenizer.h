// Text <-> token ids for the supported families, read from tokenizer.json (or
// vocab.json + merges.txt): byte-level BPE (Qwen2/3, Llama-3) and
// SentencePiece-style BPE with byte fallback (Llama-2 style, stories260K).
// Added/special tokens are matched before BPE. Decoding can stream: a
// StreamDecoder never emits half a UTF-8 character.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::tokenizer {

enum class Kind : uint8_t { ByteLevelBpe, SentencePieceBpe };

/// Chat prompt formats keel knows (from tokenizer_config.json's chat_template).
enum class ChatFormat : uint8_t { None, ChatML, Llama3 };

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

class Tokenizer {
 public:
  /// Loads from a folder holding tokenizer.json, or vocab.json + merges.txt,
  /// plus tokenizer_config.json when present. Errors name the file at fault.
  static Tokenizer load(const std::string& dir);

  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  /// Encodes text. With add_special, prepends BOS when the tokenizer's
  /// post-processor / config says so (e.g. stories260K, Llama-3).
  std::vector<int32_t> encode(std::string_view text, bool add_special = true) const;
  /// Decodes ids to text (skip_special drops added special tokens).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  Kind kind() const;
  std::string_view kind_name() const;
  int64_t vocab_size() const;           // including added tokens
  std::optional<int32_t> bos_id() const;
  std::vector<int32_t> eos_ids() const;  // from tokenizer_config.json
  std::optional<int32_t> token_id(std::string_view token) const;
  std::string token_text(int32_t id) const;  // raw vocab piece
  bool is_special(int32_t id) const;

  ChatFormat chat_format() const;
  /// Renders messages with the checkpoint's chat format and, if
  /// add_generation_prompt, the assistant header. Plain concatenation when None.
  std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  struct Impl;

 private:
  friend class StreamDecoder;
  std::unique_ptr<Impl> impl_;
};

/// Streams decoded text token by token. Bytes of an incomplete UTF-8 sequence
/// are held back until the sequence completes; the concatenation of every
/// push() and the final flush() equals Tokenizer::decode(all ids, skip_special).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true);
  /// Returns the text that became complete with this token (maybe empty).
  std::string push(int32_t id);
  /// Returns whatever is held back (invalid trailing bytes as U+FFFD).
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  int strip_left_;       // leading decoder strip still to apply (SentencePiece)
  std::string pending_;  // bytes of an incomplete UTF-8 character
};

}  // namespace keel::tokenizer
