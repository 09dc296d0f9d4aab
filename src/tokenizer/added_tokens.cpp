// Leftmost-longest added-token matching over a byte trie (see added_tokens.h).
#include "tokenizer/added_tokens.h"

#include <algorithm>
#include <cctype>

namespace keel::tokenizer {
namespace {

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
// Conservative word-character test for single_word: ASCII alphanumerics, '_'
// and any non-ASCII byte (letters of other scripts).
bool is_word_byte(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) : tokens_(tokens) {
  nodes_.emplace_back();
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& s = tokens_[t].content;
    if (s.empty()) continue;
    int32_t node = 0;
    for (unsigned char b : s) {
      int32_t next = child(node, b);
      if (next < 0) {
        next = int32_t(nodes_.size());
        nodes_.emplace_back();
        auto& ch = nodes_[node].children;
        ch.insert(std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t(-1))), {b, next});
      }
      node = next;
    }
    if (nodes_[node].token < 0) nodes_[node].token = int32_t(t);
    first_byte_[static_cast<unsigned char>(s[0])] = true;
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char b) const {
  const auto& ch = nodes_[node].children;
  auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t(-1)));
  return it != ch.end() && it->first == b ? it->second : -1;
}

bool AddedTokenMatcher::boundary_ok(std::string_view text, size_t begin, size_t end) const {
  auto u = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  if (begin > 0 && is_word_byte(u(begin - 1))) return false;
  if (end < text.size() && is_word_byte(u(end))) return false;
  return true;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& out) const {
  size_t plain_start = 0, i = 0, n = text.size();
  while (i < n) {
    if (!first_byte_[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    // Walk the trie, remembering every token that ends along the way; the
    // longest one that passes its single_word check wins.
    int32_t best = -1;
    size_t best_end = 0;
    int32_t node = 0;
    for (size_t j = i; j < n; ++j) {
      node = child(node, static_cast<unsigned char>(text[j]));
      if (node < 0) break;
      int32_t t = nodes_[node].token;
      if (t >= 0 && (!tokens_[t].single_word || boundary_ok(text, i, j + 1))) {
        best = t;
        best_end = j + 1;
      }
    }
    if (best < 0) {
      ++i;
      continue;
    }
    const AddedToken& tok = tokens_[best];
    size_t begin = i, end = best_end;
    if (tok.lstrip)
      while (begin > plain_start && is_space(static_cast<unsigned char>(text[begin - 1]))) --begin;
    if (tok.rstrip)
      while (end < n && is_space(static_cast<unsigned char>(text[end]))) ++end;
    if (begin > plain_start) out.push_back(Segment{plain_start, begin, -1});
    out.push_back(Segment{begin, end, tok.id});
    plain_start = i = end;
  }
  if (plain_start < n) out.push_back(Segment{plain_start, n, -1});
}

}  // namespace keel::tokenizer
