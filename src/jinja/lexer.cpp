// The template lexer (see lexer.h). Text is scanned for the next tag; the
// text before it is trimmed as the tag's whitespace control says; the inside
// of the tag is tokenized until its closing delimiter.
#include "jinja/lexer.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace keel::jinja {
namespace {

bool space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

class Lexer {
 public:
  Lexer(std::string_view src, const std::string& name) : name_(name) {
    // Jinja splits on \r\n, \r and \n, joins with \n and drops one trailing
    // empty line (keep_trailing_newline=False).
    src_.reserve(src.size());
    for (size_t i = 0; i < src.size(); ++i) {
      if (src[i] == '\r') {
        src_.push_back('\n');
        if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
      } else {
        src_.push_back(src[i]);
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    bool line_starting = true;  // the last thing consumed ended a line (for lstrip_blocks)
    while (pos_ < src_.size()) {
      size_t tag = find_tag(pos_);
      std::string text = src_.substr(pos_, tag - pos_);
      if (tag == src_.size()) {
        emit_text(std::move(text), pos_);
        pos_ = tag;
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        while (!text.empty() && space(text.back())) text.pop_back();
      } else if (sign != '+' && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool only_blanks = true;
          for (size_t i = l_pos; i < text.size() && only_blanks; ++i) only_blanks = text[i] == ' ' || text[i] == '\t';
          if (only_blanks) text.resize(l_pos);
        }
      }
      emit_text(std::move(text), pos_);
      pos_ = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        comment(tag);
      } else if (kind == '%' && is_raw()) {
        raw(tag);
      } else {
        tag_body(kind, tag);
      }
      line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    out_.push_back(Token{Tok::End, "", 0, 0, where(src_.size()).first, where(src_.size()).second});
    return std::move(out_);
  }

 private:
  std::string src_;
  const std::string& name_;
  size_t pos_ = 0;
  std::vector<Token> out_;

  // Line and column (in characters) of a byte offset. Offsets are asked for
  // mostly in increasing order, so the scan resumes from the last answer.
  std::pair<int, int> where(size_t at) const {
    at = std::min(at, src_.size());
    if (at < cursor_) cursor_ = 0, line_ = 1, col_ = 1;
    for (; cursor_ < at; ++cursor_) {
      if (src_[cursor_] == '\n') {
        ++line_;
        col_ = 1;
      } else if ((uint8_t(src_[cursor_]) & 0xC0) != 0x80) {
        ++col_;
      }
    }
    return {line_, col_};
  }
  mutable size_t cursor_ = 0;
  mutable int line_ = 1, col_ = 1;

  [[noreturn]] void error(size_t at, const std::string& msg) const {
    auto [l, c] = where(at);
    fail(name_, ":", l, ":", c, ": ", msg);
  }

  size_t find_tag(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i)
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    return src_.size();
  }

  void emit_text(std::string text, size_t at) {
    if (text.empty()) return;
    auto [l, c] = where(at);
    out_.push_back(Token{Tok::Text, std::move(text), 0, 0, l, c});
  }

  void push(Tok kind, std::string text, size_t at) {
    auto [l, c] = where(at);
    out_.push_back(Token{kind, std::move(text), 0, 0, l, c});
  }

  // After a closing delimiter ending at pos_: '-' strips the whitespace that
  // follows, a block or comment drops one newline unless marked '+'.
  void after_close(char sign, bool block) {
    if (sign == '-') {
      while (pos_ < src_.size() && space(src_[pos_])) ++pos_;
    } else if (sign != '+' && block && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
  }

  void comment(size_t tag) {
    size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) error(tag, "unclosed comment '{#'");
    const char sign = end > pos_ && (src_[end - 1] == '-' || src_[end - 1] == '+') ? src_[end - 1] : '\0';
    pos_ = end + 2;
    after_close(sign, true);
  }

  // {% raw %} ... {% endraw %}: the text between is output as written.
  bool is_raw() const {
    size_t p = pos_;
    while (p < src_.size() && space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && space(src_[p])) ++p;
    return src_.compare(p, 2, "%}") == 0 || src_.compare(p, 3, "-%}") == 0 || src_.compare(p, 3, "+%}") == 0;
  }

  void raw(size_t tag) {
    size_t close = src_.find("%}", pos_);
    const char open_sign = src_[close - 1];
    pos_ = close + 2;
    after_close(open_sign, true);
    for (size_t p = pos_;; ++p) {
      p = src_.find("{%", p);
      if (p == std::string::npos) error(tag, "unclosed '{% raw %}' (no '{% endraw %}')");
      size_t q = p + 2;
      const char sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q++] : '\0';
      while (q < src_.size() && space(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < src_.size() && space(src_[q])) ++q;
      char end_sign = '\0';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) end_sign = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) continue;
      std::string text = src_.substr(pos_, p - pos_);
      if (sign == '-')
        while (!text.empty() && space(text.back())) text.pop_back();
      emit_text(std::move(text), pos_);
      pos_ = q + 2;
      after_close(end_sign, true);
      return;
    }
  }

  void tag_body(char kind, size_t tag) {
    const bool block = kind == '%';
    push(block ? Tok::BlockBegin : Tok::VarBegin, block ? "{%" : "{{", tag);
    const char close = block ? '%' : '}';
    for (;;) {
      while (pos_ < src_.size() && space(src_[pos_])) ++pos_;
      if (pos_ >= src_.size()) error(tag, block ? "unclosed block tag '{%'" : "unclosed expression '{{'");
      const char c = src_[pos_];
      // Closing delimiter, with optional whitespace control.
      if ((c == '-' || c == '+') && pos_ + 2 < src_.size() && src_[pos_ + 1] == close && src_[pos_ + 2] == '}') {
        push(block ? Tok::BlockEnd : Tok::VarEnd, "", pos_);
        pos_ += 3;
        after_close(c, block);
        return;
      }
      if (c == close && pos_ + 1 < src_.size() && src_[pos_ + 1] == '}') {
        push(block ? Tok::BlockEnd : Tok::VarEnd, "", pos_);
        pos_ += 2;
        after_close('\0', block);
        return;
      }
      expression_token();
    }
  }

  void expression_token() {
    const size_t at = pos_;
    const char c = src_[pos_];
    if (std::isalpha(uint8_t(c)) || c == '_') {
      size_t e = pos_;
      while (e < src_.size() && (std::isalnum(uint8_t(src_[e])) || src_[e] == '_')) ++e;
      push(Tok::Name, src_.substr(pos_, e - pos_), at);
      pos_ = e;
      return;
    }
    if (std::isdigit(uint8_t(c))) return number();
    if (c == '\'' || c == '"') return string_literal();
    static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                       "=",  "(",  ")",  "[",  "]",  "{",  "}", ",", ".", ":", "|"};
    for (const char* op : kOps) {
      const size_t n = std::strlen(op);
      if (src_.compare(pos_, n, op) == 0) {
        push(Tok::Op, op, at);
        pos_ += n;
        return;
      }
    }
    error(at, std::string("unexpected character '") + c + "'");
  }

  void number() {
    const size_t at = pos_;
    std::string digits;
    bool is_float = false;
    auto take_digits = [&] {
      while (pos_ < src_.size() && (std::isdigit(uint8_t(src_[pos_])) || src_[pos_] == '_')) {
        if (src_[pos_] != '_') digits.push_back(src_[pos_]);
        ++pos_;
      }
    };
    take_digits();
    if (pos_ + 1 < src_.size() && src_[pos_] == '.' && std::isdigit(uint8_t(src_[pos_ + 1]))) {
      is_float = true;
      digits.push_back('.');
      ++pos_;
      take_digits();
    }
    if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      size_t p = pos_ + 1;
      if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
      if (p < src_.size() && std::isdigit(uint8_t(src_[p]))) {
        is_float = true;
        digits.append(src_, pos_, p - pos_);
        pos_ = p;
        take_digits();
      }
    }
    auto [l, col] = where(at);
    Token t{is_float ? Tok::Float : Tok::Int, digits, 0, 0, l, col};
    if (is_float) {
      t.f = std::strtod(digits.c_str(), nullptr);
    } else {
      errno = 0;
      t.i = std::strtoll(digits.c_str(), nullptr, 10);
      if (errno == ERANGE) error(at, "integer literal " + digits + " is too large");
    }
    out_.push_back(std::move(t));
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(char(cp));
    } else if (cp < 0x800) {
      out.push_back(char(0xC0 | (cp >> 6)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(char(0xE0 | (cp >> 12)));
      out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(char(0xF0 | (cp >> 18)));
      out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(char(0x80 | (cp & 0x3F)));
    }
  }

  // A Python string literal: the escapes \n \t \r \\ \' \" \b \f \v \0 \xNN
  // \uNNNN \UNNNNNNNN; any other backslash is kept, as Python does.
  void string_literal() {
    const size_t at = pos_;
    const char q = src_[pos_++];
    std::string out;
    for (;;) {
      if (pos_ >= src_.size()) error(at, "unterminated string literal");
      const char c = src_[pos_++];
      if (c == q) break;
      if (c != '\\' || pos_ >= src_.size()) {
        out.push_back(c);
        continue;
      }
      const char e = src_[pos_++];
      auto hex = [&](int n) {
        if (pos_ + size_t(n) > src_.size()) error(at, "truncated escape in string literal");
        uint32_t v = 0;
        for (int k = 0; k < n; ++k) {
          const char h = src_[pos_++];
          if (!std::isxdigit(uint8_t(h))) error(at, "bad hex escape in string literal");
          v = v * 16 + uint32_t(std::isdigit(uint8_t(h)) ? h - '0' : (std::tolower(uint8_t(h)) - 'a' + 10));
        }
        if (v > 0x10FFFF) error(at, "escape out of Unicode range in string literal");
        append_utf8(out, v);
      };
      switch (e) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'v': out.push_back('\v'); break;
        case 'a': out.push_back('\a'); break;
        case '0': out.push_back('\0'); break;
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case '\n': break;  // line continuation
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default:
          out.push_back('\\');
          out.push_back(e);
      }
    }
    auto [l, col] = where(at);
    out_.push_back(Token{Tok::String, std::move(out), 0, 0, l, col});
  }
};

}  // namespace

std::vector<Token> lex(std::string_view source, const std::string& name) { return Lexer(source, name).run(); }

}  // namespace keel::jinja
