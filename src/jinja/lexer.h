// Splits template source into tokens: literal text, the delimiters of
// {{ ... }} and {% ... %}, and the expression tokens inside them. Comments
// {# ... #} and {% raw %} blocks are resolved here. Whitespace control follows
// Jinja with the settings transformers uses (trim_blocks, lstrip_blocks,
// keep_trailing_newline off): '-' strips all whitespace on its side, '+'
// keeps it, a block or comment tag drops the one newline after it and the
// spaces and tabs before it on its line. Newlines are normalized to '\n' and
// one trailing newline of the source is dropped, as Jinja does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace keel::jinja {

enum class Tok : uint8_t {
  Text,        // literal output
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,
  String,  // text holds the unescaped value
  Int,
  Float,
  Op,  // text holds the operator: + - * / // % ** ~ == != < > <= >= = ( ) [ ] { } , . : |
  End,
};

struct Token {
  Tok kind = Tok::End;
  std::string text;
  int64_t i = 0;
  double f = 0;
  int line = 1, col = 1;
};

/// Tokenizes `source`. Throws keel::Error "NAME:LINE:COL: ..." for unclosed
/// tags or strings and characters that are not part of the expression syntax.
std::vector<Token> lex(std::string_view source, const std::string& name);

}  // namespace keel::jinja
