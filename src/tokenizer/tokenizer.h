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

#include <nlohmann/json_fwd.hpp>

namespace keel::tokenizer {

enum class Kind : uint8_t { ByteLevelBpe, SentencePieceBpe };

/// The chat formats keel has built in, detected from the chat_template text.
/// They render chats only when the checkpoint's template is missing or cannot
/// be parsed; otherwise the template itself is rendered (has_chat_template()).
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

  /// Encodes text. Added/special tokens written in the text are recognised.
  /// With add_special, adds what the post-processor template says (BOS for
  /// stories260K); without a template, BOS when tokenizer_config.json's
  /// add_bos_token is true, or when it is absent but a bos_token is named
  /// (Llama-3 converted from tiktoken). Invalid UTF-8 is read as U+FFFD.
  /// Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool add_special = true) const;
  /// Decodes ids to text (skip_special drops added special tokens). Invalid
  /// UTF-8 becomes U+FFFD; ids outside the vocabulary decode to nothing.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  Kind kind() const;
  std::string_view kind_name() const;
  int64_t vocab_size() const;           // including added tokens
  std::optional<int32_t> bos_id() const;
  /// tokenizer_config.json's eos_token, then whichever of <|eot_id|>,
  /// <|im_end|>, <|endoftext|>, <|end_of_text|> exist (chat and base models of
  /// these families stop on them whatever the config names); </s> if none.
  std::vector<int32_t> eos_ids() const;
  std::optional<int32_t> token_id(std::string_view token) const;
  std::string token_text(int32_t id) const;  // raw vocab piece; throws for unknown ids
  bool is_special(int32_t id) const;

  ChatFormat chat_format() const;
  /// True when chats are rendered with the checkpoint's own Jinja template
  /// (tokenizer_config.json's chat_template, a named list's "default", a
  /// chat_template.jinja beside it, or a GGUF's tokenizer.chat_template).
  bool has_chat_template() const;
  /// Why the checkpoint's template is not used (it did not parse); empty otherwise.
  const std::string& chat_template_error() const;
  /// Renders messages as the model expects them; encode the result with
  /// add_special=false unless chat_format() is None and there is no template.
  /// With the checkpoint's template: rendered as transformers'
  /// apply_chat_template does (variables messages, tools = None,
  /// add_generation_prompt, bos_token / eos_token from the config); its
  /// raise_exception() throws jinja::RaisedError (a keel::Error). Without one,
  /// the built-in format: ChatML <|im_start|>role\ncontent<|im_end|>\n;
  /// Llama3: BOS once, then <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
  /// with content trimmed as Meta's template does; None: the contents concatenated.
  std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  /// As above, with more template variables: `extra` is a JSON object whose
  /// entries are added to (or replace) the ones above, e.g. "tools" (a list
  /// of tool schemas), "enable_thinking", or "messages" itself for messages
  /// with tool calls. The built-in formats ignore it.
  std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                          const nlohmann::ordered_json& extra) const;

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
