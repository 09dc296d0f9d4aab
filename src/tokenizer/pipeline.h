// The text stages between raw input and the BPE model, read from the
// "normalizer" and "pre_tokenizer" objects of tokenizer.json:
//  - Normalizer: NFC/NFKC/NFD/NFKD (utf8proc), Prepend, Replace, Lowercase, in sequence.
//  - PreTokenizer: Split (a PCRE2-JIT regex with Unicode properties, any
//    Hugging Face split behaviour), ByteLevel (optionally with the GPT-2 regex)
//    and Metaspace (SentencePiece's "▁" word marker), in sequence.
// Both run on one plain-text segment (the text between added tokens).
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace keel::tokenizer {

class Normalizer {
 public:
  /// Parses a normalizer object (null gives the identity); `where` names the
  /// file and field for errors.
  static Normalizer from_json(const nlohmann::json& j, const std::string& where);
  /// NFC only (what vocab.json + merges.txt tokenizers use).
  static Normalizer nfc();
  /// Returns the normalized text (identity when there are no steps).
  std::string apply(std::string_view text) const;
  bool empty() const { return steps_.empty(); }

 private:
  enum class Op { Nfc, Nfkc, Nfd, Nfkd, Prepend, Replace, Lowercase };
  struct Step {
    Op op;
    std::string from, to;
  };
  void parse(const nlohmann::json& j, const std::string& where);
  std::vector<Step> steps_;
};

/// A compiled PCRE2 pattern (UTF + Unicode properties, JIT when available).
class Regex {
 public:
  Regex(const std::string& pattern, bool literal, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  /// Appends the [begin, end) of every non-overlapping match in `text`.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8
  bool jit_ = false;      // JIT-compiled: match through pcre2_jit_match
};

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

class PreTokenizer {
 public:
  static PreTokenizer from_json(const nlohmann::json& j, const std::string& where);
  /// Split(regex, Isolated) + ByteLevel(no regex): the Qwen2 family.
  static PreTokenizer split_then_byte_level(const std::string& pattern);

  /// Cuts one normalized segment into words. Words are views into `text` or
  /// into strings kept in `arena` (when a step rewrites text). `first` says
  /// the segment starts the input (Metaspace's prepend_scheme "first").
  void split(std::string_view text, bool first, std::deque<std::string>& arena,
             std::vector<std::string_view>& words) const;
  bool has_byte_level() const { return has_byte_level_; }

 private:
  enum class Op { Split, ByteLevel, Metaspace };
  struct Step {
    explicit Step(Op o) : op(o) {}
    Op op;
    std::shared_ptr<Regex> regex;  // Split, ByteLevel with use_regex
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel (ids are bytes already, so without
                                    // prefix or regex the step changes nothing)
    std::string replacement;        // Metaspace
    enum class Prepend { Always, First, Never } prepend = Prepend::Always;
    bool split = true;  // Metaspace
  };
  void parse(const nlohmann::json& j, const std::string& where);
  std::vector<Step> steps_;
  bool has_byte_level_ = false;
};

/// The GPT-2 regex that ByteLevel(use_regex: true) applies.
extern const char* const kGpt2Pattern;
/// The regex Qwen2/Qwen3 split with (transformers' Qwen2Tokenizer).
extern const char* const kQwen2Pattern;

}  // namespace keel::tokenizer
