// Added tokens (special tokens such as <|im_start|> and user-added pieces) are
// matched in the text before any normalization or BPE, so they can never be
// split. Matching is leftmost-longest over a byte trie, with Hugging Face's
// per-token options: lstrip/rstrip swallow neighbouring whitespace, single_word
// refuses matches glued to a word.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace keel::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false, rstrip = false, single_word = false;
  bool normalized = false;  // matched on normalized text rather than raw input
};

/// A piece of text: either plain text [begin, end) or an added token's id.
struct Segment {
  size_t begin, end;
  int32_t id;  // -1 for plain text
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);
  bool empty() const { return tokens_.empty(); }
  /// Splits `text` into plain segments and added-token segments (in order).
  void split(std::string_view text, std::vector<Segment>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                       // index into tokens_
  };
  int32_t child(int32_t node, unsigned char b) const;
  bool boundary_ok(std::string_view text, size_t begin, size_t end) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

}  // namespace keel::tokenizer
