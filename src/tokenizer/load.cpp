// Reads a tokenizer folder into Tokenizer::Impl. Two layouts:
//  - tokenizer.json (Hugging Face tokenizers): model type BPE, with its
//    normalizer, pre_tokenizer, post_processor, decoder and added_tokens.
//  - vocab.json + merges.txt (no tokenizer.json): treated as a Qwen2-style
//    byte-level BPE (NFC, the Qwen2 split regex), as transformers does.
// tokenizer_config.json, when present, adds added_tokens_decoder, the BOS/EOS
// tokens, add_bos_token/add_eos_token and the chat template (or
// chat_template.jinja beside it, where transformers 5.x writes it). GGUF files
// come in through load_impl_json (gguf_tokenizer.cpp). Every error names the
// file and field at fault.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_depth.h"
#include "core/mapped_file.h"
#include "jinja/template.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace keel::tokenizer {
namespace {

using json = nlohmann::json;

/// Ids may leave at most this many numbers unused: the id -> piece tables are
/// sized by the largest id, so one id of 2^31 - 1 would otherwise allocate
/// tens of GiB for a file of a few bytes.
constexpr size_t kMaxUnusedIds = size_t(1) << 16;

json parse_json_file(const std::string& path) {
  std::string text = read_text_file(path);
  check_json_depth(text, path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
}

// A piece or key from the file, for an error message: at most 64 bytes of it.
std::string clip(std::string_view s) {
  constexpr size_t kMax = 64;
  return s.size() <= kMax ? std::string(s) : cat(s.substr(0, kMax), "... (", s.size(), " bytes)");
}

// A token id as written in a file: an integer in [0, 2^31 - 1]. Fractions,
// exponents and larger numbers are refused, never truncated (a BOS id of 2^40
// must not become 0). `where()` names the field, built only on failure.
template <class Where>
int32_t token_id(const json& v, const Where& where) {
  if (v.is_number_unsigned() && v.get<uint64_t>() <= uint64_t(INT32_MAX)) return int32_t(v.get<uint64_t>());
  if (v.is_number_integer() && !v.is_number_unsigned()) {  // a signed integer (e.g. built in memory)
    const int64_t id = v.get<int64_t>();
    if (id < 0) fail(where(), ": negative token id ", id);
    if (id <= INT32_MAX) return int32_t(id);
  }
  if (v.is_number()) fail(where(), ": token id ", v.dump(), " is not an integer in [0, 2147483647]");
  fail(where(), ": token id must be an integer, got ", v.type_name());
}

// A token named in tokenizer_config.json: a string, {"content": ...} or null.
std::optional<std::string> config_token(const json& cfg, const char* key) {
  if (!cfg.is_object() || !cfg.contains(key)) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

AddedToken added_from_json(const json& t, int32_t id) {
  AddedToken a;
  a.id = id;
  a.content = t.at("content").get<std::string>();
  a.special = t.value("special", false);
  a.lstrip = t.value("lstrip", false);
  a.rstrip = t.value("rstrip", false);
  a.single_word = t.value("single_word", false);
  // Hugging Face's default: special tokens match raw text, others normalized text.
  a.normalized = t.value("normalized", !a.special);
  return a;
}

// True when a component (or one nested in a Sequence) has the given type.
bool has_type(const json& j, const std::string& type) {
  if (j.is_array()) return std::any_of(j.begin(), j.end(), [&](const json& e) { return has_type(e, type); });
  if (!j.is_object()) return false;
  if (j.contains("type") && j["type"] == type) return true;
  for (const char* list : {"decoders", "pretokenizers", "normalizers", "processors"})
    if (j.contains(list) && has_type(j[list], type)) return true;
  return false;
}

// Everything load() gathers before building the Impl.
struct Parts {
  bool byte_level = false;
  StringIdMap vocab;  // file pieces -> id
  std::vector<std::pair<std::string, std::string>> merges;
  BpeOptions opts;
  std::map<int32_t, AddedToken> added;
  json decoder;          // null: default for the kind
  json post_processor;   // null: none
  std::string origin;    // file the model came from
};

// Per-token decoding steps, in decoder order (see parse_decoder).
struct TokenDecodeStep {
  enum class Op { Replace, ByteFallback, ByteLevel, Strip };
  TokenDecodeStep(Op o, std::string f = {}, std::string t = {}, int c = 0)
      : op(o), from(std::move(f)), to(std::move(t)), count(c) {}
  Op op;
  std::string from, to;
  int count;
};

void parse_decoder(const json& j, const std::string& where, bool& fused, std::vector<TokenDecodeStep>& steps,
                   Tokenizer::Impl& impl) {
  if (j.is_null()) return;
  KEEL_CHECK(j.is_object() && j.contains("type"), where, ": expected an object with a \"type\"");
  std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    const json& list = j.at("decoders");
    for (size_t i = 0; i < list.size(); ++i) parse_decoder(list[i], cat(where, ".decoders[", i, "]"), fused, steps, impl);
  } else if (type == "ByteLevel") {
    steps.push_back({TokenDecodeStep::Op::ByteLevel});
  } else if (type == "ByteFallback") {
    steps.push_back({TokenDecodeStep::Op::ByteFallback});
  } else if (type == "Fuse") {
    fused = true;
  } else if (type == "Replace") {
    const json& p = j.at("pattern");
    KEEL_CHECK(p.contains("String"), where, ".pattern: only String patterns are supported in decoders");
    steps.push_back({TokenDecodeStep::Op::Replace, p["String"].get<std::string>(), j.at("content").get<std::string>()});
  } else if (type == "Strip") {
    KEEL_CHECK(j.value("stop", 0) == 0, where, ".stop: stripping trailing characters is not supported");
    std::string content = j.value("content", std::string(" "));
    int start = j.value("start", 0);
    if (fused) {
      impl.strip_char = content;
      impl.strip_count = start;
    } else {
      steps.push_back({TokenDecodeStep::Op::Strip, content, "", start});
    }
  } else if (type == "Metaspace") {
    std::string repl = j.value("replacement", std::string("\xe2\x96\x81"));
    steps.push_back({TokenDecodeStep::Op::Replace, repl, " "});
    std::string scheme = j.value("prepend_scheme", std::string(j.value("add_prefix_space", true) ? "always" : "never"));
    if (scheme != "never") {
      impl.strip_char = " ";
      impl.strip_count = 1;
    }
  } else {
    fail(where, ": decoder type \"", type, "\" is not supported");
  }
}

std::string decode_piece(const std::string& piece, const std::vector<TokenDecodeStep>& steps) {
  std::string s = piece;
  bool raw = false;  // already turned into bytes by ByteFallback
  for (const auto& st : steps) {
    if (raw) break;
    switch (st.op) {
      case TokenDecodeStep::Op::Replace: {
        std::string out;
        size_t i = 0;
        for (size_t k; !st.from.empty() && (k = s.find(st.from, i)) != std::string::npos; i = k + st.from.size())
          out.append(s, i, k - i).append(st.to);
        s = out + s.substr(i);
        break;
      }
      case TokenDecodeStep::Op::ByteFallback:
        if (s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>' && std::isxdigit(uint8_t(s[3])) &&
            std::isxdigit(uint8_t(s[4]))) {
          s = std::string(1, char(std::stoi(s.substr(3, 2), nullptr, 16)));
          raw = true;
        }
        break;
      case TokenDecodeStep::Op::ByteLevel:
        if (auto b = byte_level_to_bytes(s)) s = *b;
        break;
      case TokenDecodeStep::Op::Strip:
        for (int n = 0; n < st.count && !st.from.empty() && s.compare(0, st.from.size(), st.from) == 0; ++n)
          s.erase(0, st.from.size());
        break;
    }
  }
  return s;
}

// TemplateProcessing's "single" template -> ids before and after the text.
void parse_post_processor(const json& j, const std::string& where, Tokenizer::Impl& impl, bool& has_template) {
  if (j.is_null()) return;
  std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    const json& list = j.at("processors");
    for (size_t i = 0; i < list.size(); ++i) parse_post_processor(list[i], cat(where, ".processors[", i, "]"), impl, has_template);
  } else if (type == "ByteLevel") {
    // Only adjusts offsets; ids are unchanged.
  } else if (type == "TemplateProcessing") {
    has_template = true;
    const json& specials = j.at("special_tokens");
    bool after = false;
    for (const json& item : j.at("single")) {
      if (item.contains("Sequence")) {
        after = true;
      } else if (item.contains("SpecialToken")) {
        std::string name = item["SpecialToken"].at("id").get<std::string>();
        KEEL_CHECK(specials.contains(name), where, ".special_tokens: no entry for \"", name, "\"");
        const json& ids = specials[name].at("ids");
        for (size_t k = 0; k < ids.size(); ++k) {
          auto field = [&] { return cat(where, ".special_tokens[\"", clip(name), "\"].ids[", k, "]"); };
          (after ? impl.suffix_ids : impl.prefix_ids).push_back(token_id(ids[k], field));
        }
      }
    }
  } else {
    fail(where, ": post_processor type \"", type, "\" is not supported");
  }
}

Parts parse_tokenizer_json(const json& j, const std::string& path, Tokenizer::Impl& impl) {
  Parts p;
  p.origin = path;
  try {
    KEEL_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), path, ": missing \"model\" object");
    const json& model = j["model"];
    std::string type = model.value("type", std::string(model.contains("merges") ? "BPE" : ""));
    KEEL_CHECK(type == "BPE", path, ": model.type \"", type, "\" is not supported (keel reads BPE tokenizers)");
    KEEL_CHECK(model.value("continuing_subword_prefix", json()).is_null() || model["continuing_subword_prefix"] == "",
               path, ": model.continuing_subword_prefix is not supported");
    KEEL_CHECK(model.value("end_of_word_suffix", json()).is_null() || model["end_of_word_suffix"] == "", path,
               ": model.end_of_word_suffix is not supported");

    impl.normalizer = Normalizer::from_json(j.value("normalizer", json()), path + ": normalizer");
    impl.pre = PreTokenizer::from_json(j.value("pre_tokenizer", json()), path + ": pre_tokenizer");
    p.decoder = j.value("decoder", json());
    p.post_processor = j.value("post_processor", json());
    p.byte_level = impl.pre.has_byte_level() || has_type(p.decoder, "ByteLevel");

    p.opts.byte_fallback = model.value("byte_fallback", false);
    p.opts.fuse_unk = model.value("fuse_unk", false);
    p.opts.ignore_merges = model.value("ignore_merges", false);

    const json& vocab = model.at("vocab");
    KEEL_CHECK(vocab.is_object(), path, ": model.vocab must be an object");
    p.vocab.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      auto field = [&] { return cat(path, ": model.vocab[\"", clip(it.key()), "\"]"); };
      p.vocab.emplace(it.key(), token_id(it.value(), field));
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      auto it = p.vocab.find(model["unk_token"].get<std::string>());
      KEEL_CHECK(it != p.vocab.end(), path, ": model.unk_token is not in the vocab");
      p.opts.unk_id = it->second;
    }
    const json& merges = model.at("merges");
    p.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& m = merges[i];
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        size_t sp = s.find(' ');
        KEEL_CHECK(sp != std::string::npos, path, ": model.merges[", i, "] is not \"a b\"");
        p.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else {
        KEEL_CHECK(m.is_array() && m.size() == 2, path, ": model.merges[", i, "] is not a pair");
        p.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      }
    }
    if (j.contains("added_tokens") && j["added_tokens"].is_array())
      for (size_t i = 0; i < j["added_tokens"].size(); ++i) {
        const json& t = j["added_tokens"][i];
        int32_t id = token_id(t.at("id"), [&] { return cat(path, ": added_tokens[", i, "].id"); });
        p.added[id] = added_from_json(t, id);
      }
  } catch (const json::exception& e) {
    fail(path, ": ", e.what());
  }
  return p;
}

Parts read_tokenizer_json(const std::string& path, Tokenizer::Impl& impl) {
  return parse_tokenizer_json(parse_json_file(path), path, impl);
}

Parts read_vocab_and_merges(const std::string& vocab_path, const std::string& merges_path, Tokenizer::Impl& impl) {
  Parts p;
  p.origin = vocab_path;
  p.byte_level = true;
  json vocab = parse_json_file(vocab_path);
  KEEL_CHECK(vocab.is_object(), vocab_path, ": expected an object of piece -> id");
  try {
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      auto field = [&] { return cat(vocab_path, ": \"", clip(it.key()), "\""); };
      p.vocab.emplace(it.key(), token_id(it.value(), field));
    }
  } catch (const json::exception& e) {
    fail(vocab_path, ": ", e.what());
  }
  std::string text = read_text_file(merges_path);
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.substr(0, 8) == "#version")) continue;
    size_t sp = line.find(' ');
    KEEL_CHECK(sp != std::string_view::npos, merges_path, ": line ", line_no, " is not \"a b\"");
    p.merges.emplace_back(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
  }
  impl.normalizer = Normalizer::nfc();
  impl.pre = PreTokenizer::split_then_byte_level(kQwen2Pattern);
  p.decoder = json{{"type", "ByteLevel"}};
  return p;
}

std::unique_ptr<Tokenizer::Impl> build_impl(std::unique_ptr<Tokenizer::Impl> impl, Parts p, const json& cfg,
                                            const std::string& cj, const std::string& template_origin = {});

/// The default system prompt of a ChatML template: the literal
/// '<|im_start|>system\n...<|im_end|>' it writes when the conversation does
/// not start with a system message (SmolLM2, Qwen2.5). Empty when the template
/// writes no such literal. Jinja escapes (\n, \', \") in the literal are undone.
std::string chatml_default_system(const std::string& tmpl) {
  if (tmpl.find("'system'") == std::string::npos && tmpl.find("\"system\"") == std::string::npos) return {};
  for (const char* head : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    for (size_t at = tmpl.find(head); at != std::string::npos; at = tmpl.find(head, at + 1)) {
      size_t begin = at + std::strlen(head);
      size_t end = tmpl.find("<|im_end|>", begin);
      if (end == std::string::npos) break;
      std::string_view raw(tmpl.data() + begin, end - begin);
      std::string out;
      bool literal = true;
      for (size_t i = 0; i < raw.size() && literal; ++i) {
        if (raw[i] == '\\' && i + 1 < raw.size()) {
          char n = raw[++i];
          out.push_back(n == 'n' ? '\n' : n == 't' ? '\t' : n);
        } else {
          literal = raw[i] != '{' && raw[i] != '}' && raw[i] != '\'' && raw[i] != '"';
          out.push_back(raw[i]);
        }
      }
      if (literal && !out.empty()) return out;
    }
  }
  return {};
}

}  // namespace

std::unique_ptr<Tokenizer::Impl> load_impl(const std::string& dir) {
  auto impl = std::make_unique<Tokenizer::Impl>();
  std::string tj = path_join(dir, "tokenizer.json"), vj = path_join(dir, "vocab.json"), mt = path_join(dir, "merges.txt");
  std::string cj = path_join(dir, "tokenizer_config.json");
  Parts p;
  if (file_exists(tj)) {
    p = read_tokenizer_json(tj, *impl);
  } else if (file_exists(vj) && file_exists(mt)) {
    p = read_vocab_and_merges(vj, mt, *impl);
  } else {
    fail(dir, ": no tokenizer.json (or vocab.json + merges.txt) in this folder");
  }
  json cfg = file_exists(cj) ? parse_json_file(cj) : json::object();
  KEEL_CHECK(cfg.is_object(), cj, ": expected a JSON object");
  // transformers 5.x saves the chat template only to chat_template.jinja.
  std::string jinja = path_join(dir, "chat_template.jinja");
  std::string template_origin;
  if (!cfg.contains("chat_template") && file_exists(jinja)) {
    cfg["chat_template"] = read_text_file(jinja);
    template_origin = jinja;
  }
  return build_impl(std::move(impl), std::move(p), cfg, cj, template_origin);
}

std::unique_ptr<Tokenizer::Impl> load_impl_json(const json& tokenizer, const json& config, const std::string& origin) {
  auto impl = std::make_unique<Tokenizer::Impl>();
  Parts p = parse_tokenizer_json(tokenizer, origin, *impl);
  return build_impl(std::move(impl), std::move(p), config, origin);
}

namespace {

std::unique_ptr<Tokenizer::Impl> build_impl(std::unique_ptr<Tokenizer::Impl> impl, Parts p, const json& cfg,
                                            const std::string& cj, const std::string& template_origin) {
  try {
    if (cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object())
      for (auto it = cfg["added_tokens_decoder"].begin(); it != cfg["added_tokens_decoder"].end(); ++it) {
        const std::string& key = it.key();
        uint32_t id = 0;
        auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
        if (ec != std::errc() || end != key.data() + key.size() || id > uint32_t(INT32_MAX))
          fail(cj, ": added_tokens_decoder: key \"", clip(key), "\" is not a token id (an integer in [0, 2147483647])");
        if (!p.added.count(int32_t(id))) p.added[int32_t(id)] = added_from_json(it.value(), int32_t(id));
      }
  } catch (const json::exception& e) {
    fail(cj, ": added_tokens_decoder: ", e.what());
  }

  // Vocabulary tables indexed by id.
  impl->kind = p.byte_level ? Kind::ByteLevelBpe : Kind::SentencePieceBpe;
  int32_t max_id = -1;
  for (const auto& [piece, id] : p.vocab) max_id = std::max(max_id, id);
  const size_t entries = p.vocab.size() + p.added.size();
  KEEL_CHECK(size_t(std::max(max_id, 0)) < entries + kMaxUnusedIds, p.origin, ": model.vocab: token id ", max_id,
             " leaves more than ", kMaxUnusedIds, " ids unused (the files hold ", entries, " tokens)");
  if (!p.added.empty()) {
    max_id = std::max(max_id, p.added.rbegin()->first);
    KEEL_CHECK(size_t(max_id) < entries + kMaxUnusedIds, p.origin, ": added token id ", max_id, " leaves more than ",
               kMaxUnusedIds, " ids unused (the files hold ", entries, " tokens)");
  }
  KEEL_CHECK(max_id >= 0, p.origin, ": the vocab is empty");
  impl->pieces.assign(size_t(max_id) + 1, std::string());
  impl->flags.assign(size_t(max_id) + 1, 0);
  for (const auto& [piece, id] : p.vocab) {
    KEEL_CHECK(id >= 0, p.origin, ": negative id for vocab piece \"", piece, "\"");
    impl->pieces[id] = piece;
    impl->flags[id] = Tokenizer::Impl::kExists;
  }
  std::vector<AddedToken> raw, normalized;
  for (const auto& [id, t] : p.added) {
    KEEL_CHECK(id >= 0, p.origin, ": negative id for added token \"", t.content, "\"");
    impl->pieces[id] = t.content;
    impl->flags[id] = Tokenizer::Impl::kExists | (t.special ? Tokenizer::Impl::kSpecial : 0);
    impl->added_ids[t.content] = id;
    if (t.normalized && !impl->normalizer.empty()) {
      // Like Hugging Face, a normalized token's content is normalized too, so
      // it matches the text it would appear in after normalization.
      AddedToken n = t;
      n.content = impl->normalizer.apply(t.content);
      normalized.push_back(std::move(n));
    } else {
      raw.push_back(t);
    }
  }
  impl->raw_added = AddedTokenMatcher(raw);
  impl->normalized_added = AddedTokenMatcher(normalized);

  // The BPE model works on raw bytes for byte-level vocabularies.
  StringIdMap model_vocab;
  if (p.byte_level) {
    model_vocab.reserve(p.vocab.size());
    for (auto& [piece, id] : p.vocab) {
      auto b = byte_level_to_bytes(piece);
      model_vocab.emplace(b ? std::move(*b) : piece, id);
    }
    for (auto& [a, b] : p.merges) {
      if (auto x = byte_level_to_bytes(a)) a = std::move(*x);
      if (auto x = byte_level_to_bytes(b)) b = std::move(*x);
    }
  } else {
    model_vocab = std::move(p.vocab);
  }
  p.opts.byte_level = p.byte_level;
  impl->bpe = std::make_unique<BpeModel>(std::move(model_vocab), p.merges, p.opts, p.origin);

  // Decoder: per-token bytes, plus the leading strip.
  bool fused = false;
  std::vector<TokenDecodeStep> steps;
  try {
    if (p.decoder.is_null() && p.byte_level) steps.push_back({TokenDecodeStep::Op::ByteLevel});
    parse_decoder(p.decoder, p.origin + ": decoder", fused, steps, *impl);
  } catch (const json::exception& e) {
    fail(p.origin, ": decoder: ", e.what());
  }
  impl->bytes.resize(impl->pieces.size());
  for (size_t id = 0; id < impl->pieces.size(); ++id)
    if (impl->flags[id]) impl->bytes[id] = decode_piece(impl->pieces[id], steps);

  auto find = [&](const std::string& s) -> std::optional<int32_t> {
    auto a = impl->added_ids.find(s);
    if (a != impl->added_ids.end()) return a->second;
    const StringIdMap& v = impl->bpe->vocab();
    auto b = p.byte_level ? byte_level_to_bytes(s) : std::optional<std::string>(s);
    auto it = b ? v.find(*b) : v.end();
    if (it != v.end()) return it->second;
    return std::nullopt;
  };

  // BOS / EOS and what encode(add_special) adds.
  bool has_template = false;
  try {
    parse_post_processor(p.post_processor, p.origin + ": post_processor", *impl, has_template);
  } catch (const json::exception& e) {
    fail(p.origin, ": post_processor: ", e.what());
  }
  // The template's ids become BOS and encode()'s output: they must name tokens.
  for (const auto* ids : {&impl->prefix_ids, &impl->suffix_ids})
    for (int32_t id : *ids)
      KEEL_CHECK(impl->valid_id(id), p.origin, ": post_processor: special token id ", id,
                 " is not in the vocabulary (size ", impl->pieces.size(), ")");
  if (auto b = config_token(cfg, "bos_token")) impl->bos = find(*b);
  if (!impl->bos && !impl->prefix_ids.empty()) impl->bos = impl->prefix_ids.front();
  std::optional<int32_t> cfg_eos;
  if (auto e = config_token(cfg, "eos_token")) cfg_eos = find(*e);
  if (!has_template) {
    // No template: tokenizer_config.json's add_bos_token / add_eos_token decide.
    // When add_bos_token is absent but a bos_token is named (Llama-3 converted
    // from tiktoken has no template), BOS is added: Meta's reference encoder
    // starts every prompt with <|begin_of_text|>.
    bool add_bos = cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean() ? cfg["add_bos_token"].get<bool>()
                                                                                      : impl->bos.has_value();
    if (add_bos && impl->bos) impl->prefix_ids.push_back(*impl->bos);
    if (cfg.value("add_eos_token", json(false)) == json(true) && cfg_eos) impl->suffix_ids.push_back(*cfg_eos);
  }
  // EOS ids: the configured eos_token, plus the end-of-turn / end-of-text
  // tokens that chat and base models of these families stop on even when the
  // config names another one (Llama-3 Instruct ends turns with <|eot_id|>,
  // Qwen with <|im_end|>; Qwen's generation_config lists <|endoftext|> too).
  // Without any of these, SentencePiece's </s> is used.
  if (cfg_eos) impl->eos.push_back(*cfg_eos);
  for (const char* name : {"<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>"}) {
    auto a = impl->added_ids.find(name);
    if (a != impl->added_ids.end() && std::find(impl->eos.begin(), impl->eos.end(), a->second) == impl->eos.end())
      impl->eos.push_back(a->second);
  }
  if (impl->eos.empty())
    if (auto e = find("</s>")) impl->eos.push_back(*e);

  // Chat format from the template text.
  std::string tmpl;
  if (cfg.contains("chat_template")) {
    const json& t = cfg["chat_template"];
    if (t.is_string()) {
      tmpl = t.get<std::string>();
    } else if (t.is_array()) {
      for (const json& e : t)
        if (e.is_object() && e.value("name", std::string()) == "default") tmpl = e.value("template", std::string());
      if (tmpl.empty() && !t.empty() && t[0].is_object()) tmpl = t[0].value("template", std::string());
    }
  }
  if (tmpl.find("<|im_start|>") != std::string::npos) impl->chat = ChatFormat::ChatML;
  else if (tmpl.find("<|start_header_id|>") != std::string::npos) impl->chat = ChatFormat::Llama3;
  if (impl->chat == ChatFormat::ChatML) impl->default_system = chatml_default_system(tmpl);
  // The template itself renders chats; one keel's engine cannot parse leaves
  // the built-in format above in charge, and the reason in chat_template_error.
  impl->bos_text = config_token(cfg, "bos_token");
  impl->eos_text = config_token(cfg, "eos_token");
  if (!tmpl.empty()) {
    try {
      impl->chat_template = std::make_shared<const jinja::Template>(
          tmpl, template_origin.empty() ? cj + ": chat_template" : template_origin);
    } catch (const Error& e) {
      impl->chat_template_error = e.what();
    }
  }
  return impl;
}

}  // namespace

}  // namespace keel::tokenizer
