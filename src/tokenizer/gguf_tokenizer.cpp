// A Tokenizer from a GGUF file's tokenizer.ggml.* metadata. The metadata is
// written into the tokenizer.json and tokenizer_config.json objects that
// transformers builds from the same file (integrations/gguf/
// gguf_tokenizer_mapping.py), and those go through the same loader as a
// Hugging Face folder, so both formats encode identically:
//  - "gpt2": byte-level BPE with the file's merges; the split regex named by
//    tokenizer.ggml.pre (llama3 and qwen2 families), else GPT-2's ByteLevel
//    regex (as transformers, which has no table entry for e.g. "smollm").
//  - "llama": SentencePiece-style BPE (byte fallback, Metaspace "▁"), merges
//    from the file or, when absent, derived from the vocabulary and scores as
//    transformers' generate_merges does.
// Tokens of type CONTROL become special added tokens, USER_DEFINED plain added
// tokens; bos/eos/unk ids and add_bos_token come from the metadata, and the
// chat template from tokenizer.chat_template.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <tuple>
#include <unordered_map>

#include "core/error.h"
#include "model/gguf.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace keel::tokenizer {

namespace {

using nlohmann::json;

constexpr int64_t kControl = 3, kUserDefined = 4;

const char* const kLlama3Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// The split regex transformers uses for a tokenizer.ggml.pre name, or null.
const char* split_for_pre(const std::string& pre) {
  for (const char* p : {"llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx", "pixtral"})
    if (pre == p) return kLlama3Split;
  for (const char* p : {"qwen2", "deepseek-r1-qwen", "megrez"})
    if (pre == p) return kQwen2Pattern;
  return nullptr;
}

/// Number of code points in UTF-8 text (Python's len of the string).
size_t code_points(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

/// Whether every code point of a token is in the GPT-2 byte alphabet.
bool byte_level_spelled(const std::string& token) { return byte_level_to_bytes(token).has_value(); }

/// transformers' generate_merges: every split of every piece into two pieces
/// of the vocabulary, ordered by the merged piece's score (best first), then
/// by the lengths of the two halves.
json derive_merges(const std::vector<std::string>& tokens, const std::vector<double>& scores) {
  std::unordered_map<std::string, int64_t> vocab;
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = int64_t(i);
  struct M {
    double score;
    size_t len_l, len_r;
    int64_t id_l, id_r;
    size_t order;
    std::string l, r;
  };
  std::vector<M> all;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    std::vector<size_t> cuts;  // code point boundaries
    for (size_t k = 1; k < t.size(); ++k)
      if ((static_cast<unsigned char>(t[k]) & 0xC0) != 0x80) cuts.push_back(k);
    std::vector<M> local;
    for (size_t k : cuts) {
      auto a = vocab.find(t.substr(0, k)), b = vocab.find(t.substr(k));
      if (a == vocab.end() || b == vocab.end()) continue;
      local.push_back({i < scores.size() ? scores[i] : 0.0, code_points(a->first), code_points(b->first), a->second,
                       b->second, 0, a->first, b->first});
    }
    std::sort(local.begin(), local.end(),
              [](const M& x, const M& y) { return std::tie(x.id_l, x.id_r) < std::tie(y.id_l, y.id_r); });
    for (M& m : local) {
      m.order = all.size();
      all.push_back(std::move(m));
    }
  }
  // Python's sort is stable; reverse=True keeps equal keys in their original order.
  std::stable_sort(all.begin(), all.end(), [](const M& x, const M& y) {
    return std::tie(x.score, x.len_l, x.len_r) > std::tie(y.score, y.len_l, y.len_r);
  });
  json merges = json::array();
  for (const M& m : all) merges.push_back(json::array({m.l, m.r}));
  return merges;
}

}  // namespace

bool is_gguf_path(const std::string& path) { return model::looks_like_gguf(path); }

std::unique_ptr<Tokenizer::Impl> load_impl_gguf(const std::string& path) {
  model::GgufFile g = model::GgufFile::open(path);
  const std::string type = g.need_string("tokenizer.ggml.model");
  const model::GgufValue* tv = g.find("tokenizer.ggml.tokens");
  if (!tv || tv->type != model::GgufType::Array || tv->elem != model::GgufType::String)
    fail(path, ": metadata 'tokenizer.ggml.tokens' is missing or not an array of strings");
  const std::vector<std::string>& tokens = tv->strings;
  if (tokens.empty()) fail(path, ": metadata 'tokenizer.ggml.tokens' is empty");
  std::vector<int64_t> types;
  if (const model::GgufValue* t = g.find("tokenizer.ggml.token_type")) {
    if (t->type != model::GgufType::Array || t->ints.size() != tokens.size())
      fail(path, ": metadata 'tokenizer.ggml.token_type' must be an integer array as long as the tokens (",
           tokens.size(), ")");
    types = t->ints;
  }
  auto token_at = [&](const char* key) -> std::optional<std::string> {
    auto id = g.get_int(key);
    if (!id) return std::nullopt;
    if (*id < 0 || size_t(*id) >= tokens.size())
      fail(path, ": metadata '", key, "' (", *id, ") is outside the vocabulary (", tokens.size(), " tokens)");
    return tokens[size_t(*id)];
  };

  json tj, cfg = json::object();
  const bool byte_level = type == "gpt2";
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = int64_t(i);
  json model{{"type", "BPE"}, {"vocab", std::move(vocab)}, {"fuse_unk", !byte_level}, {"byte_fallback", !byte_level}};
  if (const model::GgufValue* m = g.find("tokenizer.ggml.merges")) {
    if (m->type != model::GgufType::Array || m->elem != model::GgufType::String)
      fail(path, ": metadata 'tokenizer.ggml.merges' must be an array of strings");
    model["merges"] = m->strings;
  } else if (byte_level) {
    fail(path, ": metadata 'tokenizer.ggml.merges' is missing (a gpt2 tokenizer needs its merges)");
  } else {
    const model::GgufValue* s = g.find("tokenizer.ggml.scores");
    if (!s || s->floats.size() != tokens.size())
      fail(path, ": metadata 'tokenizer.ggml.scores' must be a float array as long as the tokens (", tokens.size(),
           ") when the file has no merges");
    model["merges"] = derive_merges(tokens, s->floats);
  }

  if (byte_level) {
    const std::string pre = g.get_string("tokenizer.ggml.pre").value_or("default");
    if (const char* split = split_for_pre(pre))
      tj["pre_tokenizer"] = {{"type", "Sequence"},
                             {"pretokenizers",
                              {{{"type", "Split"}, {"pattern", {{"Regex", split}}}, {"behavior", "Isolated"},
                                {"invert", false}},
                               {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                                {"use_regex", false}}}}};
    else
      tj["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                             {"use_regex", true}};
    tj["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  } else if (type == "llama") {
    if (auto unk = token_at("tokenizer.ggml.unknown_token_id")) model["unk_token"] = *unk;
    const bool prefix = g.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    tj["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xe2\x96\x81"},
                           {"prepend_scheme", prefix ? "first" : "never"}, {"split", false}};
    tj["decoder"] = {{"type", "Sequence"},
                     {"decoders",
                      {{{"type", "Replace"}, {"pattern", {{"String", "\xe2\x96\x81"}}}, {"content", " "}},
                       {{"type", "ByteFallback"}},
                       {{"type", "Fuse"}},
                       {{"type", "Strip"}, {"content", " "}, {"start", prefix ? 1 : 0}, {"stop", 0}}}}};
  } else {
    fail(path, ": metadata 'tokenizer.ggml.model' is '", type, "', which keel does not read (supported: gpt2, llama)");
  }
  tj["model"] = std::move(model);

  // Added tokens: CONTROL as special (in a byte-level vocabulary only those
  // spelled in the byte alphabet, as transformers), USER_DEFINED as plain.
  json added = json::array();
  for (size_t i = 0; i < types.size(); ++i) {
    const bool control = types[i] == kControl && (!byte_level || byte_level_spelled(tokens[i]));
    if (!control && types[i] != kUserDefined) continue;
    added.push_back({{"id", int64_t(i)}, {"content", tokens[i]}, {"special", control}, {"normalized", false},
                     {"lstrip", false}, {"rstrip", false}, {"single_word", false}});
  }
  tj["added_tokens"] = std::move(added);

  for (auto [key, name] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token"},
                           std::pair{"tokenizer.ggml.eos_token_id", "eos_token"},
                           std::pair{"tokenizer.ggml.unknown_token_id", "unk_token"},
                           std::pair{"tokenizer.ggml.padding_token_id", "pad_token"}})
    if (auto t = token_at(key)) cfg[name] = *t;
  // llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise.
  const bool add_bos = g.get_bool("tokenizer.ggml.add_bos_token").value_or(type == "llama");
  cfg["add_bos_token"] = add_bos;
  cfg["add_eos_token"] = g.get_bool("tokenizer.ggml.add_eos_token").value_or(false);
  if (auto t = g.get_string("tokenizer.chat_template")) cfg["chat_template"] = *t;
  return load_impl_json(tj, cfg, path);
}

}  // namespace keel::tokenizer
