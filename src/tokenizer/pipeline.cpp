// Normalizers and pre-tokenizers (see pipeline.h). The regex split is the hot
// path of encoding besides BPE itself: patterns are JIT-compiled once, input
// is validated as UTF-8 once up front so PCRE2 can skip its per-call check,
// and words are views into the segment, not copies.
#include "tokenizer/pipeline.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace keel::tokenizer {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

using json = nlohmann::json;

std::string type_of(const json& j, const std::string& where) {
  KEEL_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(), where, ": expected an object with a \"type\"");
  return j["type"].get<std::string>();
}

// Code points that a normalization form leaves alone in every context: a
// starter (combining class 0) that maps to itself and is never the second
// element of a canonical composition. A run of such characters is its own
// normal form, so most CJK, Cyrillic, accented Latin and emoji text skips
// utf8proc. One table per form, built on first use (~200k look-ups).
class InertTable {
 public:
  explicit InertTable(utf8proc_option_t opts) : bits_(kLimit / 8, 0) {
    std::vector<bool> second(kLimit, false);
    utf8proc_int32_t buf[32];
    int last = 0;
    for (int32_t cp = 0; cp < kLimit; ++cp) {
      if (cp >= 0xd800 && cp <= 0xdfff) continue;
      utf8proc_ssize_t n = utf8proc_decompose_char(cp, buf, 32, UTF8PROC_DECOMPOSE, &last);
      for (utf8proc_ssize_t i = 1; i < n && i < 32; ++i)
        if (buf[i] < kLimit) second[size_t(buf[i])] = true;
    }
    for (int32_t cp = 0x80; cp < kLimit; ++cp) {
      if ((cp >= 0xd800 && cp <= 0xdfff) || second[size_t(cp)]) continue;
      if (utf8proc_get_property(cp)->combining_class != 0) continue;
      last = 0;
      utf8proc_ssize_t n = utf8proc_decompose_char(cp, buf, 32, opts, &last);
      if (n > 1 && n <= 32 && (opts & UTF8PROC_COMPOSE)) n = utf8proc_normalize_utf32(buf, n, opts);
      if (n == 1 && buf[0] == cp) bits_[size_t(cp) >> 3] |= uint8_t(1u << (cp & 7));
    }
  }
  bool inert(int32_t cp) const {
    if (cp < kLimit) return (bits_[size_t(cp) >> 3] >> (cp & 7)) & 1;
    // Above the table no character decomposes or composes.
    return utf8proc_get_property(cp)->combining_class == 0 && utf8proc_get_property(cp)->decomp_seqindex == UINT16_MAX;
  }

 private:
  static constexpr int32_t kLimit = 0x30000;  // every decomposable character lies below
  std::vector<uint8_t> bits_;
};

const InertTable& inert_table(utf8proc_option_t opts) {
  auto form = [](int flags) { return utf8proc_option_t(UTF8PROC_STABLE | flags); };
  bool compat = opts & UTF8PROC_COMPAT;
  if (opts & UTF8PROC_COMPOSE) {
    if (compat) {
      static const InertTable nfkc(form(UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
      return nfkc;
    }
    static const InertTable nfc(form(UTF8PROC_COMPOSE));
    return nfc;
  }
  if (compat) {
    static const InertTable nfkd(form(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
    return nfkd;
  }
  static const InertTable nfd(form(UTF8PROC_DECOMPOSE));
  return nfd;
}

// True when every character of the (valid UTF-8) run is inert under the form.
bool run_is_inert(const InertTable& table, const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t len = utf8_len(p[i]);
    int32_t cp = len == 2   ? ((p[i] & 0x1f) << 6) | (p[i + 1] & 0x3f)
                 : len == 3 ? ((p[i] & 0x0f) << 12) | ((p[i + 1] & 0x3f) << 6) | (p[i + 2] & 0x3f)
                            : ((p[i] & 0x07) << 18) | ((p[i + 1] & 0x3f) << 12) | ((p[i + 2] & 0x3f) << 6) | (p[i + 3] & 0x3f);
    if (!table.inert(cp)) return false;
    i += len;
  }
  return true;
}

// Unicode normalization of `s` with utf8proc. Only runs of non-ASCII text (and
// the ASCII character before each, which a combining mark may attach to) go
// through utf8proc, and only when some character in the run could change:
// ASCII never composes with what precedes it and is its own normal form, and
// so are inert characters (most CJK, Cyrillic, emoji ...).
std::string unicode_normalize(std::string_view s, utf8proc_option_t opts) {
  const InertTable& table = inert_table(opts);
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    size_t k = i;
    while (k < n && p[k] < 0x80) ++k;
    if (k == n) {
      out.append(s.data() + i, n - i);
      break;
    }
    size_t chunk = k > i ? k - 1 : k;
    out.append(s.data() + i, chunk - i);
    size_t e = k;
    while (e < n && p[e] >= 0x80) ++e;
    if (run_is_inert(table, p + k, e - k)) {
      out.append(s.data() + chunk, e - chunk);
      i = e;
      continue;
    }
    utf8proc_uint8_t* dst = nullptr;
    utf8proc_ssize_t len = utf8proc_map(p + chunk, utf8proc_ssize_t(e - chunk), &dst, opts);
    KEEL_CHECK(len >= 0, "tokenizer: unicode normalization failed: ", utf8proc_errmsg(len));
    out.append(reinterpret_cast<const char*>(dst), size_t(len));
    std::free(dst);
    i = e;
  }
  return out;
}

std::string lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t i = 0, n = utf8proc_ssize_t(s.size());
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t len = utf8proc_iterate(p + i, n - i, &cp);
    if (len <= 0) {  // cannot happen on validated input; keep the byte
      out += s[size_t(i)];
      ++i;
      continue;
    }
    append_utf8(out, uint32_t(utf8proc_tolower(cp)));
    i += len;
  }
  return out;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(s);
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  for (size_t k; (k = s.find(from, i)) != std::string_view::npos; i = k + from.size()) {
    out.append(s.substr(i, k - i));
    out.append(to);
  }
  out.append(s.substr(i));
  return out;
}

// The "String" or "Regex" of a {"pattern": {...}} field.
std::pair<std::string, bool> pattern_of(const json& j, const std::string& where) {
  KEEL_CHECK(j.contains("pattern") && j["pattern"].is_object(), where, ".pattern: missing");
  const json& p = j["pattern"];
  if (p.contains("String")) return {p["String"].get<std::string>(), true};
  if (p.contains("Regex")) return {p["Regex"].get<std::string>(), false};
  fail(where, ".pattern: expected \"String\" or \"Regex\"");
}

// Per-thread PCRE2 match state: match data sized for the largest pattern and a
// generous JIT stack, so long runs of whitespace never hit the 32 KiB default.
struct MatchState {
  pcre2_match_context* ctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    ctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    if (ctx && stack) pcre2_jit_stack_assign(ctx, nullptr, stack);
  }
  ~MatchState() {
    if (stack) pcre2_jit_stack_free(stack);
    if (ctx) pcre2_match_context_free(ctx);
  }
};

// Words out of `piece` given the matches in it, per Hugging Face's split behaviours.
void apply_behavior(std::string_view piece, const std::vector<std::pair<size_t, size_t>>& matches,
                    SplitBehavior behavior, bool invert, std::vector<std::string_view>& out) {
  struct Part {
    size_t b, e;
    bool match;
  };
  std::vector<Part> parts;
  size_t pos = 0;
  for (auto [b, e] : matches) {
    if (b > pos) parts.push_back({pos, b, invert});
    parts.push_back({b, e, !invert});
    pos = e;
  }
  if (pos < piece.size()) parts.push_back({pos, piece.size(), invert});

  auto emit = [&](const Part& p) {
    if (p.e > p.b) out.push_back(piece.substr(p.b, p.e - p.b));
  };
  if (behavior == SplitBehavior::Isolated || behavior == SplitBehavior::Removed) {
    for (const Part& p : parts)
      if (behavior == SplitBehavior::Isolated || !p.match) emit(p);
    return;
  }
  std::vector<Part> merged;
  switch (behavior) {
    case SplitBehavior::Isolated:
    case SplitBehavior::Removed:
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (const Part& p : parts) {
        if (p.match && !prev_match && !merged.empty()) merged.back().e = p.e;
        else merged.push_back(p);
        prev_match = p.match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool prev_match = false;
      for (size_t k = parts.size(); k-- > 0;) {
        const Part& p = parts[k];
        if (p.match && !prev_match && !merged.empty()) merged.back().b = p.b;
        else merged.push_back(p);
        prev_match = p.match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool prev_match = false;
      for (const Part& p : parts) {
        if (p.match && prev_match && !merged.empty()) merged.back().e = p.e;
        else merged.push_back(p);
        prev_match = p.match;
      }
      break;
    }
  }
  for (const Part& p : merged) emit(p);
}

SplitBehavior parse_behavior(const std::string& s, const std::string& where) {
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  fail(where, ".behavior: unknown split behavior \"", s, "\"");
}

}  // namespace

// ---------------------------------------------------------------- Normalizer

Normalizer Normalizer::from_json(const json& j, const std::string& where) {
  Normalizer n;
  if (!j.is_null()) n.parse(j, where);
  return n;
}

Normalizer Normalizer::nfc() {
  Normalizer n;
  n.steps_.push_back(Step{Op::Nfc, "", ""});
  return n;
}

void Normalizer::parse(const json& j, const std::string& where) {
  std::string type = type_of(j, where);
  if (type == "Sequence") {
    KEEL_CHECK(j.contains("normalizers") && j["normalizers"].is_array(), where, ".normalizers: expected an array");
    for (size_t i = 0; i < j["normalizers"].size(); ++i) parse(j["normalizers"][i], cat(where, ".normalizers[", i, "]"));
  } else if (type == "NFC") {
    steps_.push_back(Step{Op::Nfc, "", ""});
  } else if (type == "NFKC") {
    steps_.push_back(Step{Op::Nfkc, "", ""});
  } else if (type == "NFD") {
    steps_.push_back(Step{Op::Nfd, "", ""});
  } else if (type == "NFKD") {
    steps_.push_back(Step{Op::Nfkd, "", ""});
  } else if (type == "Lowercase") {
    steps_.push_back(Step{Op::Lowercase, "", ""});
  } else if (type == "Prepend") {
    steps_.push_back(Step{Op::Prepend, "", j.at("prepend").get<std::string>()});
  } else if (type == "Replace") {
    auto [pattern, literal] = pattern_of(j, where);
    KEEL_CHECK(literal, where, ": Replace with a Regex pattern is not supported");
    steps_.push_back(Step{Op::Replace, pattern, j.at("content").get<std::string>()});
  } else {
    fail(where, ": normalizer type \"", type, "\" is not supported");
  }
}

std::string Normalizer::apply(std::string_view text) const {
  std::string s(text);
  for (const Step& st : steps_) {
    switch (st.op) {
      case Op::Nfc: s = unicode_normalize(s, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE)); break;
      case Op::Nfkc:
        s = unicode_normalize(s, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
        break;
      case Op::Nfd: s = unicode_normalize(s, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE)); break;
      case Op::Nfkd:
        s = unicode_normalize(s, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
        break;
      case Op::Lowercase: s = lowercase(s); break;
      case Op::Prepend:
        if (!s.empty()) s = st.to + s;
        break;
      case Op::Replace: s = replace_all(s, st.from, st.to); break;
    }
  }
  return s;
}

// --------------------------------------------------------------------- Regex

Regex::Regex(const std::string& pattern, bool literal, const std::string& where) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0u);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail(where, ": cannot compile regex at offset ", offset, ": ", reinterpret_cast<const char*>(msg));
  }
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;  // else the interpreter runs it
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  thread_local MatchState state;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  KEEL_CHECK(md, "tokenizer: out of memory for regex match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), pos, 0, md, state.ctx)
                  : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, state.ctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail("tokenizer: regex match failed: ", reinterpret_cast<const char*>(msg));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    if (e == b) {  // empty match: step over one character
      if (b >= text.size()) break;
      pos = b + utf8_len(static_cast<unsigned char>(text[b]));
      continue;
    }
    out.emplace_back(b, e);
    pos = e;
  }
  pcre2_match_data_free(md);
}

// -------------------------------------------------------------- PreTokenizer

PreTokenizer PreTokenizer::from_json(const json& j, const std::string& where) {
  PreTokenizer p;
  if (!j.is_null()) p.parse(j, where);
  return p;
}

PreTokenizer PreTokenizer::split_then_byte_level(const std::string& pattern) {
  PreTokenizer p;
  Step split(Op::Split);
  split.regex = std::make_shared<Regex>(pattern, false, "Qwen2 split regex");
  p.steps_.push_back(split);
  p.has_byte_level_ = true;
  return p;
}

void PreTokenizer::parse(const json& j, const std::string& where) {
  std::string type = type_of(j, where);
  auto regex_step = [&](const std::string& pattern, SplitBehavior behavior) {
    Step s(Op::Split);
    s.regex = std::make_shared<Regex>(pattern, false, where);
    s.behavior = behavior;
    steps_.push_back(s);
  };
  if (type == "Sequence") {
    KEEL_CHECK(j.contains("pretokenizers") && j["pretokenizers"].is_array(), where, ".pretokenizers: expected an array");
    for (size_t i = 0; i < j["pretokenizers"].size(); ++i)
      parse(j["pretokenizers"][i], cat(where, ".pretokenizers[", i, "]"));
  } else if (type == "Split") {
    auto [pattern, literal] = pattern_of(j, where);
    Step s(Op::Split);
    s.regex = std::make_shared<Regex>(pattern, literal, where + ".pattern");
    s.behavior = parse_behavior(j.value("behavior", std::string("Isolated")), where);
    s.invert = j.value("invert", false);
    steps_.push_back(s);
  } else if (type == "ByteLevel") {
    Step s(Op::ByteLevel);
    s.add_prefix_space = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) s.regex = std::make_shared<Regex>(kGpt2Pattern, false, where);
    // The BPE model takes raw bytes, so the byte-to-character mapping itself
    // is not a step here; without prefix or regex ByteLevel splits nothing.
    if (s.add_prefix_space || s.regex) steps_.push_back(s);
    has_byte_level_ = true;
  } else if (type == "Metaspace") {
    Step s(Op::Metaspace);
    s.replacement = j.value("replacement", std::string("\xe2\x96\x81"));
    std::string scheme = j.value("prepend_scheme", std::string(j.value("add_prefix_space", true) ? "always" : "never"));
    if (scheme == "always") s.prepend = Step::Prepend::Always;
    else if (scheme == "first") s.prepend = Step::Prepend::First;
    else if (scheme == "never") s.prepend = Step::Prepend::Never;
    else fail(where, ".prepend_scheme: unknown value \"", scheme, "\"");
    s.split = j.value("split", true);
    steps_.push_back(s);
  } else if (type == "Digits") {
    regex_step(j.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)", SplitBehavior::Isolated);
  } else if (type == "WhitespaceSplit") {
    regex_step(R"(\s+)", SplitBehavior::Removed);
  } else if (type == "Whitespace") {
    regex_step(R"(\w+|[^\w\s]+)", SplitBehavior::Isolated);
    steps_.back().invert = true;  // keep the matches, drop the whitespace between them
    steps_.back().behavior = SplitBehavior::Removed;
  } else if (type == "Punctuation") {
    regex_step(R"([\p{P}\p{S}])", parse_behavior(j.value("behavior", std::string("Isolated")), where));
  } else {
    fail(where, ": pre_tokenizer type \"", type, "\" is not supported");
  }
}

void PreTokenizer::split(std::string_view text, bool first, std::deque<std::string>& arena,
                         std::vector<std::string_view>& words) const {
  if (steps_.empty()) {
    if (!text.empty()) words.push_back(text);
    return;
  }
  std::vector<std::string_view> cur{text}, next;
  std::vector<std::pair<size_t, size_t>> matches;
  for (size_t si = 0; si < steps_.size(); ++si) {
    const Step& st = steps_[si];
    // The last step writes straight into `words` (every step drops empty pieces).
    std::vector<std::string_view>& dst = si + 1 == steps_.size() ? words : next;
    next.clear();
    for (size_t pi = 0; pi < cur.size(); ++pi) {
      std::string_view piece = cur[pi];
      switch (st.op) {
        case Op::Split:
          matches.clear();
          st.regex->find_all(piece, matches);
          apply_behavior(piece, matches, st.behavior, st.invert, dst);
          break;
        case Op::ByteLevel:
          if (st.add_prefix_space && (piece.empty() || piece[0] != ' ')) {
            std::string& prefixed = arena.emplace_back(1, ' ');
            prefixed.append(piece);
            piece = prefixed;
          }
          if (st.regex) {
            matches.clear();
            st.regex->find_all(piece, matches);
            apply_behavior(piece, matches, SplitBehavior::Isolated, false, dst);
          } else if (!piece.empty()) {
            dst.push_back(piece);
          }
          break;
        case Op::Metaspace: {
          std::string s = replace_all(piece, " ", st.replacement);
          bool starts = s.compare(0, st.replacement.size(), st.replacement) == 0;
          if (!starts && (st.prepend == Step::Prepend::Always || (st.prepend == Step::Prepend::First && first && pi == 0)))
            s = st.replacement + s;
          arena.push_back(std::move(s));
          std::string_view v = arena.back();
          if (st.split) {
            matches.clear();
            for (size_t k = 0; (k = v.find(st.replacement, k)) != std::string_view::npos; k += st.replacement.size())
              matches.emplace_back(k, k + st.replacement.size());
            apply_behavior(v, matches, SplitBehavior::MergedWithNext, false, dst);
          } else if (!v.empty()) {
            dst.push_back(v);
          }
          break;
        }
      }
    }
    std::swap(cur, next);
  }
}

}  // namespace keel::tokenizer
