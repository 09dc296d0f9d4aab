// Turns a stream of generated token ids into text that is safe to print as it
// arrives: never half a UTF-8 character (tokenizer::StreamDecoder), and never
// text that may turn out to be the start of a stop string. When a stop string
// appears, the text before it is released and the stream reports it stopped.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace keel::engine {

class TextStream {
 public:
  /// `context` (e.g. the prompt) is decoded first but not released, so the
  /// first generated token is decoded in context (SentencePiece strips the
  /// leading space of a text's first token only).
  TextStream(const tokenizer::Tokenizer& tok, std::vector<std::string> stop_strings,
             const std::vector<int32_t>& context = {}, bool skip_special = true);
  /// Feeds one token; returns the text that can be printed now.
  std::string push(int32_t id);
  /// True once a stop string was seen (later pushes return nothing).
  bool stopped() const { return stopped_; }
  /// Releases what is still held back (nothing after a stop).
  std::string finish();
  /// All text released so far.
  const std::string& text() const { return released_; }
  /// The text the last push() decoded its token to, before any stop-string
  /// hold-back (empty while a UTF-8 character is incomplete: the token that
  /// completes it carries its bytes; empty after a stop).
  const std::string& last_decoded() const { return last_decoded_; }

 private:
  std::string release(size_t n);
  tokenizer::StreamDecoder dec_;
  std::vector<std::string> stops_;
  std::string pending_;   // decoded but not yet released
  std::string released_;
  std::string last_decoded_;
  bool stopped_ = false;
};

}  // namespace keel::engine
